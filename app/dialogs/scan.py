"""Reading invites from QR codes: in an image file, on the clipboard, on the screen, or from a camera.

Images are handed to ``hiveling.core.invites.qr`` as PNG bytes. The camera needs Qt Multimedia, which
PySide6-Essentials leaves out: :func:`camera_available` says whether it can be offered.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from hiveling.core import looks_like_invite, qr

logger = logging.getLogger(__name__)

CAMERA_MISSING = (
    "Scanning with a camera needs Qt Multimedia: install it with "
    "pip install PySide6-Addons==6.11.3 (or use a photo of the code)"
)


@dataclass(frozen=True)
class Scan:
    """What was found: the invites among the codes, and how many codes there were in all."""

    invites: tuple[str, ...]
    codes: int

    def problem(self, where: str) -> str | None:
        """One line for the volunteer when no invite was found ``where`` ("in the image")."""
        if self.invites:
            return None
        if self.codes:
            return f"The QR code {where} is not a Hiveling invite; ask the organizer for the invite's code."
        return f"No QR code found {where}; make sure the whole code is visible and sharp."


def png_bytes(image: QImage | QPixmap) -> bytes:
    """``image`` encoded as PNG."""
    if isinstance(image, QPixmap):
        image = image.toImage()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QImageWriter(buffer, QByteArray(b"png"))
    if not writer.write(image):
        raise ValueError(f"cannot encode the image as PNG ({writer.errorString()})")
    buffer.close()
    return bytes(data.data())


def _scan(source: Path | bytes) -> Scan:
    codes = qr.read_qr(source)
    return Scan(invites=tuple(code for code in codes if looks_like_invite(code)), codes=len(codes))


def scan_bytes(data: bytes) -> Scan:
    """The invites in an encoded image (PNG, JPEG, ...); QRError when it is no image."""
    return _scan(data)


def scan_image(image: QImage | QPixmap) -> Scan:
    if image.isNull():
        return Scan(invites=(), codes=0)
    return _scan(png_bytes(image))


def scan_file(path: Path) -> Scan:
    """The invites in an image file; QRError (a ValueError) says why one cannot be read."""
    return _scan(path)


def scan_clipboard() -> Scan:
    """The invites in the image on the clipboard (an empty Scan when it holds no image)."""
    return scan_image(QGuiApplication.clipboard().image())


def scan_screens() -> Scan:
    """The invites on every screen (a video call or a web page showing the organizer's code)."""
    invites: list[str] = []
    codes = 0
    for screen in QGuiApplication.screens():
        found = scan_image(screen.grabWindow(0))
        invites.extend(invite for invite in found.invites if invite not in invites)
        codes += found.codes
    return Scan(invites=tuple(invites), codes=codes)


def camera_available() -> bool:
    return importlib.util.find_spec("PySide6.QtMultimedia") is not None


class FrameScanner:
    """Decides which camera frames to decode (a few a second: decoding all would burn a core) and
    what each decoded frame found."""

    def __init__(self, interval: float = 0.4, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def consider(self, image: QImage) -> Scan | None:
        """The scan of ``image``, or None when it came too soon after the last decoded frame."""
        now = self._clock()
        if image.isNull() or (self._last is not None and now - self._last < self.interval):
            return None
        self._last = now
        return scan_image(image)


class CameraScanDialog(QDialog):
    """Shows the camera's picture and closes (accepted) as soon as a frame holds an invite."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from PySide6 import QtMultimedia

        self.setWindowTitle("Scan an invite with the camera")
        self.invite: str | None = None
        self.scanner = FrameScanner()
        layout = QVBoxLayout(self)
        self.preview = QLabel("Starting the camera…")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(480, 360)
        layout.addWidget(self.preview)
        self.hint = QLabel("Hold the invite's QR code in front of the camera.")
        layout.addWidget(self.hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        self._camera = None
        if not QtMultimedia.QMediaDevices.videoInputs():
            self.preview.setText("No camera was found. Use a photo of the code instead.")
            return
        self._camera = QtMultimedia.QCamera(self)
        self._session = QtMultimedia.QMediaCaptureSession(self)
        self._sink = QtMultimedia.QVideoSink(self)
        self._session.setCamera(self._camera)
        self._session.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(lambda frame: self.show_frame(frame.toImage()))
        self._camera.errorOccurred.connect(lambda _error, text: self.preview.setText(f"Camera error: {text}"))
        self._camera.start()

    def show_frame(self, image: QImage) -> None:
        if image.isNull():
            return
        self.preview.setPixmap(
            QPixmap.fromImage(image).scaled(
                self.preview.size(),
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation,
            )
        )
        found = self.scanner.consider(image)
        if found is None:
            return
        if found.invites:
            self.invite = found.invites[0]
            self.accept()
        elif found.codes:
            self.hint.setText("That QR code is not a Hiveling invite.")

    def done(self, result: int) -> None:
        if self._camera is not None:
            self._camera.stop()
        super().done(result)
