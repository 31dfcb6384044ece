"""The keystore's passphrase, where the settings say it is, and the keystore opened with it.

Kept apart from :mod:`gateway.runtime` so that what needs only the keystore (``dsgw keys``,
``dsgw secrets``, a CLI listing that proves its caller holds the passphrase) does not import
every service of the gateway to find it.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import KeystoreError
from gateway.settings import Settings
from keys.keystore import Keystore
from keys.passphrase import load_passphrase

__all__ = ["keystore_passphrase", "open_keystore", "passphrase_file"]


def passphrase_file(settings: Settings) -> Path:
    """The passphrase file: ``keystore_passphrase_file``, else ``keystore.pass`` in the data dir."""
    if settings.keystore.passphrase_file:
        return Path(settings.keystore.passphrase_file)
    return settings.data_dir / "keystore.pass"


def keystore_passphrase(settings: Settings) -> bytes:
    """The keystore passphrase: ``DSGW_KEYSTORE_PASSPHRASE`` or the passphrase file."""
    return load_passphrase(
        env_value=settings.keystore.passphrase or None,
        file=passphrase_file(settings),
    )


def open_keystore(settings: Settings) -> Keystore:
    """The keystore made by ``dsgw init``, opened with the passphrase (scrypt: ~0.1 s of CPU).

    Raises :class:`KeystoreError` when the keystore is missing or the passphrase is wrong.
    """
    if not settings.keystore_path.exists():
        raise KeystoreError(
            f"keystore: {settings.keystore_path} does not exist; run `dsgw init` first"
        )
    return Keystore.open(settings.keystore_path, keystore_passphrase(settings))
