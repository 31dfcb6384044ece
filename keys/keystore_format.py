"""The keystore file format: its constants, models, encoding and sealing helpers.

Kept apart from :class:`keys.keystore.Keystore` so that what is on disk (and what each
encryption binds) reads in one place, independent of how the store is used.

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
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)
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
    "MAX_NAMED_SECRET_BYTES",
    "MAX_PROVIDER_CHARS",
    "MAX_SCRYPT_MEMORY",
    "MAX_SCRYPT_N",
    "MIN_SCRYPT_N",
    "NONCE_BYTES",
    "PRUNABLE_PURPOSES",
    "PURPOSE_ALGORITHM",
    "SALT_BYTES",
    "SECRET_BYTES",
    "SECRET_NAME",
    "VERIFIER_MARKER",
    "VERSION",
    "Algorithm",
    "FileId",
    "KeyEntry",
    "KeyInfo",
    "KeyPurpose",
    "KeystoreState",
    "NamedSecret",
    "ScryptKdf",
    "SecretInfo",
    "aware_utc",
    "b64",
    "corrupt_error",
    "entry_aad",
    "header_aad",
    "key_metadata",
    "kid_for",
    "new_secret",
    "parse_time",
    "public_key_bytes",
    "secret_aad",
    "secret_metadata",
    "sha256_digest",
    "unb64",
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


PURPOSE_ALGORITHM: Final[Mapping[KeyPurpose, Algorithm]] = {
    KeyPurpose.TOKEN_SIGNING: "Ed25519",
    KeyPurpose.CHECKPOINT: "Ed25519",
    KeyPurpose.MARK: "HMAC-SHA256",
    KeyPurpose.CHAIN_ACCOUNT: "secp256k1",
}


# Retired checkpoint keys must keep verifying historical checkpoints, and a retired chain
# account may still hold funds, so only these purposes may ever be pruned.
PRUNABLE_PURPOSES: Final = frozenset({KeyPurpose.TOKEN_SIGNING, KeyPurpose.MARK})

VERIFIER_MARKER: Final = b"dsgw-keystore verifier v1"

_ENTRY_AAD_PREFIX: Final = b"dsgw-keystore entry v1\n"

SALT_BYTES: Final = 16

NONCE_BYTES: Final = 12

SECRET_BYTES: Final = 32


# Bounds on scrypt cost: the lower one keeps passphrases expensive to guess, the upper one
# stops a doctored file from making ``open`` allocate gigabytes.
MIN_SCRYPT_N: Final = 2**14

MAX_SCRYPT_N: Final = 2**20

MAX_SCRYPT_MEMORY: Final = 1 << 30

_KID_HEX: Final = 16

_SECRET_AAD_PREFIX: Final = b"dsgw-keystore secret v1\n"


#: Names of named secrets: what a dataset's ``keystore:NAME`` reference may say.
SECRET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

MAX_NAMED_SECRET_BYTES: Final = 4096

MAX_PROVIDER_CHARS: Final = 200


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
class NamedSecret:
    info: SecretInfo
    value: bytes = field(repr=False)  # never in a log line or traceback


@dataclass(frozen=True, slots=True)
class KeyEntry:
    info: KeyInfo
    secret: bytes = field(repr=False)  # never in a log line or traceback


@dataclass(frozen=True, slots=True)
class ScryptKdf:
    salt: bytes
    n: int
    r: int
    p: int

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "salt": b64(self.salt), "n": self.n, "r": self.r, "p": self.p}

    def derive(self, passphrase: bytes) -> bytes:
        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(passphrase)


@dataclass(frozen=True, slots=True)
class FileId:
    """What identifies one version of the file, to notice another process's write."""

    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class KeystoreState:
    kdf: ScryptKdf
    kek: bytes = field(repr=False)
    verifier: dict[str, str]
    entries: tuple[KeyEntry, ...]
    file_id: FileId | None
    digest: bytes
    """SHA-256 of the file as last read or written: the authority on "has it changed"."""
    named: tuple[NamedSecret, ...] = ()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str, path: Path) -> bytes:
    if not isinstance(value, str):
        raise corrupt_error(path, f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise corrupt_error(path, f"{what} is not valid base64") from err


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def aware_utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"keystore: {name} must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def _format_time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def parse_time(value: object, what: str, path: Path) -> dt.datetime:
    if not isinstance(value, str):
        raise corrupt_error(path, f"{what} must be an ISO 8601 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise corrupt_error(path, f"{what} is not an ISO 8601 time") from err
    if parsed.tzinfo is None:
        raise corrupt_error(path, f"{what} has no time zone")
    return parsed.astimezone(dt.UTC)


def corrupt_error(path: Path, detail: str) -> KeystoreError:
    return KeystoreError(f"keystore: {path} is corrupted ({detail}); restore it from a backup")


def sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def kid_for(public_bytes: bytes) -> str:
    return hashlib.sha256(public_bytes).hexdigest()[:_KID_HEX]


def header_aad(kdf: ScryptKdf) -> bytes:
    return _canonical({"format": FORMAT, "version": VERSION, "kdf": kdf.to_json()})


def key_metadata(info: KeyInfo) -> dict[str, Any]:
    return {
        "kid": info.kid,
        "purpose": info.purpose.value,
        "algorithm": info.algorithm,
        "created_at": _format_time(info.created_at),
        "retired_at": _format_time(info.retired_at),
        "public_key": info.public_key_b64,
    }


def entry_aad(metadata: Mapping[str, Any]) -> bytes:
    return _ENTRY_AAD_PREFIX + _canonical(metadata)


def secret_metadata(info: SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "provider": info.provider,
        "created_at": _format_time(info.created_at),
    }


def secret_aad(metadata: Mapping[str, Any]) -> bytes:
    return _SECRET_AAD_PREFIX + _canonical(metadata)


def public_key_bytes(algorithm: Algorithm, secret: bytes) -> bytes | None:
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


def new_secret(algorithm: Algorithm) -> bytes:
    if algorithm == "Ed25519":
        return Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
    if algorithm == "secp256k1":
        scalar = ec.generate_private_key(ec.SECP256K1()).private_numbers().private_value
        return scalar.to_bytes(SECRET_BYTES, "big")
    return secrets.token_bytes(SECRET_BYTES)
