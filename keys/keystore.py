"""An encrypted-at-rest keystore kept in one JSON file.

The gateway's long-lived secrets (token-signing and checkpoint keys, the mark secret, the
anchoring worker's chain accounts) live in a single file so that backup, rotation and
permissions concern exactly one path. The file is never trusted: every secret is
authenticated encryption, and every piece of clear metadata that decides how a secret is
used is bound into that encryption.

The file format is described in :mod:`keys.keystore_format`, its reading back in
:mod:`keys.keystore_load`; here is the :class:`Keystore` that uses, rotates and saves it.

All times are passed in by the caller (timezone-aware), never read from the clock here, so
rotation and grace windows are tested by moving time. Writes are atomic (temporary file in
the same directory, fsync, ``os.replace``, fsync of the directory) with mode 0600.
Mutations take an advisory ``flock`` on ``<file>.lock`` and first pick up changes written
by another process, so a CLI rotation and a running gateway do not overwrite each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import KeystoreError
from keys.keystore_files import create_file, fsync_dir, read_file, write_temp
from keys.keystore_format import (
    FORMAT,
    MAX_NAMED_SECRET_BYTES,
    MAX_PROVIDER_CHARS,
    NONCE_BYTES,
    PRUNABLE_PURPOSES,
    PURPOSE_ALGORITHM,
    SALT_BYTES,
    SECRET_NAME,
    VERIFIER_MARKER,
    VERSION,
    Algorithm,
    FileId,
    KeyEntry,
    KeyInfo,
    KeyPurpose,
    KeystoreState,
    NamedSecret,
    ScryptKdf,
    SecretInfo,
    aware_utc,
    b64,
    entry_aad,
    header_aad,
    key_metadata,
    kid_for,
    new_secret,
    public_key_bytes,
    secret_aad,
    secret_metadata,
    sha256_digest,
)
from keys.keystore_load import check_scrypt, load_state

__all__ = [
    "FORMAT",
    "SECRET_NAME",
    "VERSION",
    "Algorithm",
    "KeyInfo",
    "KeyPurpose",
    "Keystore",
    "SecretInfo",
]


class Keystore:
    """Keys of one gateway, decrypted into memory on open and saved on every change.

    Instances are made with :meth:`create` or :meth:`open`. Reads work on an immutable
    snapshot that a reload replaces in one assignment, so a concurrent
    :meth:`reload_if_changed` never shows a half-loaded store.
    """

    def __init__(self, path: Path, passphrase: bytes, state: KeystoreState) -> None:
        self._path = path
        self._passphrase = passphrase
        self._state = state
        self._ed25519: dict[str, Ed25519PrivateKey] = {}

    # -- creation and loading -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, passphrase: bytes, *, scrypt_n: int = 2**15) -> Keystore:
        """Create an empty keystore at ``path``; refuses to replace an existing file."""
        if not passphrase:
            raise KeystoreError("keystore: create refused: the passphrase is empty")
        check_scrypt(scrypt_n, 8, 1, path)
        if path.exists():
            raise KeystoreError(
                f"keystore: create refused: {path} already exists; open it instead, or move "
                "it away if you really mean to start with new keys"
            )
        kdf = ScryptKdf(salt=secrets.token_bytes(SALT_BYTES), n=scrypt_n, r=8, p=1)
        kek = kdf.derive(passphrase)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(kek).encrypt(nonce, VERIFIER_MARKER, header_aad(kdf))
        verifier = {"nonce": b64(nonce), "ciphertext": b64(sealed)}
        store = cls(path, passphrase, KeystoreState(kdf, kek, verifier, (), None, b""))
        data = store._serialise(store._state)
        try:
            create_file(path, data)
            file_id = FileId.of(path.stat())
        except FileExistsError as err:
            raise KeystoreError(
                f"keystore: create refused: {path} was created by someone else meanwhile"
            ) from err
        except OSError as err:
            raise KeystoreError(
                f"keystore: cannot create {path}: {err.strerror}"
                + (f" ({err.filename})" if err.filename else "")
            ) from err
        store._state = replace(store._state, file_id=file_id, digest=sha256_digest(data))
        return store

    @classmethod
    def open(cls, path: Path, passphrase: bytes) -> Keystore:
        """Open and fully verify the keystore at ``path``.

        Every entry is decrypted now, so a tampered file is refused at start-up rather than
        at the first token request.
        """
        raw, file_id = read_file(path)
        state = load_state(path, raw, passphrase, file_id, known=None)
        return cls(path, passphrase, state)

    def reload_if_changed(self) -> bool:
        """Re-read the file if another process changed it; returns whether it did.

        Cheap when nothing changed (one ``stat``), so request paths may call it whenever
        they meet a kid they do not know.
        """
        return self._refresh(force=False)

    def _refresh(self, *, force: bool) -> bool:
        """Load the file if it differs from what this instance last saw.

        The ``stat`` shortcut can miss a change (coarse timestamps, a reused inode and an
        equal size), so writers pass ``force`` and compare contents instead.
        """
        try:
            current = FileId.of(self._path.stat())
        except FileNotFoundError as err:
            raise KeystoreError(
                f"keystore: {self._path} has disappeared; restore it from a backup"
            ) from err
        if current == self._state.file_id and not force:
            return False
        raw, file_id = read_file(self._path)
        if sha256_digest(raw) == self._state.digest:
            self._state = replace(self._state, file_id=file_id)
            return False
        self._replace_state(load_state(self._path, raw, self._passphrase, file_id, self._state))
        return True

    def _replace_state(self, state: KeystoreState) -> None:
        self._state = state
        live = {entry.info.kid for entry in state.entries}
        self._ed25519 = {kid: key for kid, key in self._ed25519.items() if kid in live}

    # -- reading ----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def entries(self) -> list[KeyInfo]:
        """Metadata of every key, in creation order."""
        return [entry.info for entry in self._state.entries]

    def active(self, purpose: KeyPurpose) -> KeyInfo:
        """The key currently used for ``purpose``."""
        for entry in self._state.entries:
            if entry.info.purpose == purpose and entry.info.retired_at is None:
                return entry.info
        raise KeystoreError(
            f"keystore: no active {purpose} key in {self._path}; run `dsgw init` "
            "(or generate one) first"
        )

    def verification_keys(
        self, purpose: KeyPurpose, *, now: dt.datetime, grace: dt.timedelta
    ) -> list[KeyInfo]:
        """Keys whose signatures are still accepted: the active one first, then retired ones.

        A retired key stays for ``grace`` after its retirement; pass the longest lifetime of
        anything it signed, so a rotation never invalidates a token that has not expired.
        Empty if the purpose has no keys at all: only signing needs an active key.
        """
        now = aware_utc(now, "now")
        if grace < dt.timedelta(0):
            raise ValueError("keystore: grace must not be negative")
        active: list[KeyInfo] = []
        retired: list[KeyInfo] = []
        for entry in self._state.entries:
            info = entry.info
            if info.purpose != purpose:
                continue
            if info.retired_at is None:
                active.append(info)
            elif info.retired_at + grace > now:
                retired.append(info)
        retired.sort(key=lambda info: info.retired_at or now, reverse=True)
        return active + retired

    def keys_of(self, purpose: KeyPurpose) -> list[KeyInfo]:
        """Every key of ``purpose`` still in the keystore, the active one first, then the
        retired ones newest first: for checkpoint keys (never pruned) the whole history,
        which verifiers need to check what each key signed."""
        purpose = KeyPurpose(purpose)
        found = [e.info for e in self._state.entries if e.info.purpose == purpose]
        active = [info for info in found if info.retired_at is None]
        retired = sorted(
            (info for info in found if info.retired_at is not None),
            key=lambda info: (info.retired_at or info.created_at, info.created_at),
            reverse=True,
        )
        return active + retired

    def signing_key(self, kid: str) -> Ed25519PrivateKey:
        """The Ed25519 private key ``kid`` (a token-signing or checkpoint key)."""
        cached = self._ed25519.get(kid)
        if cached is not None:
            return cached
        entry = self._entry(kid, "Ed25519", "an Ed25519 signing key")
        key = Ed25519PrivateKey.from_private_bytes(entry.secret)
        self._ed25519[kid] = key
        return key

    def public_key(self, kid: str) -> Ed25519PublicKey:
        """The Ed25519 public key ``kid``, retired or not."""
        return self.signing_key(kid).public_key()

    def secret(self, kid: str) -> bytes:
        """The 32-byte ``mark`` secret ``kid``; derive sub-keys from it, never use it bare."""
        return self._entry(kid, "HMAC-SHA256", "a mark secret").secret

    def chain_account_private_key(self, kid: str) -> bytes:
        """The raw 32-byte big-endian secp256k1 private scalar of chain account ``kid``.

        Retired accounts stay readable: they may still hold funds that must be moved.
        """
        return self._entry(kid, "secp256k1", "a chain-account key").secret

    def named_secrets(self) -> list[SecretInfo]:
        """Metadata of every named secret, by name; never their values."""
        return sorted((item.info for item in self._state.named), key=lambda i: i.name)

    def named_secret(self, name: str) -> tuple[SecretInfo, bytes]:
        """The named secret ``name`` and its value. Raises :class:`KeystoreError` naming
        the command that puts it when there is none."""
        for item in self._state.named:
            if item.info.name == name:
                return item.info, item.value
        raise KeystoreError(
            f"keystore: no secret named {name!r}; put it with `dsgw secrets set {name}`"
        )

    def _entry(self, kid: str, algorithm: Algorithm, what: str) -> KeyEntry:
        for entry in self._state.entries:
            if entry.info.kid == kid:
                if entry.info.algorithm != algorithm:
                    raise KeystoreError(
                        f"keystore: key {kid} is a {entry.info.purpose} key "
                        f"({entry.info.algorithm}), not {what}"
                    )
                return entry
        raise KeystoreError(
            f"keystore: no key with kid {kid!r} in {self._path}; `dsgw keys list` shows "
            "the known keys"
        )

    # -- changing ---------------------------------------------------------------------------

    def generate(self, purpose: KeyPurpose, *, now: dt.datetime) -> KeyInfo:
        """Make a new key for ``purpose`` and make it the active one.

        The previously active key of that purpose is retired at ``now`` but kept, so what it
        signed keeps verifying through :meth:`verification_keys`.
        """
        return self._generate(KeyPurpose(purpose), aware_utc(now, "now"), require_active=False)

    def rotate(self, purpose: KeyPurpose, *, now: dt.datetime) -> KeyInfo:
        """:meth:`generate`, for a purpose that must already have an active key."""
        return self._generate(KeyPurpose(purpose), aware_utc(now, "now"), require_active=True)

    def _generate(self, purpose: KeyPurpose, now: dt.datetime, *, require_active: bool) -> KeyInfo:
        algorithm = PURPOSE_ALGORITHM[purpose]
        secret = new_secret(algorithm)
        public = public_key_bytes(algorithm, secret)
        kid = kid_for(public if public is not None else secrets.token_bytes(16))
        info = KeyInfo(
            kid=kid,
            purpose=purpose,
            algorithm=algorithm,
            created_at=now,
            retired_at=None,
            public_key_b64=None if public is None else b64(public),
        )
        with self._locked():
            if require_active:
                self.active(purpose)
            entries = [
                replace(e, info=replace(e.info, retired_at=now))
                if e.info.purpose == purpose and e.info.retired_at is None
                else e
                for e in self._state.entries
            ]
            if any(e.info.kid == kid for e in entries):  # pragma: no cover - 2**-64 odds
                raise KeystoreError("keystore: generate failed: kid collision; try again")
            entries.append(KeyEntry(info, secret))
            self._commit(tuple(entries))
        return info

    def prune(self, purpose: KeyPurpose, *, now: dt.datetime, grace: dt.timedelta) -> list[str]:
        """Delete retired keys of ``purpose`` whose grace has passed; returns their kids.

        Refused for checkpoint keys (old checkpoints must stay verifiable) and chain
        accounts (a retired account may still hold funds).
        """
        purpose = KeyPurpose(purpose)
        now = aware_utc(now, "now")
        if grace < dt.timedelta(0):
            raise ValueError("keystore: grace must not be negative")
        if purpose not in PRUNABLE_PURPOSES:
            raise KeystoreError(
                f"keystore: prune refused: {purpose} keys are kept forever "
                + (
                    "(historical checkpoints must stay verifiable)"
                    if purpose == KeyPurpose.CHECKPOINT
                    else "(a retired account may still hold funds)"
                )
            )
        with self._locked():
            keep: list[KeyEntry] = []
            removed: list[str] = []
            for entry in self._state.entries:
                info = entry.info
                if (
                    info.purpose == purpose
                    and info.retired_at is not None
                    and info.retired_at + grace <= now
                ):
                    removed.append(info.kid)
                else:
                    keep.append(entry)
            if removed:
                self._commit(tuple(keep))
        return removed

    def put_secret(
        self, name: str, value: bytes, *, provider: str | None, now: dt.datetime
    ) -> SecretInfo:
        """Store ``value`` as the named secret ``name``, replacing one of that name (an old
        password is of no use once changed, so none is kept). ``provider`` binds it to the
        sources of that one dataset provider."""
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
            raise KeystoreError(
                f"keystore: secret name {name!r} is invalid: use 1-64 lower-case letters, "
                "digits, '.', '-', '_'"
            )
        if not 1 <= len(value) <= MAX_NAMED_SECRET_BYTES:
            raise KeystoreError(
                f"keystore: a secret holds 1 to {MAX_NAMED_SECRET_BYTES} bytes; "
                f"{name} would hold {len(value)}"
            )
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise KeystoreError(f"keystore: secret {name} must be UTF-8 text") from None
        if provider is not None:
            provider = provider.strip()
            if not provider or len(provider) > MAX_PROVIDER_CHARS:
                raise KeystoreError(
                    f"keystore: a secret's provider is 1 to {MAX_PROVIDER_CHARS} characters"
                )
        info = SecretInfo(name=name, provider=provider, created_at=aware_utc(now, "now"))
        with self._locked():
            named = tuple(item for item in self._state.named if item.info.name != name)
            self._commit(self._state.entries, (*named, NamedSecret(info, bytes(value))))
        return info

    def delete_secret(self, name: str) -> bool:
        """Remove the named secret ``name``; whether there was one."""
        with self._locked():
            named = tuple(item for item in self._state.named if item.info.name != name)
            if len(named) == len(self._state.named):
                return False
            self._commit(self._state.entries, named)
        return True

    def save(self) -> None:
        """Write the in-memory state to disk atomically.

        Refuses if another process changed the file since this instance read it, since
        writing would silently undo that change.
        """
        with self._locked(reload=False):
            raw, _ = read_file(self._path)
            if sha256_digest(raw) != self._state.digest:
                raise KeystoreError(
                    f"keystore: save refused: {self._path} was changed by another process; "
                    "call reload_if_changed() and repeat the change"
                )
            self._commit(self._state.entries)

    @contextlib.contextmanager
    def _locked(self, *, reload: bool = True) -> Iterator[None]:
        """Hold the inter-process write lock, starting from the newest file contents."""
        lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise KeystoreError(
                f"keystore: cannot open lock file {lock_path}: {err.strerror}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if reload:
                self._refresh(force=True)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _commit(
        self, entries: tuple[KeyEntry, ...], named: tuple[NamedSecret, ...] | None = None
    ) -> None:
        state = replace(
            self._state, entries=entries, named=self._state.named if named is None else named
        )
        data = self._serialise(state)
        try:
            tmp = write_temp(self._path, data)
            try:
                os.replace(tmp, self._path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as err:
            raise KeystoreError(
                f"keystore: saving {self._path} failed: {err.strerror}; the file on disk is "
                "unchanged"
            ) from err
        try:
            file_id: FileId | None = FileId.of(self._path.stat())
        except OSError:
            file_id = None  # unknown: the next reload_if_changed() re-reads the file
        self._replace_state(replace(state, file_id=file_id, digest=sha256_digest(data)))
        try:
            fsync_dir(self._path.parent)
        except OSError as err:
            raise KeystoreError(
                f"keystore: {self._path} was written but syncing its directory failed "
                f"({err.strerror}); the change may not survive a crash, check the disk"
            ) from err

    def _serialise(self, state: KeystoreState) -> bytes:
        aes = AESGCM(state.kek)
        entries = []
        for entry in state.entries:
            metadata = key_metadata(entry.info)
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = aes.encrypt(nonce, entry.secret, entry_aad(metadata))
            entries.append({**metadata, "nonce": b64(nonce), "ciphertext": b64(sealed)})
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "kdf": state.kdf.to_json(),
            "verifier": state.verifier,
            "entries": entries,
        }
        if state.named:
            sealed_named = []
            for item in state.named:
                metadata = secret_metadata(item.info)
                nonce = secrets.token_bytes(NONCE_BYTES)
                sealed = aes.encrypt(nonce, item.value, secret_aad(metadata))
                sealed_named.append({**metadata, "nonce": b64(nonce), "ciphertext": b64(sealed)})
            document["secrets"] = sealed_named
        return (json.dumps(document, indent=2) + "\n").encode()
