"""Cold/warm page cache for a checkpoint's files, done by the parent before a trial starts.

cold: ``posix_fadvise(DONTNEED)`` on every file, then *verified* with
mincore(2) on a read-only mapping: pages that stay resident (dirty, mapped by
another process) are reported, so a "cold" load is never silently warm.
warm: every file is read once (the achieved read rate is a by-product).
Both are outside the trial's wall clock. Torch-free, Linux-first; elsewhere
the functions report that they could not act instead of pretending.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from loadprof.core.clock import DEFAULT_CLOCK

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value
_READ_CHUNK = 16 * 2**20
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt")


@dataclass(frozen=True)
class CacheState:
    files: int
    bytes_total: int
    bytes_resident: int
    action: str
    seconds: float = 0.0
    note: str = ""

    @property
    def resident_fraction(self) -> float:
        return self.bytes_resident / self.bytes_total if self.bytes_total else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"action": self.action, "files": self.files, "bytes_total": self.bytes_total,
                "bytes_resident": self.bytes_resident, "resident_fraction": self.resident_fraction,
                "seconds": self.seconds, "note": self.note}


def checkpoint_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` currently in the page cache: mincore(2) over a read-only shared mapping."""
    size = path.stat().st_size
    if size == 0:
        return 0
    n_pages = (size + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * n_pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"mmap failed for {path}")
        try:
            if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore failed for {path}")
        finally:
            _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    finally:
        os.close(fd)
    return min(size, sum(v & 1 for v in vec) * PAGE)


def state(files: Iterable[Path], action: str = "inspect", seconds: float = 0.0, note: str = "") -> CacheState:
    files = list(files)
    total = sum(p.stat().st_size for p in files)
    resident = sum(resident_bytes(p) for p in files)
    return CacheState(len(files), total, resident, action, seconds, note)


def evict(folder: str | Path) -> CacheState:
    """Drop the files' pages from the page cache and verify how much stayed resident."""
    files = checkpoint_files(folder)
    t = DEFAULT_CLOCK.now_ns()
    if not hasattr(os, "posix_fadvise"):
        return state(files, "cold", note="posix_fadvise unavailable on this platform: not evicted")
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    st = state(files, "cold", (DEFAULT_CLOCK.now_ns() - t) / 1e9)
    if st.bytes_resident:
        return CacheState(st.files, st.bytes_total, st.bytes_resident, "cold", st.seconds,
                          f"{st.resident_fraction:.1%} of the checkpoint stayed resident after DONTNEED "
                          "(pages mapped or dirty elsewhere)")
    return st


def warm(folder: str | Path) -> CacheState:
    """Read every file once so the trial's reads are served from the page cache (skipped when mincore already
    shows every page resident: re-reading a large checkpoint before each warm trial would cost minutes)."""
    files = checkpoint_files(folder)
    t = DEFAULT_CLOCK.now_ns()
    before = state(files, "warm")
    if before.bytes_total and before.bytes_resident == before.bytes_total:
        return CacheState(before.files, before.bytes_total, before.bytes_resident, "warm",
                          (DEFAULT_CLOCK.now_ns() - t) / 1e9, "already resident: not re-read")
    buf = bytearray(_READ_CHUNK)
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return state(files, "warm", (DEFAULT_CLOCK.now_ns() - t) / 1e9)


def sequential_read_bandwidth(folder: str | Path) -> dict[str, float]:
    """The physical limit of a cold load: evict, read every file once in 16 MiB chunks (timed), evict again.

    Leaves the files evicted, so it is only used right before a cold trial.
    """
    evict(folder)
    n, seconds = _timed_read(checkpoint_files(folder))
    after = evict(folder)
    return {"bytes": n, "seconds": seconds, "gb_s": n / seconds / 1e9 if seconds > 0 else 0.0,
            "resident_fraction_after_evict": after.resident_fraction}


def cached_read_bandwidth(folder: str | Path) -> dict[str, float]:
    """The limit of a warm load's read: every file read once more from the page cache (warmed first), timed, in
    16 MiB chunks (the kernel's page-cache -> user-memory copy). Leaves the files warm."""
    warmed = warm(folder)
    n, seconds = _timed_read(checkpoint_files(folder))
    return {"bytes": n, "seconds": seconds, "gb_s": n / seconds / 1e9 if seconds > 0 else 0.0,
            "resident_fraction": warmed.resident_fraction}


def _timed_read(files: Iterable[Path]) -> tuple[int, float]:
    """(bytes, seconds) of reading ``files`` once, sequentially, in 16 MiB chunks."""
    t = DEFAULT_CLOCK.now_ns()
    buf = bytearray(_READ_CHUNK)
    n = 0
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while True:
                k = f.readinto(buf)
                if not k:
                    break
                n += k
    return n, (DEFAULT_CLOCK.now_ns() - t) / 1e9
