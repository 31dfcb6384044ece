"""Where the keystore passphrase comes from.

Production deployments pass it in ``DSGW_KEYSTORE_PASSPHRASE`` from their secret store; a
single-host install keeps a random one in a 0600 file beside the keystore, made by
``dsgw init``. A passphrase file others can read is refused rather than used, because it
would quietly turn the encrypted keystore into a readable one.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from gateway.errors import KeystoreError

__all__ = ["create_passphrase_file", "load_passphrase"]

_ENV_NAME = "DSGW_KEYSTORE_PASSPHRASE"


def load_passphrase(*, env_value: str | None, file: Path | None) -> bytes:
    """The passphrase from ``env_value`` if set and non-empty, else from ``file``.

    An empty environment value counts as unset, so an empty passphrase is never used. One
    trailing line ending is not part of a file's passphrase (editors add one).
    """
    if env_value:
        return env_value.encode("utf-8")
    if file is None:
        raise KeystoreError(
            f"keystore: no passphrase: set {_ENV_NAME} or create a passphrase file with `dsgw init`"
        )
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError as err:
        raise KeystoreError(
            f"keystore: passphrase file {file} does not exist; set {_ENV_NAME} or run "
            "`dsgw init` to create it"
        ) from err
    except OSError as err:
        raise KeystoreError(
            f"keystore: cannot read passphrase file {file}: {err.strerror}"
        ) from err
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open file, so the checked file is the one read.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeystoreError(f"keystore: passphrase file {file} is not a regular file")
        if info.st_mode & 0o077:
            raise KeystoreError(
                f"keystore: passphrase file {file} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {file}`"
            )
        data = handle.read()
    passphrase = data.removesuffix(b"\n").removesuffix(b"\r")
    if not passphrase:
        raise KeystoreError(f"keystore: passphrase file {file} is empty")
    return passphrase


def create_passphrase_file(path: Path) -> bytes:
    """Write a new random passphrase (32 bytes, base64url) to ``path`` with mode 0600.

    Refuses to overwrite: an existing file may be the only copy of the passphrase of an
    existing keystore.
    """
    passphrase = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise KeystoreError(
            f"keystore: passphrase file {path} already exists; refusing to overwrite it "
            "(it may protect an existing keystore)"
        ) from err
    except OSError as err:
        raise KeystoreError(
            f"keystore: cannot create passphrase file {path}: {err.strerror}"
        ) from err
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, passphrase + b"\n")
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        path.unlink(missing_ok=True)  # a half-written file would block the next attempt
        raise KeystoreError(
            f"keystore: writing passphrase file {path} failed: {err.strerror}"
        ) from err
    os.close(fd)
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return passphrase
