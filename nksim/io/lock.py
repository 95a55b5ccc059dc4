"""An exclusive writer lock on a file (``fcntl.flock``), naming its holder.

:class:`WriterLock` takes a non-blocking exclusive ``flock`` on a lock file and writes the
holder (pid, host, start time) into it. The kernel releases the lock when the holding process
ends, however it ends (SIGKILL included), so a lock can never go stale: a lock file whose
holder died is simply free again, and its old content is overwritten by the next holder.
A second writer is refused at once with :class:`StoreLockedError`, which names the holder.

On platforms without ``fcntl`` (Windows) no lock is taken and a :class:`~nksim.errors.NksimWarning`
says so.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import warnings
from pathlib import Path

from ..errors import NksimInputError, NksimWarning

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class StoreLockedError(NksimInputError):
    """Another process holds the writer lock (the message names the holder)."""


class WriterLock:
    """Exclusive lock on ``path`` (created if missing), taken by :meth:`acquire`, dropped by :meth:`release`.

    ``what`` names the locked object in messages (e.g. the store path), ``hint`` says what to do
    when it is locked.
    """

    def __init__(self, path: str | Path, *, what: str | Path, hint: str = ""):
        self.path = Path(path)
        self.what = str(what)
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def holder(self) -> str:
        """The holder recorded in the lock file ('' if none or unreadable)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""

    def acquire(self) -> WriterLock:
        """Take the lock or raise :class:`StoreLockedError` naming the holder; returns self."""
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - Windows
            warnings.warn(f"{self.what}: no file locking on this platform; do not run two writers on it at once",
                          NksimWarning, stacklevel=2)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise NksimInputError(f"cannot open the writer lock file {self.path} ({exc.strerror or exc}); a writer "
                                  "needs a writable folder", source=self.what) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = self.holder() or "a process that has not yet recorded its pid"
            raise StoreLockedError(f"is locked by another writer ({who}); {self.hint}".rstrip("; "),
                                   source=self.what) from None
        except OSError as exc:  # file system without locks (some network file systems)
            os.close(fd)
            warnings.warn(f"{self.what}: cannot lock {self.path} ({exc}); do not run two writers on it at once",
                          NksimWarning, stacklevel=2)
            return self
        since = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {since}\n".encode())
        self._fd = fd
        return self

    def moved(self, path: str | Path, what: str | Path | None = None) -> None:
        """Record that the lock file now lives at ``path`` (its folder was renamed; the lock stays held)."""
        self.path = Path(path)
        if what is not None:
            self.what = str(what)

    def release(self) -> None:
        """Drop the lock (clearing the holder line); does nothing if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
