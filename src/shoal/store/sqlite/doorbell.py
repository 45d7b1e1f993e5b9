"""Same-host wake-ups for nodes sharing one SQLite file: a UNIX datagram socket per waiting node.

SQLite has no LISTEN/NOTIFY, and a node that only polls starts a job a poll interval late. So a
node's store binds a datagram socket in a directory beside the database file (`<file>-wake/`),
and after a commit that may have made work claimable every store sends one tiny datagram to each
socket there. A waiting node blocks on its socket and claims the moment one arrives.

Why datagram sockets: a send never blocks, needs no connection and no reply, reaches a node in
microseconds, and tells a dead receiver from a live one (the send is refused), so stale sockets
left by a killed node are removed by the next sender. Files watched for changes need inotify
(not in the standard library) or polling; a FIFO delivers each byte to one reader, not to every
node; signals need the nodes' pids and reach any process that reuses one.

Nothing here may break a submit: every failure to ring (no directory, a foreign file, a full
buffer, a path too long for a socket address) is ignored, and the node's fallback poll covers
what a lost ring would have said. A buffer already full means the node has wake-ups waiting.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import select
import socket
import stat
import tempfile
import time

# The longest path a UNIX socket address holds on Linux (108 bytes with the terminating NUL).
MAX_SOCKET_PATH = 107
SUFFIX = ".sock"


def directory_for(db_path: str) -> str:
    """Where the sockets for the database at `db_path` live: beside it, or, when that path is
    too long for a socket address, a directory in the temporary folder named by its hash."""
    real = os.path.realpath(db_path)
    beside = f"{real}-wake"
    if len(beside) + 1 + 40 <= MAX_SOCKET_PATH:  # room for the longest name `Doorbell` picks
        return beside
    digest = hashlib.sha256(real.encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"shoal-wake-{digest}")


class Ringer:
    """The sending side, held by every store: `ring` after a commit. Never raises."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._sock: socket.socket | None = None
        with contextlib.suppress(OSError):
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def ring(self, message: str = "*") -> int:
        """Tell every node waiting on this database that work may have arrived; how many
        sockets took the message. Sockets whose node is gone are removed."""
        if self._sock is None:
            return 0
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0  # no node has waited here yet, or the folder is not ours to read
        data = message.encode()
        rung = 0
        for name in names:
            if name.endswith(SUFFIX):
                rung += self._ring_one(os.path.join(self.directory, name), data)
        return rung

    def _ring_one(self, path: str, data: bytes) -> int:
        assert self._sock is not None
        try:
            self._sock.sendto(data, path)
            return 1
        except ConnectionRefusedError:
            _remove_stale(path)  # nobody is bound there: its node died without tidying up
        except OSError:
            pass  # a full buffer (wake-ups already wait), a foreign file, no permission
        return 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _remove_stale(path: str) -> None:
    """Unlink `path` if it is a socket: never a file of someone else's that only looks like one."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


class Doorbell:
    """The receiving side: one bound socket that a waiting node blocks on."""

    def __init__(self, directory: str) -> None:
        """Bind a fresh socket in `directory` (made if missing); OSError if that fails."""
        os.makedirs(directory, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(8)}{SUFFIX}"
        self.path = os.path.join(directory, name)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self.path)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def wait(self, timeout_s: float) -> list[str]:
        """The messages that arrive within `timeout_s` (all of them waiting once the first
        has), or [] on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            try:
                ready, _, _ = select.select([self._sock], [], [], left)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return []  # closed under us: the store is closing
            if ready:
                return self._drain()

    def _drain(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self._sock.recv(4096).decode(errors="replace"))
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                return messages  # closed under us: the store is closing

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
