"""The join dialog: paste or scan an invite, see what the run is and whether this computer can help."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from hiveling.app.dialogs import scan
from hiveling.app.panels.devices import device_detection, format_memory
from hiveling.core import Invite, InviteError, Settings, parse_invite, save_settings

if TYPE_CHECKING:
    from hiveling.core import Device, Needs

logger = logging.getLogger(__name__)

DEBOUNCE_MS = 300  # validate when typing pauses, not on every key
SCREEN_DELAY_MS = 250  # lets the window manager hide this dialog before the screen is grabbed
GOOD = "color: #1b7f3b"
BAD = "color: #b3261e"
WARNING_STYLE = "QFrame { background: #fff4e5; border: 1px solid #e8a33d; border-radius: 4px; }"
_TOKEN_IN_TEXT = re.compile(r"(?:hiveling://join/)?HIVE\d+-[A-Z2-7]{16,}", re.IGNORECASE)
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.gif *.webp);;All files (*)"


def time_until(moment: datetime, now: datetime) -> str:
    """ "in 3 days", "in 5 hours", "in 12 minutes"."""
    seconds = (moment - now).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "in less than a minute"


def find_invite_text(text: str) -> str | None:
    """An invite inside a longer message (a chat line that says more than the invite), if any."""
    match = _TOKEN_IN_TEXT.search(text)
    return match.group(0) if match else None


class JoinDialog(QDialog):
    """After ``exec()`` returns Accepted, ``token`` and ``invite`` hold the invite joined; the settings
    then remember the organizer's key for that run name and the invite, saved to disk."""

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        devices: Sequence[Device] | None = None,
        path: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Join a training run")
        self.setMinimumWidth(560)
        self.settings = settings
        self.token = ""
        self.invite: Invite | None = None
        self._path = path
        self._devices: Sequence[Device] | None = devices
        self._clock = clock or (lambda: datetime.now(UTC))

        layout = self._layout = QVBoxLayout(self)
        intro = QLabel(
            "Paste the invite the organizer sent you. It starts with <b>HIVE1-</b> or "
            "<b>hiveling://join/</b>. You can also scan its QR code."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("HIVE1-…")
        self.text.setTabChangesFocus(True)
        self.text.setFixedHeight(self.text.fontMetrics().lineSpacing() * 4 + 12)
        layout.addWidget(self.text)

        scan_row = QHBoxLayout()
        scan_row.addWidget(QLabel("Scan a QR code:"))
        self.file_button = QPushButton("Image file…")
        self.file_button.setToolTip("A screenshot or a photo of the invite's QR code")
        self.clipboard_button = QPushButton("Clipboard")
        self.clipboard_button.setToolTip("A copied picture of the QR code, or the copied invite text")
        self.screen_button = QPushButton("Screen")
        self.screen_button.setToolTip("Finds the QR code anywhere on your screen, e.g. in a video call")
        self.camera_button = QPushButton("Camera…")
        if scan.camera_available():
            self.camera_button.setToolTip("Hold the QR code in front of your camera")
        else:
            self.camera_button.setEnabled(False)
            self.camera_button.setToolTip(scan.CAMERA_MISSING)
        for button in (self.file_button, self.clipboard_button, self.screen_button, self.camera_button):
            button.setAutoDefault(False)
            scan_row.addWidget(button)
        scan_row.addStretch()
        layout.addLayout(scan_row)

        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.details = QGroupBox("About this run")
        form = QFormLayout(self.details)
        self.run_name = QLabel()
        self.organizer = QLabel()
        self.organizer.setToolTip(
            "The organizer's key signs the invite. Compare it with what the organizer shows: "
            "if it differs, the invite is not theirs."
        )
        self.recipe = QLabel()
        self.needs = QLabel()
        self.machine = QLabel()
        self.expires = QLabel()
        self.ends = QLabel()
        for label in (self.recipe, self.needs, self.machine):
            label.setWordWrap(True)
        form.addRow("Run:", self.run_name)
        form.addRow("Organizer key:", self.organizer)
        form.addRow("Trains:", self.recipe)
        form.addRow("Needs:", self.needs)
        form.addRow("This computer:", self.machine)
        form.addRow("Invite expires:", self.expires)
        form.addRow("Run ends:", self.ends)
        self.details.hide()
        layout.addWidget(self.details)

        self.warning = QFrame()
        self.warning.setStyleSheet(WARNING_STYLE)
        warning_layout = QVBoxLayout(self.warning)
        self.warning_text = QLabel()
        self.warning_text.setWordWrap(True)
        self.warning_text.setStyleSheet("border: none")
        self.confirm_new_key = QCheckBox("The organizer told me the key changed: join anyway")
        self.confirm_new_key.setStyleSheet("border: none")
        warning_layout.addWidget(self.warning_text)
        warning_layout.addWidget(self.confirm_new_key)
        self.warning.hide()
        layout.addWidget(self.warning)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.join_button = self.buttons.addButton("Join this run", QDialogButtonBox.ButtonRole.AcceptRole)
        self.join_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.validate)
        self.text.textChanged.connect(self._debounce.start)
        self.confirm_new_key.toggled.connect(self._update_join_button)
        self.file_button.clicked.connect(self._choose_file)
        self.clipboard_button.clicked.connect(self.scan_clipboard)
        self.screen_button.clicked.connect(self._scan_screen_soon)
        self.camera_button.clicked.connect(self._scan_camera)
        self._show_hint()

        if devices is None:
            detection = device_detection()
            if detection.devices is not None:
                self._devices = detection.devices
            else:
                detection.detected.connect(self._on_devices)
                detection.request()

    # --- validation -----------------------------------------------------------------------------

    def validate(self) -> Invite | None:
        """Checks the text now (typing triggers this after a short pause) and shows the result."""
        self._debounce.stop()
        text = self.text.toPlainText().strip()
        self.invite = None
        if not text:
            self._show_hint()
            return None
        try:
            invite = parse_invite(text, now=self._clock())
        except InviteError as error:
            problem = str(error)
            embedded = find_invite_text(text) if error.reason == "not_invite" else None
            if embedded is None or embedded == text:
                self._show_problem(problem)
                return None
            try:  # an invite inside a longer message
                invite = parse_invite(embedded, now=self._clock())
            except InviteError as inner:
                self._show_problem(str(inner))
                return None
        self.invite = invite
        self._show_invite(invite)
        return invite

    def _show_hint(self) -> None:
        self.status.setStyleSheet("")
        self.status.setText("Waiting for an invite.")
        self.details.hide()
        self.warning.hide()
        self._update_join_button()

    def _show_problem(self, message: str) -> None:
        self.status.setStyleSheet(BAD)
        # Core's reasons mostly begin "this invite ...": say it once.
        if message.startswith("this invite"):
            self.status.setText("This invite" + message.removeprefix("this invite"))
        else:
            self.status.setText(f"This invite cannot be used: {message}")
        self.details.hide()
        self.warning.hide()
        self._update_join_button()

    def _show_invite(self, invite: Invite) -> None:
        self.status.setStyleSheet(GOOD)
        self.status.setText("✔ A valid invite, signed by its organizer.")
        self.text.verticalScrollBar().setValue(0)  # pasting left the view at its end: show "HIVE1-"
        self.run_name.setText(invite.run_name)
        self.organizer.setText(invite.fingerprint)
        self.expires.setText(self._expiry_words(invite.expires))
        self.ends.setText(
            f"after {invite.last_step:,} collaborative steps"
            if invite.last_step
            else "when the organizer stops it"
        )
        self._show_needs(invite)
        self.details.show()

        known = self.settings.known_organizers.get(invite.run_name)
        changed = known is not None and known != invite.fingerprint
        if changed:
            self.warning_text.setText(
                f"<b>⚠ The organizer's key for “{html.escape(invite.run_name)}” changed.</b><br>"
                f"You joined this run before with key <b>{known}</b>; this invite is signed by "
                f"<b>{invite.fingerprint}</b>. Someone else may be using the run's name. Join only if "
                "the organizer confirms the new key."
            )
            self.confirm_new_key.setChecked(False)
        self.warning.setVisible(changed)
        self._update_join_button()

    def _expiry_words(self, expires: datetime) -> str:
        local = expires.astimezone()
        return f"{time_until(expires, self._clock())} ({local:%a %d %b %Y, %H:%M})"

    def _show_needs(self, invite: Invite) -> None:
        from hiveling.core import RecipeError, find_recipe

        try:
            recipe = find_recipe(invite.recipe, invite.recipe_version)
        except RecipeError as error:  # parse_invite checked it; a plugin may vanish meanwhile
            self.recipe.setText(f"{invite.recipe} {invite.recipe_version}")
            self.needs.setText(str(error))
            self.machine.setText("")
            return
        self.recipe.setText(f"{recipe.title} ({recipe.name} {recipe.version})")
        needs = recipe.needs
        smallest = needs.memory_for(needs.min_batch_size)
        usual = needs.memory_for(needs.default_batch_size)
        words = f"{format_memory(smallest)} of memory at least, {format_memory(usual)} to train at full speed"
        if needs.parameters:
            words += f" ({needs.parameters:,} parameters)"
        self.needs.setText(words)
        self.machine.setStyleSheet("")
        self.machine.setText(self._machine_words(needs))

    def _machine_words(self, needs: Needs) -> str:
        from hiveling.core import DeviceError, choose_device, fit_batch_size

        if self._devices is None:
            return "Looking at this computer's devices…"
        try:
            device = choose_device(self._devices, self.settings.device)
            cap = int(self.settings.memory_cap_gb * 2**30) if self.settings.memory_cap_gb else None
            batch = fit_batch_size(needs, device, cap)
        except DeviceError as error:
            self.machine.setStyleSheet(BAD)
            return f"Cannot train this run yet: {error}"
        free = f", {format_memory(device.free_memory)} free" if device.free_memory is not None else ""
        return f"✔ Trains on {device.label}{free}, {batch} samples at a time."

    def _on_devices(self, devices: list[Device]) -> None:
        self._devices = devices
        if self.invite is not None:
            self._show_needs(self.invite)

    def _fit_height(self) -> None:
        """Grows or shrinks the window to its content: sections appear and wrapped lines change."""
        layout = self._layout
        layout.activate()
        wanted = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else -1
        if wanted < 0:
            wanted = layout.totalSizeHint().height()
        self.resize(self.width(), wanted)

    def _update_join_button(self) -> None:
        ready = self.invite is not None and (self.warning.isHidden() or self.confirm_new_key.isChecked())
        self.join_button.setEnabled(ready)
        self._fit_height()

    # --- scanning -------------------------------------------------------------------------------

    def use_scan(self, found: scan.Scan, where: str) -> bool:
        """Puts the first invite found into the text box; says what went wrong when there is none."""
        problem = found.problem(where)
        if problem is not None:
            self._show_problem_only(problem)
            return False
        self.text.setPlainText(found.invites[0])
        self.validate()
        if len(found.invites) > 1 and self.invite is not None:
            self.status.setText(
                f"{self.status.text()} ({len(found.invites)} invites were found {where}; this is the first.)"
            )
        return True

    def _show_problem_only(self, message: str) -> None:
        """A scan that found nothing leaves what was typed, and says why."""
        self.status.setStyleSheet(BAD)
        self.status.setText(message)

    def scan_file(self, path: Path) -> bool:
        try:
            found = scan.scan_file(path)
        except ValueError as error:  # QRError: says what to do
            self._show_problem_only(f"Could not read the image: {error}")
            return False
        return self.use_scan(found, "in the image")

    def _choose_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose a picture of the QR code", "", IMAGE_FILTER)
        if name:
            self.scan_file(Path(name))

    def scan_clipboard(self) -> bool:
        """Scans a copied image; copied text is pasted as the invite."""
        clipboard = QGuiApplication.clipboard()
        if not clipboard.image().isNull():
            return self.use_scan(scan.scan_clipboard(), "in the copied image")
        text = clipboard.text().strip()
        if text:
            self.text.setPlainText(text)
            return self.validate() is not None
        self._show_problem_only("The clipboard is empty: copy the invite or a picture of its QR code first.")
        return False

    def _scan_screen_soon(self) -> None:
        self.hide()  # this dialog may cover the code
        QTimer.singleShot(SCREEN_DELAY_MS, self.scan_screen)

    def scan_screen(self) -> bool:
        try:
            found = scan.scan_screens()
        finally:
            self.show()
            self.raise_()
        return self.use_scan(found, "on the screen")

    def _scan_camera(self) -> None:
        camera = scan.CameraScanDialog(self)
        if camera.exec() == QDialog.DialogCode.Accepted and camera.invite:
            self.use_scan(scan.Scan(invites=(camera.invite,), codes=1), "by the camera")

    # --- result ---------------------------------------------------------------------------------

    def accept(self) -> None:
        invite = self.invite if self.invite is not None else self.validate()
        if invite is None or not self.join_button.isEnabled():
            return
        self.settings.known_organizers[invite.run_name] = invite.fingerprint
        self.settings.invite = invite.token
        try:
            save_settings(self.settings, self._path)
        except OSError as error:
            self._show_problem_only(f"Could not save the settings ({error}); is the disk full?")
            return
        self.token = invite.token
        super().accept()
