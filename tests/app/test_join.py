"""The join dialog: pasting and scanning invites, what it shows, and what joining records."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog
from pytestqt.qtbot import QtBot

from hiveling.app.dialogs import join, scan
from hiveling.app.dialogs.join import JoinDialog, find_invite_text, time_until
from hiveling.core.config import Settings, load_settings
from hiveling.core.invites import qr
from hiveling.core.invites.invite import Invite, make_invite
from hiveling.core.invites.keys import OrganizerKey

from .test_devices_panel import CPU, OLD, RTX

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
Maker = Callable[..., Invite]


@pytest.fixture(scope="module")
def organizer() -> OrganizerKey:
    return OrganizerKey.generate()


@pytest.fixture(scope="module")
def make(organizer: OrganizerKey) -> Maker:
    def make(**changes: object) -> Invite:
        fields: dict[str, object] = {
            "run_name": "glyphs-spring",
            "recipe": "glyphs",
            "recipe_version": "2.0",
            "hparams": {},
            "target_batch_size": 4096,
            "peers": [PEER],
            "expires": timedelta(days=3),
        }
        fields.update(changes)
        key = fields.pop("key", organizer)
        return make_invite(key, **fields)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def invite(make: Maker) -> Invite:
    return make()


def open_dialog(qtbot: QtBot, settings: Settings | None = None, **kwargs: object) -> JoinDialog:
    kwargs.setdefault("devices", [RTX, OLD, CPU])
    dialog = JoinDialog(settings or Settings(), **kwargs)  # type: ignore[arg-type]
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def paste(qtbot: QtBot, dialog: JoinDialog, text: str) -> None:
    """Pastes ``text`` and waits for the debounced validation to run."""
    dialog.text.setPlainText(text)
    qtbot.waitUntil(lambda: not dialog._debounce.isActive(), timeout=3000)


def test_valid_invite_shows_the_run_and_joins(
    qtbot: QtBot, invite: Invite, app_home: Path, tmp_path: Path
) -> None:
    settings = Settings()
    dialog = open_dialog(qtbot, settings)
    assert not dialog.join_button.isEnabled()
    assert dialog.details.isHidden()

    paste(qtbot, dialog, invite.token)
    assert dialog.join_button.isEnabled()
    assert dialog.run_name.text() == "glyphs-spring"
    assert dialog.organizer.text() == invite.fingerprint
    assert "Glyph classifier" in dialog.recipe.text()
    assert dialog.expires.text().startswith("in 3 days")
    assert dialog.ends.text() == "when the organizer stops it"
    assert dialog.machine.text().startswith("✔ Trains on NVIDIA GeForce RTX 3060")
    assert dialog.warning.isHidden()
    assert dialog.grab().save(str(tmp_path / "join.png"))

    dialog.join_button.click()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.token == invite.token
    assert dialog.invite is not None
    assert dialog.invite.run_id == invite.run_id
    assert settings.known_organizers == {"glyphs-spring": invite.fingerprint}
    assert settings.invite == invite.token
    assert load_settings() == settings  # written to the real file


def test_validation_waits_for_typing_to_pause(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot)
    dialog.text.setPlainText(invite.token[:40])
    assert dialog._debounce.isActive()
    qtbot.keyClicks(dialog.text, invite.token[40:80])
    assert dialog._debounce.isActive()
    assert dialog.status.text() == "Waiting for an invite."  # not re-checked on every key
    dialog.text.setPlainText(invite.token)
    qtbot.waitUntil(dialog.join_button.isEnabled, timeout=3000)


def test_link_and_messy_paste(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, "  " + invite.link + "\n")
    assert dialog.join_button.isEnabled()
    wrapped = "\n".join(invite.token[i : i + 60] for i in range(0, len(invite.token), 60)).lower()
    paste(qtbot, dialog, wrapped)
    assert dialog.join_button.isEnabled()
    paste(qtbot, dialog, f"Hi! Join my run: {invite.link} — thanks")
    assert dialog.join_button.isEnabled()
    assert dialog.invite is not None
    assert dialog.invite.token == invite.token


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hello there", "not"),
        ("HIVE1-ABCDEFGH", "copy it again"),
    ],
)
def test_bad_invites_show_the_reason(qtbot: QtBot, text: str, words: str) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, text)
    message = dialog.status.text()
    assert message.startswith("This invite ")
    assert message.lower().count("this invite") == 1, message
    assert words in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert not dialog.join_button.isEnabled()
    assert dialog.details.isHidden()


def test_truncated_invite(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, invite.token[:-7])
    assert dialog.status.text().startswith("This invite is cut off"), dialog.status.text()
    assert not dialog.join_button.isEnabled()


def test_damaged_invite(qtbot: QtBot, invite: Invite) -> None:
    middle = len(invite.token) // 2
    flipped = "A" if invite.token[middle] != "A" else "B"
    damaged = invite.token[:middle] + flipped + invite.token[middle + 1 :]
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, damaged)
    assert dialog.status.text().startswith("This invite ")
    assert dialog.status.text().lower().count("this invite") == 1
    assert not dialog.join_button.isEnabled()


def test_a_pasted_invite_shows_its_beginning(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot)
    dialog.text.setFixedWidth(160)  # narrow: the invite wraps past the box's four lines
    dialog.show()
    qtbot.waitExposed(dialog)
    QGuiApplication.clipboard().setText(invite.token)
    dialog.text.paste()  # as Ctrl+V does: the cursor, and so the view, ends at the invite's end
    qtbot.waitUntil(lambda: not dialog._debounce.isActive(), timeout=3000)
    bar = dialog.text.verticalScrollBar()
    assert bar.maximum() > 0  # the box does scroll
    assert dialog.join_button.isEnabled()
    assert bar.value() == 0


def test_expired_invite(qtbot: QtBot, invite: Invite) -> None:
    later = datetime.now(UTC) + timedelta(days=4)
    dialog = open_dialog(qtbot, clock=lambda: later)
    paste(qtbot, dialog, invite.token)
    assert "expired" in dialog.status.text()
    assert "new invite" in dialog.status.text()
    assert not dialog.join_button.isEnabled()


def test_recipe_not_installed(qtbot: QtBot, make: Maker) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, make(recipe="protein-folding").token)
    assert "protein-folding" in dialog.status.text()
    assert "not installed" in dialog.status.text()
    assert not dialog.join_button.isEnabled()


def test_empty_text_is_no_error(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, invite.token)
    paste(qtbot, dialog, "   ")
    assert dialog.status.text() == "Waiting for an invite."
    assert not dialog.join_button.isEnabled()


def test_changed_organizer_key_warns_and_asks(
    qtbot: QtBot, make: Maker, invite: Invite, tmp_path: Path
) -> None:
    impostor = make(key=OrganizerKey.generate())
    settings = Settings(known_organizers={"glyphs-spring": invite.fingerprint})
    dialog = open_dialog(qtbot, settings)
    paste(qtbot, dialog, impostor.token)
    assert dialog.warning.isVisible()
    assert invite.fingerprint in dialog.warning_text.text()
    assert impostor.fingerprint in dialog.warning_text.text()
    assert not dialog.join_button.isEnabled()
    dialog.adjustSize()
    assert dialog.grab().save(str(tmp_path / "join-warning.png"))

    dialog.buttons.accepted.emit()  # Enter in the dialog: still refused
    assert dialog.result() != QDialog.DialogCode.Accepted

    dialog.confirm_new_key.setChecked(True)
    assert dialog.join_button.isEnabled()
    dialog.join_button.click()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert settings.known_organizers["glyphs-spring"] == impostor.fingerprint
    assert load_settings().known_organizers["glyphs-spring"] == impostor.fingerprint


def test_same_organizer_again_no_warning(qtbot: QtBot, invite: Invite) -> None:
    settings = Settings(known_organizers={"glyphs-spring": invite.fingerprint})
    dialog = open_dialog(qtbot, settings)
    paste(qtbot, dialog, invite.token)
    assert dialog.warning.isHidden()
    assert dialog.join_button.isEnabled()


def test_warning_goes_when_the_text_changes(qtbot: QtBot, make: Maker, invite: Invite) -> None:
    impostor = make(key=OrganizerKey.generate())
    dialog = open_dialog(qtbot, Settings(known_organizers={"glyphs-spring": invite.fingerprint}))
    paste(qtbot, dialog, impostor.token)
    dialog.confirm_new_key.setChecked(True)
    paste(qtbot, dialog, invite.token)
    assert dialog.warning.isHidden()
    paste(qtbot, dialog, impostor.token)
    assert not dialog.confirm_new_key.isChecked()  # a new confirmation for each invite
    assert not dialog.join_button.isEnabled()


def test_cancel_records_nothing(qtbot: QtBot, invite: Invite, app_home: Path) -> None:
    settings = Settings()
    dialog = open_dialog(qtbot, settings)
    paste(qtbot, dialog, invite.token)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert settings.known_organizers == {}
    assert not (app_home / "config" / "settings.json").exists()


def test_this_computer_cannot_train(qtbot: QtBot, invite: Invite) -> None:
    dialog = open_dialog(qtbot, devices=[OLD])
    paste(qtbot, dialog, invite.token)
    assert dialog.machine.text().startswith("Cannot train this run yet:")
    assert dialog.join_button.isEnabled()  # the volunteer may fix it (install torch) after joining


def test_devices_detected_in_the_background(qtbot: QtBot, invite: Invite) -> None:
    dialog = JoinDialog(Settings())
    qtbot.addWidget(dialog)
    paste(qtbot, dialog, invite.token)
    qtbot.waitUntil(lambda: dialog.machine.text().startswith(("✔", "Cannot")), timeout=30_000)


def test_scan_file_button(
    qtbot: QtBot, invite: Invite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "invite.png"
    path.write_bytes(qr.png_bytes(invite.token))
    # The native file chooser is modal; answer it as a volunteer would.
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    dialog = open_dialog(qtbot)
    dialog.file_button.click()
    assert dialog.text.toPlainText() == invite.token
    assert dialog.join_button.isEnabled()


def test_scan_file_button_cancelled(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: ("", ""))
    dialog = open_dialog(qtbot)
    dialog.file_button.click()
    assert dialog.status.text() == "Waiting for an invite."


def test_scan_file_problems(qtbot: QtBot, invite: Invite, tmp_path: Path) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, invite.token)
    other = tmp_path / "menu.png"
    other.write_bytes(qr.png_bytes("https://example.org/menu"))
    assert not dialog.scan_file(other)
    assert "not a Hiveling invite" in dialog.status.text()
    assert dialog.text.toPlainText() == invite.token  # what was there stays

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture")
    assert not dialog.scan_file(text_file)
    assert dialog.status.text().startswith("Could not read the image: ")


def test_two_invites_in_one_image(qtbot: QtBot, make: Maker, invite: Invite) -> None:
    second = make(run_name="charlm-summer", recipe="charlm")
    dialog = open_dialog(qtbot)
    dialog.use_scan(scan.Scan(invites=(invite.token, second.token), codes=2), "in the image")
    assert dialog.text.toPlainText() == invite.token
    assert "2 invites were found in the image" in dialog.status.text()


def test_clipboard_image_and_text(qtbot: QtBot, invite: Invite) -> None:
    clipboard = QGuiApplication.clipboard()
    dialog = open_dialog(qtbot)
    try:
        clipboard.setImage(QImage.fromData(qr.png_bytes(invite.link)))
        dialog.clipboard_button.click()
        assert dialog.text.toPlainText() == invite.link
        assert dialog.join_button.isEnabled()

        dialog.text.clear()
        clipboard.setText(invite.token)
        dialog.clipboard_button.click()
        assert dialog.text.toPlainText() == invite.token
        assert dialog.join_button.isEnabled()

        clipboard.clear()
        dialog.clipboard_button.click()
        assert "clipboard is empty" in dialog.status.text()
    finally:
        clipboard.clear()


def test_screen_button(qtbot: QtBot) -> None:
    dialog = open_dialog(qtbot)
    dialog.screen_button.click()
    assert dialog.isHidden()  # out of the way of the code on screen
    # The offscreen platform's screen is blank: the dialog comes back and says so.
    qtbot.waitUntil(lambda: dialog.isVisible() and "screen" in dialog.status.text(), timeout=5000)
    assert dialog.status.text().startswith("No QR code found on the screen")


def test_camera_button_without_qt_multimedia(qtbot: QtBot) -> None:
    dialog = open_dialog(qtbot)
    if scan.camera_available():
        assert dialog.camera_button.isEnabled()
    else:
        assert not dialog.camera_button.isEnabled()
        assert dialog.camera_button.toolTip() == scan.CAMERA_MISSING


def test_words() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert time_until(now + timedelta(days=2, hours=23, minutes=59), now) == "in 3 days"
    assert time_until(now + timedelta(hours=1), now) == "in 1 hour"
    assert time_until(now + timedelta(minutes=12), now) == "in 12 minutes"
    assert time_until(now + timedelta(seconds=20), now) == "in less than a minute"
    assert find_invite_text("see HIVE1-ABCDEFGHIJKLMNOPQRST ok") == "HIVE1-ABCDEFGHIJKLMNOPQRST"
    assert find_invite_text("no invite here") is None
    assert join.DEBOUNCE_MS <= 500  # feels immediate


GUI_ONLY = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
app = QApplication([])
from hiveling.app.dialogs.join import JoinDialog
from hiveling.core.config import Settings
dialog = JoinDialog(Settings(), devices=[])
dialog.text.setPlainText(sys.argv[1])
assert dialog.validate() is not None, dialog.status.text()
print(",".join(sorted(m for m in ("torch", "hivemind", "lightning") if m in sys.modules)))
"""


def test_validating_an_invite_loads_no_training_library(invite: Invite, app_home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", GUI_ONLY, invite.token],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HIVELING_HOME": str(app_home)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_a_run_with_an_end_says_when_it_ends(qtbot: QtBot, make: Maker) -> None:
    dialog = open_dialog(qtbot)
    paste(qtbot, dialog, make(last_step=5000).token)
    assert dialog.join_button.isEnabled()
    assert dialog.ends.text() == "after 5,000 collaborative steps"
