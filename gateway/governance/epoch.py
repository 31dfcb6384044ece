"""Telling running gateway processes that policy changed, at the cost of one ``stat``.

An admin change (from the HTTP API or from the CLI in another process) commits to the
database and then replaces this file. Each gateway process compares the file's identity
before every call and reloads its policy snapshot when it moved, so a revocation or a
suspension is effective on the very next call without a database round trip per call.
A multi-node deployment adds a network notifier beside it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["EpochFile"]


class EpochFile:
    def __init__(self, path: Path) -> None:
        self._path = path

    def bump(self) -> None:
        """Announce a change. Atomic replace, so readers see a new inode even if the
        filesystem's mtime resolution is coarse."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(8), encoding="ascii")
        os.replace(tmp, self._path)

    def marker(self) -> tuple[int, int, int]:
        """Identity of the current epoch; changes whenever :meth:`bump` ran."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
