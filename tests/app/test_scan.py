"""Reading invites from QR codes in files, on the clipboard, on screen (and whether a camera is offered)."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from hiveling.app.dialogs import scan
from hiveling.core.invites import qr
from hiveling.core.invites.invite import make_invite
from hiveling.core.invites.keys import OrganizerKey

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


@pytest.fixture(scope="module")
def token() -> str:
    invite = make_invite(
        OrganizerKey.generate(),
        run_name="scan-test",
        recipe="glyphs",
        recipe_version="2.0",
        hparams={},
        target_batch_size=1024,
        peers=[PEER],
        expires=timedelta(days=1),
    )
    return invite.token


def test_png_round_trip_of_a_qimage(qtbot: QtBot, token: str) -> None:
    image = QImage.fromData(qr.png_bytes(token))
    assert not image.isNull()
    assert QImage.fromData(scan.png_bytes(image)).size() == image.size()
    assert scan.scan_image(image) == scan.Scan(invites=(token,), codes=1)


def test_file(tmp_path: Path, token: str) -> None:
    path = tmp_path / "invite.png"
    path.write_bytes(qr.png_bytes(token))
    assert scan.scan_file(path).invites == (token,)


def test_file_with_a_link(tmp_path: Path, token: str) -> None:
    path = tmp_path / "link.png"
    path.write_bytes(qr.png_bytes("hiveling://join/" + token))
    assert scan.scan_file(path).invites == ("hiveling://join/" + token,)


def test_a_code_that_is_not_an_invite(tmp_path: Path) -> None:
    path = tmp_path / "other.png"
    path.write_bytes(qr.png_bytes("https://example.org/menu"))
    found = scan.scan_file(path)
    assert found == scan.Scan(invites=(), codes=1)
    assert "not a Hiveling invite" in (found.problem("in the image") or "")


def test_an_image_without_a_code(qtbot: QtBot) -> None:
    blank = QImage(200, 200, QImage.Format.Format_RGB32)
    blank.fill(0xFFFFFF)
    found = scan.scan_image(blank)
    assert found == scan.Scan(invites=(), codes=0)
    assert (found.problem("in the image") or "").startswith("No QR code found in the image")
    assert scan.scan_image(QImage()) == scan.Scan(invites=(), codes=0)


def test_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just text")
    with pytest.raises(ValueError, match="not an image"):
        scan.scan_file(path)
    with pytest.raises(ValueError, match="does not exist"):
        scan.scan_file(tmp_path / "missing.png")


def test_clipboard_image(qtbot: QtBot, token: str) -> None:
    clipboard = QGuiApplication.clipboard()
    clipboard.setImage(QImage.fromData(qr.png_bytes(token)))
    try:
        assert scan.scan_clipboard().invites == (token,)
    finally:
        clipboard.clear()


def test_widget_showing_the_code(qtbot: QtBot, token: str) -> None:
    # What a screen grab sees: a window that shows the organizer's code (offscreen screens are blank).
    label = QLabel()
    qtbot.addWidget(label)
    label.setPixmap(QPixmap.fromImage(QImage.fromData(qr.png_bytes(token, scale=4))))
    label.setStyleSheet("background: white; padding: 20px")
    label.show()
    assert scan.scan_image(label.grab()).invites == (token,)


def test_screens_can_be_grabbed(qtbot: QtBot) -> None:
    found = scan.scan_screens()
    assert isinstance(found, scan.Scan)


def test_camera_offered_only_with_qt_multimedia() -> None:
    assert scan.camera_available() == (importlib.util.find_spec("PySide6.QtMultimedia") is not None)
    assert "PySide6-Addons" in scan.CAMERA_MISSING


def test_camera_frames_are_decoded_a_few_times_a_second(qtbot: QtBot, token: str) -> None:
    now = [100.0]
    scanner = scan.FrameScanner(interval=0.4, clock=lambda: now[0])
    frame = QImage.fromData(qr.png_bytes(token))
    assert scanner.consider(frame) == scan.Scan(invites=(token,), codes=1)
    now[0] += 0.1
    assert scanner.consider(frame) is None  # too soon: shown, not decoded
    now[0] += 0.4
    assert scanner.consider(frame) == scan.Scan(invites=(token,), codes=1)
    now[0] += 1
    assert scanner.consider(QImage()) is None  # an empty frame while the camera starts
