"""The Logs window: what the worker reported lately, and where the full log files are."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MAX_LINES = 5000


class LogsWindow(QWidget):
    def __init__(self, log_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log_dir = log_dir
        self.setWindowTitle("Hiveling — Logs")
        self.resize(760, 460)

        self.intro = QLabel(
            "What the training worker reported recently. If you report a problem, attach the log "
            f"files from this folder:<br><b>{_escape(str(log_dir))}</b>"
        )
        self.intro.setWordWrap(True)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Nothing yet: lines appear here while Hiveling trains.")

        copy = QPushButton("Copy all")
        copy.clicked.connect(self.copy_all)
        folder = QPushButton("Open log folder")
        folder.clicked.connect(self.open_folder)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(copy)
        buttons.addWidget(folder)
        buttons.addStretch(1)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)

    def set_lines(self, lines: Iterable[str]) -> None:
        self.text.setPlainText("\n".join(lines))
        self._scroll_to_end()

    def append_line(self, line: str) -> None:
        self.text.appendPlainText(line)

    def lines(self) -> list[str]:
        text = self.text.toPlainText()
        return text.split("\n") if text else []

    def copy_all(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())

    def open_folder(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_dir)))

    def _scroll_to_end(self) -> None:
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
