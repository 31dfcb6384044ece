"""Reading a keystore file back: parse, check every field, and unseal the secrets.

The file is never trusted, so each field is checked before it is used and every secret is
decrypted under the AAD that binds its metadata; any mismatch is reported as corruption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import KeystoreError
from keys.keystore_format import (
    FORMAT,
    MAX_SCRYPT_MEMORY,
    MAX_SCRYPT_N,
    MIN_SCRYPT_N,
    PURPOSE_ALGORITHM,
    SALT_BYTES,
    SECRET_BYTES,
    SECRET_NAME,
    VERIFIER_MARKER,
    VERSION,
    FileId,
    KeyEntry,
    KeyInfo,
    KeyPurpose,
    KeystoreState,
    NamedSecret,
    ScryptKdf,
    SecretInfo,
    b64,
    corrupt_error,
    entry_aad,
    header_aad,
    kid_for,
    parse_time,
    public_key_bytes,
    secret_aad,
    sha256_digest,
    unb64,
)

__all__ = ["check_scrypt", "load_state"]


def check_scrypt(n: int, r: int, p: int, path: Path) -> None:
    if not (
        MIN_SCRYPT_N <= n <= MAX_SCRYPT_N
        and n & (n - 1) == 0
        and 1 <= r <= 32
        and 1 <= p <= 16
        and 128 * n * r <= MAX_SCRYPT_MEMORY
    ):
        raise KeystoreError(
            f"keystore: scrypt parameters n={n} r={r} p={p} for {path} are out of range "
            f"(n must be a power of two in [2**14, 2**20], r in [1, 32], p in [1, 16])"
        )


def load_state(
    path: Path, raw: bytes, passphrase: bytes, file_id: FileId, known: KeystoreState | None
) -> KeystoreState:
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
        raise corrupt_error(path, "verifier must be an object with nonce and ciphertext")
    nonce = unb64(verifier["nonce"], "verifier nonce", path)
    sealed = unb64(verifier["ciphertext"], "verifier ciphertext", path)
    try:
        marker = AESGCM(kek).decrypt(nonce, sealed, header_aad(kdf))
    except (InvalidTag, ValueError):
        marker = b""
    if marker != VERIFIER_MARKER:
        raise KeystoreError(
            f"keystore: wrong passphrase or corrupted file {path}: the passphrase check did "
            "not decrypt; check DSGW_KEYSTORE_PASSPHRASE or the passphrase file"
        )

    items = document.get("entries")
    if not isinstance(items, list):
        raise corrupt_error(path, "entries must be a list")
    entries = tuple(_parse_entry(item, index, kek, path) for index, item in enumerate(items))
    kids = [entry.info.kid for entry in entries]
    if len(set(kids)) != len(kids):
        raise corrupt_error(path, "a kid appears twice")
    for purpose in KeyPurpose:
        active = [e for e in entries if e.info.purpose == purpose and e.info.retired_at is None]
        if len(active) > 1:
            raise corrupt_error(path, f"more than one active {purpose} key")
    named = _parse_named(document.get("secrets", []), kek, path)
    return KeystoreState(kdf, kek, dict(verifier), entries, file_id, sha256_digest(raw), named)


_SECRET_KEYS: Final = frozenset({"name", "provider", "created_at", "nonce", "ciphertext"})


def _parse_named(items: object, kek: bytes, path: Path) -> tuple[NamedSecret, ...]:
    if not isinstance(items, list):
        raise corrupt_error(path, "secrets must be a list")
    named: list[NamedSecret] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != _SECRET_KEYS:
            raise corrupt_error(path, f"secret {index} must have exactly {sorted(_SECRET_KEYS)}")
        name, provider = item["name"], item["provider"]
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
            raise corrupt_error(path, f"secret {index}: invalid name")
        if provider is not None and not isinstance(provider, str):
            raise corrupt_error(path, f"secret {name}: provider must be a string or null")
        created_at = parse_time(item["created_at"], f"secret {name} created_at", path)
        nonce = unb64(item["nonce"], f"secret {name} nonce", path)
        sealed = unb64(item["ciphertext"], f"secret {name} ciphertext", path)
        metadata = {key: item[key] for key in ("name", "provider", "created_at")}
        try:
            value = AESGCM(kek).decrypt(nonce, sealed, secret_aad(metadata))
        except (InvalidTag, ValueError) as err:
            raise KeystoreError(
                f"keystore: secret {name} in {path} failed authentication: it was modified, "
                "renamed or given to another provider; restore the file from a backup"
            ) from err
        named.append(NamedSecret(SecretInfo(name, provider, created_at), value))
    names = [item.info.name for item in named]
    if len(set(names)) != len(names):
        raise corrupt_error(path, "a secret name appears twice")
    return tuple(named)


def _parse_kdf(value: object, path: Path) -> ScryptKdf:
    if not isinstance(value, dict) or value.get("name") != "scrypt":
        raise corrupt_error(path, "kdf must be an object with name 'scrypt'")
    n, r, p = (_int(value.get(name), f"kdf {name}", path) for name in ("n", "r", "p"))
    check_scrypt(n, r, p, path)
    salt = unb64(value.get("salt"), "kdf salt", path)
    if len(salt) < SALT_BYTES:
        raise corrupt_error(path, "kdf salt is too short")
    return ScryptKdf(salt=salt, n=n, r=r, p=p)


def _int(value: object, what: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise corrupt_error(path, f"{what} must be an integer")
    return value


_ENTRY_KEYS: Final = frozenset(
    {"kid", "purpose", "algorithm", "created_at", "retired_at", "public_key", "nonce", "ciphertext"}
)


def _parse_entry(item: object, index: int, kek: bytes, path: Path) -> KeyEntry:
    if not isinstance(item, dict) or set(item) != _ENTRY_KEYS:
        raise corrupt_error(path, f"entry {index} must have exactly {sorted(_ENTRY_KEYS)}")
    kid = item["kid"]
    label = f"entry {index} (kid {kid!r})"
    if not isinstance(kid, str):
        raise corrupt_error(path, f"{label}: kid must be a string")
    try:
        purpose = KeyPurpose(item["purpose"])
    except ValueError as err:
        raise corrupt_error(path, f"{label}: unknown purpose {item['purpose']!r}") from err
    algorithm = PURPOSE_ALGORITHM[purpose]
    if item["algorithm"] != algorithm:
        raise corrupt_error(path, f"{label}: {purpose} keys must be {algorithm}")
    created_at = parse_time(item["created_at"], f"{label} created_at", path)
    retired_at = (
        None
        if item["retired_at"] is None
        else parse_time(item["retired_at"], f"{label} retired_at", path)
    )
    public_b64 = item["public_key"]
    if public_b64 is not None and not isinstance(public_b64, str):
        raise corrupt_error(path, f"{label}: public_key must be a string or null")
    nonce = unb64(item["nonce"], f"{label} nonce", path)
    sealed = unb64(item["ciphertext"], f"{label} ciphertext", path)
    metadata = {name: item[name] for name in _ENTRY_KEYS - {"nonce", "ciphertext"}}
    try:
        secret = AESGCM(kek).decrypt(nonce, sealed, entry_aad(metadata))
    except (InvalidTag, ValueError) as err:
        raise KeystoreError(
            f"keystore: {label} in {path} failed authentication: it was modified, moved or "
            "relabelled; restore the file from a backup"
        ) from err
    if len(secret) != SECRET_BYTES:
        raise corrupt_error(path, f"{label}: secret has the wrong length")
    try:
        public = public_key_bytes(algorithm, secret)
    except ValueError as err:
        raise corrupt_error(path, f"{label}: secret is not a valid {algorithm} key") from err
    if public is not None and (public_b64 != b64(public) or kid != kid_for(public)):
        raise corrupt_error(path, f"{label}: kid or public key does not match the private key")
    if public is None and public_b64 is not None:
        raise corrupt_error(path, f"{label}: a {purpose} key has no public key")
    info = KeyInfo(kid, purpose, algorithm, created_at, retired_at, public_b64)
    return KeyEntry(info, secret)
