"""Telling running gateway processes that policy changed, without a syscall per call.

An admin change (from the HTTP API or from the CLI in another process) commits to the
database and then increments a counter in a small file. Every gateway process on the
machine maps that file into memory once and compares the counter before every call: the
page cache is shared, so the increment is visible at once and reading it costs a memory
load, not a ``stat``. When the counter moved, the process reloads its policy snapshot, so
a revocation or a suspension is effective on the very next call. Deployments spanning
several machines add a network notifier beside this one.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

__all__ = ["EpochFile"]

_SIZE = 8


class EpochFile:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._map: mmap.mmap | None = None

    def _open(self) -> int:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size < _SIZE:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _SIZE:
                    os.ftruncate(fd, _SIZE)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return fd

    def bump(self) -> None:
        """Announce a change: increment the counter in place, under an exclusive lock so
        concurrent writers never lose an increment. The file is never replaced, since
        readers hold a mapping of this very inode."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = int.from_bytes(os.pread(fd, _SIZE, 0), "little")
            os.pwrite(fd, ((current + 1) % 2**64).to_bytes(_SIZE, "little"), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def marker(self) -> int:
        """The current counter; changes whenever :meth:`bump` ran in any process."""
        if self._map is None:
            fd = self._open()
            try:
                self._map = mmap.mmap(fd, _SIZE, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        return int.from_bytes(self._map[:_SIZE], "little")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
