"""One writer per run folder: an advisory lock on ``<out>/.loadprof.lock`` (``fcntl.flock``), holding the PID.

``compare`` (``--resume`` too), ``report`` and ``loadprof run`` hold it for their whole life, so a second writer
(a ``--resume`` of a folder another run is writing, two ``--resume`` of one interrupted folder) exits 2 naming the
holder's PID instead of writing trial ids twice. The kernel releases a flock when its holder dies, so a lock file
that exists but is not locked is stale: it is taken over, with a note. The file is removed on release; a writer
that locked a file another one just removed sees the inode changed and tries again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Callable

from loadprof.core.errors import LoadprofError

LOCK = ".loadprof.lock"


class RunLock:
    """Held from ``acquire`` until ``release`` (or the process ends); a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, out: Path, *, log: Callable[[str], None] = lambda s: None) -> "RunLock":
        """Lock ``out`` (created if absent) or raise ``LoadprofError`` (exit 2) naming the holder's PID."""
        if out.exists() and not out.is_dir():
            raise LoadprofError(f"--out {out} is a file, not a folder", exit_code=2)
        path = out / LOCK
        for _ in range(10):
            try:
                out.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise LoadprofError(f"cannot write to {out}: {e.strerror or e}", exit_code=2,
                                    hint="choose a writable --out folder") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise LoadprofError(f"{out} is in use by another loadprof (pid {holder or 'unknown'}): one writer "
                                    "per run folder", exit_code=2,
                                    hint="wait for it to finish (or stop it), or use another --out") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        else:
            raise LoadprofError(f"cannot lock {path}: it keeps being replaced", exit_code=2)
        stale = _read_pid(fd)
        if stale and stale != os.getpid():
            log(f"took over the stale lock of {out} left by pid {stale}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
