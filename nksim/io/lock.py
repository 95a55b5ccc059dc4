"""An exclusive writer lock on a file (``fcntl.flock``), naming its holder.

:class:`WriterLock` takes a non-blocking exclusive ``flock`` on a lock file and writes the
holder (pid, host, start time) into it. The kernel releases the lock when the holding process
ends, however it ends (SIGKILL included), so a lock can never go stale: a lock file whose
holder died is simply free again, and its old content is overwritten by the next holder.
A second writer is refused at once with :class:`StoreLockedError`, which names the holder.

:func:`output_lock` holds such a lock on an output folder (``FOLDER/.nksim-writer.lock``) for
the duration of a command that writes into it (``nksim run``, ``calibrate``, ``screen``): one
writer per ``--out``. Its lock file is removed when the command ends (a killed holder's file
stays, holding no lock, and is reused by the next writer).

On platforms without ``fcntl`` (Windows) no lock is taken and a :class:`~nksim.errors.NksimWarning`
says so.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
    when it is locked. ``owner`` (e.g. ``"nksim run"``) is recorded before the holder's pid, so
    that a refused writer learns which command holds the lock. ``remove``: delete the lock file
    on :meth:`release` (while still holding it; :meth:`acquire` checks that the file it locked
    is still the one at ``path``, so that a writer never holds the lock of a removed file).
    """

    def __init__(self, path: str | Path, *, what: str | Path, hint: str = "", owner: str = "",
                 remove: bool = False):
        self.path = Path(path)
        self.what = str(what)
        self.hint = hint
        self.owner = owner
        self.remove = remove
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
        for _ in range(100):  # retried only when a holder removed the file between our open and our lock
            fd = self._open()
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
            if self._names(fd):
                break
            os.close(fd)  # we locked a file that its holder has just removed: lock the new one
        else:  # pragma: no cover - 100 holders in a row removed the file under us
            raise StoreLockedError(f"its lock file {self.path} keeps being replaced; {self.hint}".rstrip("; "),
                                   source=self.what)
        since = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        owner = f"{self.owner}, " if self.owner else ""
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{owner}pid {os.getpid()} on host {socket.gethostname()}, since {since}\n".encode())
        except OSError:  # a full disk: the lock is held all the same, only its holder line is missing
            pass
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise NksimInputError(f"cannot open the writer lock file {self.path} ({exc.strerror or exc}); a writer "
                                  "needs a writable folder", source=self.what) from None

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` is (still) the file open as ``fd``."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

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
            if self.remove and self._names(fd):
                self.path.unlink()  # still locked: a writer that opened it now finds it gone and retries
            else:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: Name of the lock file that :func:`output_lock` keeps in an output folder while a command writes into it.
OUTPUT_LOCK_NAME = ".nksim-writer.lock"


@contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[WriterLock]:
    """Hold the writer lock of output folder ``folder`` (created if missing) while the block runs.

    A second writer into the same folder (``command`` names this one in the lock file, e.g.
    ``"nksim run"``) is refused at once with :class:`StoreLockedError` naming the holder's
    command, pid and host; readers take no lock. On exit the lock file is removed, and so are
    the folders created here if they are still empty (a command that failed or was interrupted
    before writing anything leaves no empty ``--out`` behind). A folder that cannot be created
    is an :class:`~nksim.errors.NksimInputError` naming it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NksimInputError("--out must be a folder (it names an existing file)", source=folder)
    created = []
    missing = folder
    while not missing.exists() and missing.parent != missing:
        created.append(missing)
        missing = missing.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        from ..fileio import check_writable

        check_writable(folder)  # names the reason when it can (a file on the path, no permission, a full disk)
        raise NksimInputError(f"cannot create the folder ({exc.strerror or exc}); choose another --out",
                              source=folder) from None
    lock = WriterLock(folder / OUTPUT_LOCK_NAME, what=folder, owner=command, remove=True,
                      hint=f"only one nksim command may write into {folder} at a time: wait until that one ends "
                           "(or stop it) and run again, or choose another --out")
    try:
        try:
            lock.acquire()
        except StoreLockedError:
            raise
        except NksimInputError:  # the lock file cannot be created: say why as the output probe does
            from ..fileio import check_writable

            check_writable(folder)
            raise
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield lock
    finally:
        lock.release()
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are empty; leave the others."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return
