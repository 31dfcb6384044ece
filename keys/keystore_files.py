"""Atomic, private file writes and reads for the keystore.

A keystore file is replaced, never edited in place: a crash mid-write must leave either
the old or the new file, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.errors import KeystoreError
from keys.keystore_format import FileId

__all__ = ["create_file", "fsync_dir", "read_file", "write_temp"]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh 0600 file beside ``path`` and fsync it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def create_file(path: Path, data: bytes) -> None:
    """Create ``path`` (and a 0700 parent) holding ``data``; never replaces an existing file."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    tmp = write_temp(path, data)
    try:
        # link() fails if the name exists, so two racing creators cannot clobber each other.
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(parent)


def read_file(path: Path) -> tuple[bytes, FileId]:
    try:
        with path.open("rb") as handle:
            file_id = FileId.of(os.fstat(handle.fileno()))
            return handle.read(), file_id
    except FileNotFoundError as err:
        raise KeystoreError(
            f"keystore: {path} does not exist; run `dsgw init` to create it"
        ) from err
    except OSError as err:
        raise KeystoreError(f"keystore: cannot read {path}: {err.strerror}") from err
