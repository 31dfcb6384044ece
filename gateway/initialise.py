"""``dsgw init``: the data directory, the keystore with its first keys, and the schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.clock import Clock, SystemClock
from gateway.db.engines import create_engine, migrate
from gateway.errors import KeystoreError
from gateway.passphrase import keystore_passphrase, passphrase_file
from gateway.settings import Settings
from keys.keystore import KeyPurpose, Keystore
from keys.passphrase import create_passphrase_file

__all__ = ["InitReport", "initialise"]


@dataclass(frozen=True, slots=True)
class InitReport:
    data_dir: Path
    created_keystore: bool
    created_passphrase_file: Path | None
    database_url: str


async def initialise(settings: Settings, *, clock: Clock | None = None) -> InitReport:
    """Create the data directory, the keystore (with its first keys) and the schema.

    Idempotent: existing keys and data are kept. Without ``DSGW_KEYSTORE_PASSPHRASE`` a
    random passphrase is written to a 0600 file beside the keystore; production
    deployments pass the passphrase from their secret store instead.
    """
    now = (clock or SystemClock()).now()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    created_pass: Path | None = None
    pass_file = passphrase_file(settings)
    if not settings.keystore.passphrase and not pass_file.exists():
        create_passphrase_file(pass_file)
        created_pass = pass_file
    passphrase = keystore_passphrase(settings)
    created = False
    if settings.keystore_path.exists():
        keystore = Keystore.open(settings.keystore_path, passphrase)
    else:
        keystore = Keystore.create(settings.keystore_path, passphrase)
        created = True
    for purpose in (KeyPurpose.TOKEN_SIGNING, KeyPurpose.CHECKPOINT, KeyPurpose.MARK):
        try:
            keystore.active(purpose)
        except KeystoreError:
            keystore.generate(purpose, now=now)
    engine = create_engine(settings.resolved_database_url)
    try:
        await migrate(engine, timezone=settings.timezone)
    finally:
        await engine.dispose()
    return InitReport(settings.data_dir, created, created_pass, settings.resolved_database_url)
