"""An encrypted-at-rest keystore kept in one JSON file.

The gateway's long-lived secrets (token-signing and checkpoint keys, the mark secret, the
anchoring worker's chain accounts) live in a single file so that backup, rotation and
permissions concern exactly one path. The file is never trusted: every secret is
authenticated encryption, and every piece of clear metadata that decides how a secret is
used is bound into that encryption.

File format (version 1)::

    {
      "format": "dsgw-keystore",
      "version": 1,
      "kdf": {"name": "scrypt", "salt": "<b64>", "n": 32768, "r": 8, "p": 1},
      "verifier": {"nonce": "<b64>", "ciphertext": "<b64>"},
      "entries": [
        {"kid": "3f0c...", "purpose": "token-signing", "algorithm": "Ed25519",
         "created_at": "2025-01-01T00:00:00+00:00", "retired_at": null,
         "public_key": "<b64>", "nonce": "<b64>", "ciphertext": "<b64>"},
        ...
      ]
    }

``<b64>`` is standard base64 with padding (RFC 4648 §4).

Named secrets (source passwords, ``dsgw secrets set``) sit beside the keys in an optional
``secrets`` list, present only when there is one::

      "secrets": [
        {"name": "hr-db", "provider": "市人力资源和社会保障局",
         "created_at": "2025-01-01T00:00:00+00:00", "nonce": "<b64>", "ciphertext": "<b64>"}
      ]

* each named secret: AES-256-GCM encryption of its value (1 to 4096 bytes of UTF-8 text)
  under the same KEK; its AAD is ``b"dsgw-keystore secret v1\n"`` followed by the canonical
  JSON of ``name``, ``provider`` and ``created_at``, so a secret cannot be renamed or handed
  to another provider without the passphrase. ``provider`` (or ``null``) is the only
  dataset provider whose sources may use it.

* KEK: ``scrypt(passphrase, salt, n, r, p)`` → 32 bytes, used as an AES-256-GCM key. The salt
  is 16 random bytes chosen at :meth:`Keystore.create`.
* ``verifier``: AES-256-GCM encryption of the fixed marker ``b"dsgw-keystore verifier v1"``
  with a random 96-bit nonce; its AAD is the canonical JSON of ``format``, ``version`` and
  ``kdf``. A wrong passphrase fails here, so it is reported as such instead of as a broken
  entry.
* each entry: AES-256-GCM encryption of the raw secret (Ed25519: the 32-byte private seed;
  ``mark``: 32 random bytes; ``chain-account``: the 32-byte big-endian secp256k1 private
  scalar) with a random 96-bit nonce. Its AAD is ``b"dsgw-keystore entry v1\\n"`` followed by
  the canonical JSON (sorted keys, no spaces) of ``kid``, ``purpose``, ``algorithm``,
  ``created_at``, ``retired_at`` and ``public_key`` exactly as stored. Entries therefore cannot
  be swapped, relabelled (e.g. a mark secret presented as a signing key) or un-retired
  without the passphrase. Entries are re-encrypted with fresh nonces on every save.
* ``public_key``: Ed25519 raw 32 bytes; secp256k1 uncompressed SEC1 point (65 bytes,
  ``04 || X || Y``, what Ethereum addresses are derived from); ``null`` for ``mark``.
* ``kid``: the first 16 hex characters of SHA-256 over the raw public key bytes above, so a
  kid names its key across processes and cannot be attached to another key (checked on
  open). A ``mark`` secret has no public part and its kid must not be derived from the
  secret (the kid is public), so it is the same digest taken over 16 random bytes.

All times are passed in by the caller (timezone-aware), never read from the clock here, so
rotation and grace windows are tested by moving time.

Writes are atomic (temporary file in the same directory, fsync, ``os.replace``, fsync of the
directory) with mode 0600. Mutations take an advisory ``flock`` on ``<file>.lock`` and first
pick up changes written by another process, so a CLI rotation and a running gateway do not
overwrite each other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from gateway.errors import KeystoreError

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

FORMAT: Final = "dsgw-keystore"
VERSION: Final = 1

Algorithm = Literal["Ed25519", "HMAC-SHA256", "secp256k1"]


class KeyPurpose(StrEnum):
    TOKEN_SIGNING = "token-signing"  # noqa: S105 - a label, not a password
    CHECKPOINT = "checkpoint"
    MARK = "mark"
    """HMAC secret from which keyed digests are derived."""
    CHAIN_ACCOUNT = "chain-account"
    """secp256k1 private key of an Ethereum account used for anchoring."""


_ALGORITHM: Final[Mapping[KeyPurpose, Algorithm]] = {
    KeyPurpose.TOKEN_SIGNING: "Ed25519",
    KeyPurpose.CHECKPOINT: "Ed25519",
    KeyPurpose.MARK: "HMAC-SHA256",
    KeyPurpose.CHAIN_ACCOUNT: "secp256k1",
}

# Retired checkpoint keys must keep verifying historical checkpoints, and a retired chain
# account may still hold funds, so only these purposes may ever be pruned.
_PRUNABLE: Final = frozenset({KeyPurpose.TOKEN_SIGNING, KeyPurpose.MARK})

_VERIFIER_MARKER: Final = b"dsgw-keystore verifier v1"
_ENTRY_AAD_PREFIX: Final = b"dsgw-keystore entry v1\n"
_SALT_BYTES: Final = 16
_NONCE_BYTES: Final = 12
_SECRET_BYTES: Final = 32
# Bounds on scrypt cost: the lower one keeps passphrases expensive to guess, the upper one
# stops a doctored file from making ``open`` allocate gigabytes.
_MIN_SCRYPT_N: Final = 2**14
_MAX_SCRYPT_N: Final = 2**20
_MAX_SCRYPT_MEMORY: Final = 1 << 30
_KID_HEX: Final = 16
_SECRET_AAD_PREFIX: Final = b"dsgw-keystore secret v1\n"
#: Names of named secrets: what a dataset's ``keystore:NAME`` reference may say.
SECRET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_NAMED_SECRET_BYTES: Final = 4096
_MAX_PROVIDER_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Public metadata of one key; never carries secret material."""

    kid: str
    purpose: KeyPurpose
    algorithm: Algorithm
    created_at: dt.datetime
    retired_at: dt.datetime | None
    public_key_b64: str | None

    @property
    def is_active(self) -> bool:
        return self.retired_at is None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """Public metadata of one named secret; never carries its value."""

    name: str
    # The one dataset provider whose sources may use it; None: any provider.
    provider: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Named:
    info: SecretInfo
    value: bytes = field(repr=False)  # never in a log line or traceback


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    secret: bytes = field(repr=False)  # never in a log line or traceback


@dataclass(frozen=True, slots=True)
class _Kdf:
    salt: bytes
    n: int
    r: int
    p: int

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "salt": _b64(self.salt), "n": self.n, "r": self.r, "p": self.p}

    def derive(self, passphrase: bytes) -> bytes:
        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(passphrase)


@dataclass(frozen=True, slots=True)
class _FileId:
    """What identifies one version of the file, to notice another process's write."""

    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _FileId:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class _State:
    kdf: _Kdf
    kek: bytes = field(repr=False)
    verifier: dict[str, str]
    entries: tuple[_Entry, ...]
    file_id: _FileId | None
    digest: bytes
    """SHA-256 of the file as last read or written: the authority on "has it changed"."""
    named: tuple[_Named, ...] = ()


# -- encoding helpers -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, path: Path) -> bytes:
    if not isinstance(value, str):
        raise _corrupt(path, f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise _corrupt(path, f"{what} is not valid base64") from err


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _time(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"keystore: {name} must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def _format_time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: object, what: str, path: Path) -> dt.datetime:
    if not isinstance(value, str):
        raise _corrupt(path, f"{what} must be an ISO 8601 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise _corrupt(path, f"{what} is not an ISO 8601 time") from err
    if parsed.tzinfo is None:
        raise _corrupt(path, f"{what} has no time zone")
    return parsed.astimezone(dt.UTC)


def _corrupt(path: Path, detail: str) -> KeystoreError:
    return KeystoreError(f"keystore: {path} is corrupted ({detail}); restore it from a backup")


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _kid_for(public_bytes: bytes) -> str:
    return hashlib.sha256(public_bytes).hexdigest()[:_KID_HEX]


def _header_aad(kdf: _Kdf) -> bytes:
    return _canonical({"format": FORMAT, "version": VERSION, "kdf": kdf.to_json()})


def _metadata(info: KeyInfo) -> dict[str, Any]:
    return {
        "kid": info.kid,
        "purpose": info.purpose.value,
        "algorithm": info.algorithm,
        "created_at": _format_time(info.created_at),
        "retired_at": _format_time(info.retired_at),
        "public_key": info.public_key_b64,
    }


def _entry_aad(metadata: Mapping[str, Any]) -> bytes:
    return _ENTRY_AAD_PREFIX + _canonical(metadata)


def _secret_metadata(info: SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "provider": info.provider,
        "created_at": _format_time(info.created_at),
    }


def _secret_aad(metadata: Mapping[str, Any]) -> bytes:
    return _SECRET_AAD_PREFIX + _canonical(metadata)


# -- key material ---------------------------------------------------------------------------


def _public_bytes(algorithm: Algorithm, secret: bytes) -> bytes | None:
    """The public key stored beside a secret, recomputed so the file cannot lie about it."""
    if algorithm == "Ed25519":
        return (
            Ed25519PrivateKey.from_private_bytes(secret)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
    if algorithm == "secp256k1":
        private = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())
        return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return None


def _new_secret(algorithm: Algorithm) -> bytes:
    if algorithm == "Ed25519":
        return Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
    if algorithm == "secp256k1":
        scalar = ec.generate_private_key(ec.SECP256K1()).private_numbers().private_value
        return scalar.to_bytes(_SECRET_BYTES, "big")
    return secrets.token_bytes(_SECRET_BYTES)


# -- file I/O -------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
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


def _create_file(path: Path, data: bytes) -> None:
    """Create ``path`` (and a 0700 parent) holding ``data``; never replaces an existing file."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    tmp = _write_temp(path, data)
    try:
        # link() fails if the name exists, so two racing creators cannot clobber each other.
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(parent)


# -- the keystore ---------------------------------------------------------------------------


class Keystore:
    """Keys of one gateway, decrypted into memory on open and saved on every change.

    Instances are made with :meth:`create` or :meth:`open`. Reads work on an immutable
    snapshot that a reload replaces in one assignment, so a concurrent
    :meth:`reload_if_changed` never shows a half-loaded store.
    """

    def __init__(self, path: Path, passphrase: bytes, state: _State) -> None:
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
        _check_scrypt(scrypt_n, 8, 1, path)
        if path.exists():
            raise KeystoreError(
                f"keystore: create refused: {path} already exists; open it instead, or move "
                "it away if you really mean to start with new keys"
            )
        kdf = _Kdf(salt=secrets.token_bytes(_SALT_BYTES), n=scrypt_n, r=8, p=1)
        kek = kdf.derive(passphrase)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(kek).encrypt(nonce, _VERIFIER_MARKER, _header_aad(kdf))
        verifier = {"nonce": _b64(nonce), "ciphertext": _b64(sealed)}
        store = cls(path, passphrase, _State(kdf, kek, verifier, (), None, b""))
        data = store._serialise(store._state)
        try:
            _create_file(path, data)
            file_id = _FileId.of(path.stat())
        except FileExistsError as err:
            raise KeystoreError(
                f"keystore: create refused: {path} was created by someone else meanwhile"
            ) from err
        except OSError as err:
            raise KeystoreError(
                f"keystore: cannot create {path}: {err.strerror}"
                + (f" ({err.filename})" if err.filename else "")
            ) from err
        store._state = replace(store._state, file_id=file_id, digest=_digest(data))
        return store

    @classmethod
    def open(cls, path: Path, passphrase: bytes) -> Keystore:
        """Open and fully verify the keystore at ``path``.

        Every entry is decrypted now, so a tampered file is refused at start-up rather than
        at the first token request.
        """
        raw, file_id = _read(path)
        state = _load(path, raw, passphrase, file_id, known=None)
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
            current = _FileId.of(self._path.stat())
        except FileNotFoundError as err:
            raise KeystoreError(
                f"keystore: {self._path} has disappeared; restore it from a backup"
            ) from err
        if current == self._state.file_id and not force:
            return False
        raw, file_id = _read(self._path)
        if _digest(raw) == self._state.digest:
            self._state = replace(self._state, file_id=file_id)
            return False
        self._replace_state(_load(self._path, raw, self._passphrase, file_id, self._state))
        return True

    def _replace_state(self, state: _State) -> None:
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
        now = _time(now, "now")
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

    def _entry(self, kid: str, algorithm: Algorithm, what: str) -> _Entry:
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
        return self._generate(KeyPurpose(purpose), _time(now, "now"), require_active=False)

    def rotate(self, purpose: KeyPurpose, *, now: dt.datetime) -> KeyInfo:
        """:meth:`generate`, for a purpose that must already have an active key."""
        return self._generate(KeyPurpose(purpose), _time(now, "now"), require_active=True)

    def _generate(self, purpose: KeyPurpose, now: dt.datetime, *, require_active: bool) -> KeyInfo:
        algorithm = _ALGORITHM[purpose]
        secret = _new_secret(algorithm)
        public = _public_bytes(algorithm, secret)
        kid = _kid_for(public if public is not None else secrets.token_bytes(16))
        info = KeyInfo(
            kid=kid,
            purpose=purpose,
            algorithm=algorithm,
            created_at=now,
            retired_at=None,
            public_key_b64=None if public is None else _b64(public),
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
            entries.append(_Entry(info, secret))
            self._commit(tuple(entries))
        return info

    def prune(self, purpose: KeyPurpose, *, now: dt.datetime, grace: dt.timedelta) -> list[str]:
        """Delete retired keys of ``purpose`` whose grace has passed; returns their kids.

        Refused for checkpoint keys (old checkpoints must stay verifiable) and chain
        accounts (a retired account may still hold funds).
        """
        purpose = KeyPurpose(purpose)
        now = _time(now, "now")
        if grace < dt.timedelta(0):
            raise ValueError("keystore: grace must not be negative")
        if purpose not in _PRUNABLE:
            raise KeystoreError(
                f"keystore: prune refused: {purpose} keys are kept forever "
                + (
                    "(historical checkpoints must stay verifiable)"
                    if purpose == KeyPurpose.CHECKPOINT
                    else "(a retired account may still hold funds)"
                )
            )
        with self._locked():
            keep: list[_Entry] = []
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
        if not 1 <= len(value) <= _MAX_NAMED_SECRET_BYTES:
            raise KeystoreError(
                f"keystore: a secret holds 1 to {_MAX_NAMED_SECRET_BYTES} bytes; "
                f"{name} would hold {len(value)}"
            )
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise KeystoreError(f"keystore: secret {name} must be UTF-8 text") from None
        if provider is not None:
            provider = provider.strip()
            if not provider or len(provider) > _MAX_PROVIDER_CHARS:
                raise KeystoreError(
                    f"keystore: a secret's provider is 1 to {_MAX_PROVIDER_CHARS} characters"
                )
        info = SecretInfo(name=name, provider=provider, created_at=_time(now, "now"))
        with self._locked():
            named = tuple(item for item in self._state.named if item.info.name != name)
            self._commit(self._state.entries, (*named, _Named(info, bytes(value))))
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
            raw, _ = _read(self._path)
            if _digest(raw) != self._state.digest:
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

    def _commit(self, entries: tuple[_Entry, ...], named: tuple[_Named, ...] | None = None) -> None:
        state = replace(
            self._state, entries=entries, named=self._state.named if named is None else named
        )
        data = self._serialise(state)
        try:
            tmp = _write_temp(self._path, data)
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
            file_id: _FileId | None = _FileId.of(self._path.stat())
        except OSError:
            file_id = None  # unknown: the next reload_if_changed() re-reads the file
        self._replace_state(replace(state, file_id=file_id, digest=_digest(data)))
        try:
            _fsync_dir(self._path.parent)
        except OSError as err:
            raise KeystoreError(
                f"keystore: {self._path} was written but syncing its directory failed "
                f"({err.strerror}); the change may not survive a crash, check the disk"
            ) from err

    def _serialise(self, state: _State) -> bytes:
        aes = AESGCM(state.kek)
        entries = []
        for entry in state.entries:
            metadata = _metadata(entry.info)
            nonce = secrets.token_bytes(_NONCE_BYTES)
            sealed = aes.encrypt(nonce, entry.secret, _entry_aad(metadata))
            entries.append({**metadata, "nonce": _b64(nonce), "ciphertext": _b64(sealed)})
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
                metadata = _secret_metadata(item.info)
                nonce = secrets.token_bytes(_NONCE_BYTES)
                sealed = aes.encrypt(nonce, item.value, _secret_aad(metadata))
                sealed_named.append({**metadata, "nonce": _b64(nonce), "ciphertext": _b64(sealed)})
            document["secrets"] = sealed_named
        return (json.dumps(document, indent=2) + "\n").encode()


# -- loading --------------------------------------------------------------------------------


def _read(path: Path) -> tuple[bytes, _FileId]:
    try:
        with path.open("rb") as handle:
            file_id = _FileId.of(os.fstat(handle.fileno()))
            return handle.read(), file_id
    except FileNotFoundError as err:
        raise KeystoreError(
            f"keystore: {path} does not exist; run `dsgw init` to create it"
        ) from err
    except OSError as err:
        raise KeystoreError(f"keystore: cannot read {path}: {err.strerror}") from err


def _check_scrypt(n: int, r: int, p: int, path: Path) -> None:
    if not (
        _MIN_SCRYPT_N <= n <= _MAX_SCRYPT_N
        and n & (n - 1) == 0
        and 1 <= r <= 32
        and 1 <= p <= 16
        and 128 * n * r <= _MAX_SCRYPT_MEMORY
    ):
        raise KeystoreError(
            f"keystore: scrypt parameters n={n} r={r} p={p} for {path} are out of range "
            f"(n must be a power of two in [2**14, 2**20], r in [1, 32], p in [1, 16])"
        )


def _load(
    path: Path, raw: bytes, passphrase: bytes, file_id: _FileId, known: _State | None
) -> _State:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KeystoreError(
            f"keystore: {path} is not valid JSON ({err}); restore it from a backup"
        ) from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeystoreError(f"keystore: {path} is not a dsgw keystore (format is not {FORMAT!r})")
    version = document.get("version")
    if version != VERSION:
        raise KeystoreError(
            f"keystore: {path} has version {version!r} but this dsgw reads version {VERSION}; "
            "use a dsgw release that matches the file"
        )
    kdf = _parse_kdf(document.get("kdf"), path)
    kek = known.kek if known is not None and known.kdf == kdf else kdf.derive(passphrase)

    verifier = document.get("verifier")
    if not isinstance(verifier, dict) or set(verifier) != {"nonce", "ciphertext"}:
        raise _corrupt(path, "verifier must be an object with nonce and ciphertext")
    nonce = _unb64(verifier["nonce"], "verifier nonce", path)
    sealed = _unb64(verifier["ciphertext"], "verifier ciphertext", path)
    try:
        marker = AESGCM(kek).decrypt(nonce, sealed, _header_aad(kdf))
    except (InvalidTag, ValueError):
        marker = b""
    if marker != _VERIFIER_MARKER:
        raise KeystoreError(
            f"keystore: wrong passphrase or corrupted file {path}: the passphrase check did "
            "not decrypt; check DSGW_KEYSTORE_PASSPHRASE or the passphrase file"
        )

    items = document.get("entries")
    if not isinstance(items, list):
        raise _corrupt(path, "entries must be a list")
    entries = tuple(_parse_entry(item, index, kek, path) for index, item in enumerate(items))
    kids = [entry.info.kid for entry in entries]
    if len(set(kids)) != len(kids):
        raise _corrupt(path, "a kid appears twice")
    for purpose in KeyPurpose:
        active = [e for e in entries if e.info.purpose == purpose and e.info.retired_at is None]
        if len(active) > 1:
            raise _corrupt(path, f"more than one active {purpose} key")
    named = _parse_named(document.get("secrets", []), kek, path)
    return _State(kdf, kek, dict(verifier), entries, file_id, _digest(raw), named)


_SECRET_KEYS: Final = frozenset({"name", "provider", "created_at", "nonce", "ciphertext"})


def _parse_named(items: object, kek: bytes, path: Path) -> tuple[_Named, ...]:
    if not isinstance(items, list):
        raise _corrupt(path, "secrets must be a list")
    named: list[_Named] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != _SECRET_KEYS:
            raise _corrupt(path, f"secret {index} must have exactly {sorted(_SECRET_KEYS)}")
        name, provider = item["name"], item["provider"]
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
            raise _corrupt(path, f"secret {index}: invalid name")
        if provider is not None and not isinstance(provider, str):
            raise _corrupt(path, f"secret {name}: provider must be a string or null")
        created_at = _parse_time(item["created_at"], f"secret {name} created_at", path)
        nonce = _unb64(item["nonce"], f"secret {name} nonce", path)
        sealed = _unb64(item["ciphertext"], f"secret {name} ciphertext", path)
        metadata = {key: item[key] for key in ("name", "provider", "created_at")}
        try:
            value = AESGCM(kek).decrypt(nonce, sealed, _secret_aad(metadata))
        except (InvalidTag, ValueError) as err:
            raise KeystoreError(
                f"keystore: secret {name} in {path} failed authentication: it was modified, "
                "renamed or given to another provider; restore the file from a backup"
            ) from err
        named.append(_Named(SecretInfo(name, provider, created_at), value))
    names = [item.info.name for item in named]
    if len(set(names)) != len(names):
        raise _corrupt(path, "a secret name appears twice")
    return tuple(named)


def _parse_kdf(value: object, path: Path) -> _Kdf:
    if not isinstance(value, dict) or value.get("name") != "scrypt":
        raise _corrupt(path, "kdf must be an object with name 'scrypt'")
    n, r, p = (_int(value.get(name), f"kdf {name}", path) for name in ("n", "r", "p"))
    _check_scrypt(n, r, p, path)
    salt = _unb64(value.get("salt"), "kdf salt", path)
    if len(salt) < _SALT_BYTES:
        raise _corrupt(path, "kdf salt is too short")
    return _Kdf(salt=salt, n=n, r=r, p=p)


def _int(value: object, what: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _corrupt(path, f"{what} must be an integer")
    return value


_ENTRY_KEYS: Final = frozenset(
    {"kid", "purpose", "algorithm", "created_at", "retired_at", "public_key", "nonce", "ciphertext"}
)


def _parse_entry(item: object, index: int, kek: bytes, path: Path) -> _Entry:
    if not isinstance(item, dict) or set(item) != _ENTRY_KEYS:
        raise _corrupt(path, f"entry {index} must have exactly {sorted(_ENTRY_KEYS)}")
    kid = item["kid"]
    label = f"entry {index} (kid {kid!r})"
    if not isinstance(kid, str):
        raise _corrupt(path, f"{label}: kid must be a string")
    try:
        purpose = KeyPurpose(item["purpose"])
    except ValueError as err:
        raise _corrupt(path, f"{label}: unknown purpose {item['purpose']!r}") from err
    algorithm = _ALGORITHM[purpose]
    if item["algorithm"] != algorithm:
        raise _corrupt(path, f"{label}: {purpose} keys must be {algorithm}")
    created_at = _parse_time(item["created_at"], f"{label} created_at", path)
    retired_at = (
        None
        if item["retired_at"] is None
        else _parse_time(item["retired_at"], f"{label} retired_at", path)
    )
    public_b64 = item["public_key"]
    if public_b64 is not None and not isinstance(public_b64, str):
        raise _corrupt(path, f"{label}: public_key must be a string or null")
    nonce = _unb64(item["nonce"], f"{label} nonce", path)
    sealed = _unb64(item["ciphertext"], f"{label} ciphertext", path)
    metadata = {name: item[name] for name in _ENTRY_KEYS - {"nonce", "ciphertext"}}
    try:
        secret = AESGCM(kek).decrypt(nonce, sealed, _entry_aad(metadata))
    except (InvalidTag, ValueError) as err:
        raise KeystoreError(
            f"keystore: {label} in {path} failed authentication: it was modified, moved or "
            "relabelled; restore the file from a backup"
        ) from err
    if len(secret) != _SECRET_BYTES:
        raise _corrupt(path, f"{label}: secret has the wrong length")
    try:
        public = _public_bytes(algorithm, secret)
    except ValueError as err:
        raise _corrupt(path, f"{label}: secret is not a valid {algorithm} key") from err
    if public is not None and (public_b64 != _b64(public) or kid != _kid_for(public)):
        raise _corrupt(path, f"{label}: kid or public key does not match the private key")
    if public is None and public_b64 is not None:
        raise _corrupt(path, f"{label}: a {purpose} key has no public key")
    info = KeyInfo(kid, purpose, algorithm, created_at, retired_at, public_b64)
    return _Entry(info, secret)
