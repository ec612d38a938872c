"""One tray app per user and Hiveling home: a second start brings the first one to the front.

A lock file decides who is first (it survives crashes: a lock whose process is gone is stale); the
first instance listens on a local socket, and later starts connect to it, send one line and exit.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import time
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from hiveling.core import paths

logger = logging.getLogger(__name__)

SHOW = "show"
CONNECT_SECONDS = 5.0  # how long a second start waits for a first one that is still starting


class SingleInstance(QObject):
    """``claim()`` once at start; ``message`` carries what later starts sent (``"show"``)."""

    message = Signal(str)

    def __init__(self, folder: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        folder = folder or paths.data_dir()
        digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        self.name = f"hiveling-{_user()}-{digest}"
        self._lock = QLockFile(str(folder / "app.lock"))
        self._lock.setStaleLockTime(0)  # held for days by a live app; only a dead owner makes it stale
        self._server: QLocalServer | None = None

    def claim(self) -> bool:
        """True when this process is the first instance; otherwise tells the first one to show itself."""
        if self._lock.tryLock(0):
            QLocalServer.removeServer(self.name)  # a crashed instance may have left its socket behind
            server = QLocalServer(self)
            server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
            if not server.listen(self.name):
                logger.warning("Cannot listen on %s (%s): later starts will not find this one",
                               self.name, server.errorString())  # fmt: skip
            server.newConnection.connect(self._on_connection)
            self._server = server
            return True
        if not send(self.name, SHOW):
            pid = self._lock.getLockInfo()[0]
            logger.warning("Hiveling is already running (process %s) but does not answer", pid)
        return False

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()

    def _on_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            # A later start writes its line right after connecting, so this wait is short. The socket
            # stays a child of the server (deleteLater on it crashed PySide at teardown).
            if socket.canReadLine() or socket.waitForReadyRead(1000):
                line = bytes(socket.readLine().data()).decode("utf-8", "replace").strip()
                if line:
                    self.message.emit(line)
            socket.abort()


def send(name: str, text: str, timeout: float = CONNECT_SECONDS) -> bool:
    """Sends one line to the instance listening on ``name``; False when none answers in time."""
    deadline = time.monotonic() + timeout
    while True:
        socket = QLocalSocket()
        socket.connectToServer(name)
        if socket.waitForConnected(500):
            socket.write((text + "\n").encode())
            sent = socket.waitForBytesWritten(1000)
            socket.disconnectFromServer()
            if socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
                socket.waitForDisconnected(1000)
            return sent
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # the first instance holds the lock but is not listening yet


def _user() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "user"
    return "".join(c for c in name if c.isalnum())[:32] or "user"
