"""The encrypted keystore, its passphrase sources and JWK encoding."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.errors import KeystoreError, ValidationError
from keys.jwk import ed25519_jwk, jwk_to_public_key, jwks
from keys.keystore import KeyPurpose, Keystore
from keys.passphrase import create_passphrase_file, load_passphrase

PASS = b"correct horse battery staple"
T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
FAST = 2**14


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keystore.json"


@pytest.fixture
def store(path: Path) -> Keystore:
    ks = Keystore.create(path, PASS, scrypt_n=FAST)
    for purpose in KeyPurpose:
        ks.generate(purpose, now=T0)
    return ks


def _doc(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


def _entry(doc: dict[str, Any], purpose: KeyPurpose) -> dict[str, Any]:
    return dict(next(e for e in doc["entries"] if e["purpose"] == purpose.value))


# -- round trip and format ------------------------------------------------------------------


def test_round_trip(store: Keystore, path: Path) -> None:
    reopened = Keystore.open(path, PASS)
    assert reopened.entries() == store.entries()
    assert len(store.entries()) == len(KeyPurpose)

    info = reopened.active(KeyPurpose.TOKEN_SIGNING)
    signature = reopened.signing_key(info.kid).sign(b"payload")
    store.public_key(info.kid).verify(signature, b"payload")
    raw_public = reopened.public_key(info.kid).public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert info.public_key_b64 == base64.b64encode(raw_public).decode()
    assert info.kid == hashlib.sha256(raw_public).hexdigest()[:16]
    assert info.algorithm == "Ed25519"
    assert info.is_active
    assert info.created_at == T0

    mark = reopened.active(KeyPurpose.MARK)
    assert mark.algorithm == "HMAC-SHA256"
    assert mark.public_key_b64 is None
    assert len(reopened.secret(mark.kid)) == 32
    assert reopened.secret(mark.kid) == store.secret(mark.kid)

    account = reopened.active(KeyPurpose.CHAIN_ACCOUNT)
    scalar = reopened.chain_account_private_key(account.kid)
    assert len(scalar) == 32
    point = (
        ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256K1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    assert account.algorithm == "secp256k1"
    assert account.public_key_b64 == base64.b64encode(point).decode()
    assert account.kid == hashlib.sha256(point).hexdigest()[:16]


def test_file_format_and_modes(store: Keystore, path: Path) -> None:
    doc = _doc(path)
    assert doc["format"] == "dsgw-keystore"
    assert doc["version"] == 1
    assert doc["kdf"]["name"] == "scrypt"
    assert doc["kdf"]["n"] == FAST
    assert (doc["kdf"]["r"], doc["kdf"]["p"]) == (8, 1)
    assert set(doc["verifier"]) == {"nonce", "ciphertext"}
    raw = path.read_text()
    seed = store.signing_key(store.active(KeyPurpose.TOKEN_SIGNING).kid).private_bytes_raw()
    assert base64.b64encode(seed).decode() not in raw
    assert base64.b64encode(store.secret(store.active(KeyPurpose.MARK).kid)).decode() not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_create_refuses_existing_file(store: Keystore, path: Path) -> None:
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.create(path, PASS, scrypt_n=FAST)


def test_create_refuses_weak_scrypt(path: Path) -> None:
    with pytest.raises(KeystoreError, match="scrypt parameters"):
        Keystore.create(path, PASS, scrypt_n=2**10)
    with pytest.raises(KeystoreError, match="scrypt parameters"):
        Keystore.create(path, PASS, scrypt_n=3 * 2**14)
    assert not path.exists()


def test_open_failures_are_actionable(store: Keystore, path: Path, tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="run `dsgw init`"):
        Keystore.open(tmp_path / "missing.json", PASS)
    with pytest.raises(KeystoreError, match="wrong passphrase or corrupted file"):
        Keystore.open(path, b"wrong")

    doc = _doc(path)
    _write(path, {**doc, "version": 2})
    with pytest.raises(KeystoreError, match="version 2"):
        Keystore.open(path, PASS)
    _write(path, {**doc, "format": "other"})
    with pytest.raises(KeystoreError, match="not a dsgw keystore"):
        Keystore.open(path, PASS)
    _write(path, {**doc, "kdf": {**doc["kdf"], "n": 2**30}})
    with pytest.raises(KeystoreError, match="scrypt parameters"):
        Keystore.open(path, PASS)
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match="not valid JSON"):
        Keystore.open(path, PASS)


# -- tampering ------------------------------------------------------------------------------


def test_tampered_ciphertext_is_refused(store: Keystore, path: Path) -> None:
    doc = _doc(path)
    entry = doc["entries"][0]
    sealed = bytearray(base64.b64decode(entry["ciphertext"]))
    sealed[3] ^= 0x01
    entry["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    _write(path, doc)
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(path, PASS)


def test_swapped_entries_are_refused(store: Keystore, path: Path) -> None:
    doc = _doc(path)
    signing = _entry(doc, KeyPurpose.TOKEN_SIGNING)
    checkpoint = _entry(doc, KeyPurpose.CHECKPOINT)
    # Same algorithm, so only the AAD tells the two secrets apart.
    for name in ("nonce", "ciphertext"):
        signing[name], checkpoint[name] = checkpoint[name], signing[name]
    doc["entries"] = [signing, checkpoint]
    _write(path, doc)
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(path, PASS)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("purpose", "checkpoint"),  # relabel a token-signing key
        ("created_at", "2020-01-01T00:00:00+00:00"),
        ("retired_at", "2020-01-01T00:00:00+00:00"),
    ],
)
def test_relabelled_entry_is_refused(store: Keystore, path: Path, member: str, value: str) -> None:
    doc = _doc(path)
    doc["entries"] = [_entry(doc, KeyPurpose.TOKEN_SIGNING) | {member: value}]
    _write(path, doc)
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(path, PASS)


def test_unretiring_a_key_is_refused(store: Keystore, path: Path) -> None:
    store.rotate(KeyPurpose.TOKEN_SIGNING, now=T0 + dt.timedelta(hours=1))
    doc = _doc(path)
    for entry in doc["entries"]:
        entry["retired_at"] = None
    _write(path, doc)
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(path, PASS)


def test_wrong_public_key_is_refused(store: Keystore, path: Path) -> None:
    # Clear public key replaced: the AAD covers it, so the entry no longer decrypts.
    doc = _doc(path)
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    doc["entries"] = [_entry(doc, KeyPurpose.TOKEN_SIGNING)]
    doc["entries"][0]["public_key"] = base64.b64encode(other).decode()
    _write(path, doc)
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(path, PASS)


# -- rotation, grace and pruning ------------------------------------------------------------


def test_rotation_grace_window_and_prune(store: Keystore) -> None:
    purpose = KeyPurpose.TOKEN_SIGNING
    grace = dt.timedelta(minutes=15)
    first = store.active(purpose)
    t1 = T0 + dt.timedelta(hours=1)
    second = store.rotate(purpose, now=t1)

    assert store.active(purpose) == second
    retired = next(i for i in store.entries() if i.kid == first.kid)
    assert retired.retired_at == t1
    assert not retired.is_active

    def kids(now: dt.datetime) -> list[str]:
        return [i.kid for i in store.verification_keys(purpose, now=now, grace=grace)]

    assert kids(t1) == [second.kid, first.kid]
    assert kids(t1 + grace - dt.timedelta(seconds=1)) == [second.kid, first.kid]
    assert kids(t1 + grace) == [second.kid]
    # Old tokens still verify with the old public key inside the window.
    store.public_key(first.kid)

    assert store.prune(purpose, now=t1 + grace - dt.timedelta(seconds=1), grace=grace) == []
    assert store.prune(purpose, now=t1 + grace, grace=grace) == [first.kid]
    assert first.kid not in {i.kid for i in store.entries()}
    with pytest.raises(KeystoreError, match="no key with kid"):
        store.public_key(first.kid)
    # Other purposes are untouched and the prune is on disk.
    assert {i.purpose for i in Keystore.open(store.path, PASS).entries()} == set(KeyPurpose)


def test_rotate_requires_an_active_key(path: Path) -> None:
    ks = Keystore.create(path, PASS, scrypt_n=FAST)
    with pytest.raises(KeystoreError, match="no active token-signing key"):
        ks.rotate(KeyPurpose.TOKEN_SIGNING, now=T0)
    with pytest.raises(KeystoreError, match="no active mark key"):
        ks.active(KeyPurpose.MARK)
    assert ks.verification_keys(KeyPurpose.MARK, now=T0, grace=dt.timedelta(0)) == []


def test_prune_refused_for_keys_kept_forever(store: Keystore) -> None:
    for purpose in (KeyPurpose.CHECKPOINT, KeyPurpose.CHAIN_ACCOUNT):
        store.rotate(purpose, now=T0)
        with pytest.raises(KeystoreError, match="prune refused"):
            store.prune(purpose, now=T0 + dt.timedelta(days=999), grace=dt.timedelta(0))
        assert len([i for i in store.entries() if i.purpose == purpose]) == 2
    old = next(
        i for i in store.entries() if i.purpose == KeyPurpose.CHAIN_ACCOUNT and not i.is_active
    )
    assert len(store.chain_account_private_key(old.kid)) == 32


def test_accessors_check_the_kind_of_key(store: Keystore) -> None:
    mark = store.active(KeyPurpose.MARK).kid
    signing = store.active(KeyPurpose.TOKEN_SIGNING).kid
    account = store.active(KeyPurpose.CHAIN_ACCOUNT).kid
    with pytest.raises(KeystoreError, match="not an Ed25519 signing key"):
        store.signing_key(mark)
    with pytest.raises(KeystoreError, match="not a mark secret"):
        store.secret(signing)
    with pytest.raises(KeystoreError, match="not a chain-account key"):
        store.chain_account_private_key(signing)
    with pytest.raises(KeystoreError, match="not an Ed25519 signing key"):
        store.public_key(account)


def test_naive_times_are_refused(store: Keystore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.rotate(KeyPurpose.TOKEN_SIGNING, now=dt.datetime(2025, 1, 1))


# -- several processes ----------------------------------------------------------------------


def test_reload_if_changed_sees_rotation_by_another_instance(store: Keystore, path: Path) -> None:
    assert store.reload_if_changed() is False
    old = store.active(KeyPurpose.TOKEN_SIGNING)
    cli = Keystore.open(path, PASS)
    new = cli.rotate(KeyPurpose.TOKEN_SIGNING, now=T0 + dt.timedelta(minutes=5))

    assert store.active(KeyPurpose.TOKEN_SIGNING) == old
    assert store.reload_if_changed() is True
    assert store.active(KeyPurpose.TOKEN_SIGNING) == new
    store.signing_key(new.kid)
    assert store.reload_if_changed() is False
    os.utime(path, ns=(1, 1))  # touched but not changed: nothing to reload
    assert store.reload_if_changed() is False


def test_mutations_build_on_changes_of_other_instances(store: Keystore, path: Path) -> None:
    other = Keystore.open(path, PASS)
    a = other.rotate(KeyPurpose.TOKEN_SIGNING, now=T0 + dt.timedelta(minutes=1))
    # ``store`` has not reloaded, yet its rotation must not drop ``a``.
    b = store.rotate(KeyPurpose.TOKEN_SIGNING, now=T0 + dt.timedelta(minutes=2))
    infos = {i.kid: i for i in Keystore.open(path, PASS).entries()}
    assert a.kid in infos
    assert b.kid in infos
    assert infos[a.kid].retired_at == T0 + dt.timedelta(minutes=2)
    assert [
        i.kid for i in infos.values() if i.purpose == KeyPurpose.TOKEN_SIGNING and i.is_active
    ] == [b.kid]


_ROTATOR = """
import datetime as dt, sys
from pathlib import Path
from keys.keystore import Keystore, KeyPurpose
store = Keystore.open(Path(sys.argv[1]), sys.argv[2].encode())
for minute in range(int(sys.argv[3])):
    store.rotate(KeyPurpose.TOKEN_SIGNING, now=dt.datetime(2025, 3, 2, 0, minute, tzinfo=dt.UTC))
"""


def test_concurrent_rotations_in_two_processes_lose_nothing(store: Keystore, path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    rounds = 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ROTATOR, str(path), PASS.decode(), str(rounds)], env=env
        )
        for _ in range(2)
    ]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0]
    assert store.reload_if_changed() is True
    signing = [i for i in store.entries() if i.purpose == KeyPurpose.TOKEN_SIGNING]
    assert len(signing) == 1 + 2 * rounds
    assert len([i for i in signing if i.is_active]) == 1


def test_save_refuses_to_overwrite_another_process(store: Keystore, path: Path) -> None:
    store.save()  # nothing changed elsewhere: fine
    Keystore.open(path, PASS).rotate(KeyPurpose.MARK, now=T0)
    with pytest.raises(KeystoreError, match="changed by another process"):
        store.save()


def test_reload_reports_a_vanished_file(store: Keystore, path: Path) -> None:
    path.unlink()
    with pytest.raises(KeystoreError, match="disappeared"):
        store.reload_if_changed()


# -- atomic writes --------------------------------------------------------------------------


def test_save_is_atomic_and_leaves_no_temporary_files(
    store: Keystore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.rotate(KeyPurpose.TOKEN_SIGNING, now=T0)
    store.save()
    assert sorted(p.name for p in path.parent.iterdir()) == ["keystore.json", "keystore.json.lock"]
    before = path.read_bytes()

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeystoreError, match=r"saving .* failed: No space left"):
        store.rotate(KeyPurpose.TOKEN_SIGNING, now=T0 + dt.timedelta(hours=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["keystore.json", "keystore.json.lock"]
    # In-memory state did not move ahead of the file either.
    assert store.entries() == Keystore.open(path, PASS).entries()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- JWK ------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_ed25519_jwk_shape_and_pyjwt_round_trip(store: Keystore) -> None:
    kid = store.active(KeyPurpose.TOKEN_SIGNING).kid
    public = store.public_key(kid)
    jwk = ed25519_jwk(public, kid)
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(public.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "=" not in jwk["x"]
    assert len(jwk["x"]) == 43
    token = jwt.encode(
        {"sub": "m"}, store.signing_key(kid), algorithm="EdDSA", headers={"kid": kid}
    )
    key = jwk_to_public_key(jwk)
    assert jwt.decode(token, key, algorithms=["EdDSA"]) == {"sub": "m"}
    assert jwks([(kid, public)]) == {"keys": [jwk]}
    assert jwks([]) == {"keys": []}


def _p256_jwk() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    return private, {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
        "alg": "ES256",
        "kid": "merchant-1",
    }


def test_p256_jwk_verifies_es256_assertion() -> None:
    private, jwk = _p256_jwk()
    token = jwt.encode({"iss": "client"}, private, algorithm="ES256")
    key = jwk_to_public_key(jwk)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert jwt.decode(token, key, algorithms=["ES256"]) == {"iss": "client"}


def _okp() -> dict[str, Any]:
    return ed25519_jwk(Ed25519PrivateKey.generate().public_key(), "k1")


def _malformed() -> list[tuple[Any, str]]:
    okp = _okp()
    _, p256 = _p256_jwk()
    x = base64.urlsafe_b64decode(okp["x"] + "=")
    return [
        ([], "JSON object"),
        ({}, "kty None"),
        ({**okp, "kty": "RSA"}, "kty 'RSA'"),
        ({**okp, "crv": "X25519"}, "crv 'Ed25519'"),
        ({k: v for k, v in okp.items() if k != "x"}, "'x' must be a non-empty string"),
        ({**okp, "x": okp["x"] + "="}, "without padding"),
        ({**okp, "x": okp["x"].replace("-", "+").replace("_", "/") + "+/"}, "without padding"),
        ({**okp, "x": _b64url(x[:31])}, "exactly 32 bytes"),
        ({**okp, "x": 12}, "non-empty string"),
        ({**okp, "alg": "RS256"}, "alg 'RS256'"),
        ({**okp, "use": "enc"}, "use must be 'sig'"),
        ({**okp, "key_ops": ["encrypt"]}, "key_ops"),
        ({**okp, "kid": 5}, "kid must be"),
        ({**okp, "d": okp["x"]}, "private key member"),
        ({**p256, "crv": "P-384"}, "crv 'P-256'"),
        ({**p256, "alg": "EdDSA"}, "alg 'EdDSA'"),
        ({**p256, "y": p256["x"]}, "not a point on P-256"),
        ({k: v for k, v in p256.items() if k != "y"}, "'y' must be a non-empty string"),
    ]


@pytest.mark.parametrize(("jwk", "message"), _malformed())
def test_malformed_jwks_are_refused(jwk: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")) as info:
        jwk_to_public_key(jwk)
    assert str(info.value).startswith("JWK: ")


def test_jwk_optional_members_are_accepted() -> None:
    okp = _okp()
    minimal = {"kty": "OKP", "crv": "Ed25519", "x": okp["x"]}
    jwk_to_public_key(minimal)
    jwk_to_public_key({**minimal, "alg": "Ed25519", "key_ops": ["verify"], "x5t": "ignored"})


# -- passphrase -----------------------------------------------------------------------------


def test_passphrase_environment_wins(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    file.write_bytes(b"from-file\n")
    file.chmod(0o600)
    assert load_passphrase(env_value="from-env", file=file) == b"from-env"
    assert load_passphrase(env_value="", file=file) == b"from-file"
    assert load_passphrase(env_value=None, file=file) == b"from-file"
    assert load_passphrase(env_value="密码", file=None) == "密码".encode()


def test_passphrase_file_rules(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    with pytest.raises(KeystoreError, match="does not exist"):
        load_passphrase(env_value=None, file=file)
    with pytest.raises(KeystoreError, match="no passphrase"):
        load_passphrase(env_value=None, file=None)
    file.write_bytes(b"secret\r\n")
    file.chmod(0o640)
    with pytest.raises(KeystoreError, match=r"mode 0640\); run `chmod 600 "):
        load_passphrase(env_value=None, file=file)
    file.chmod(0o604)
    with pytest.raises(KeystoreError, match="group or others"):
        load_passphrase(env_value=None, file=file)
    file.chmod(0o400)
    assert load_passphrase(env_value=None, file=file) == b"secret"
    file.chmod(0o600)
    file.write_bytes(b"\n")
    with pytest.raises(KeystoreError, match="is empty"):
        load_passphrase(env_value=None, file=file)


def test_create_passphrase_file(tmp_path: Path) -> None:
    file = tmp_path / "new" / "keystore.pass"
    passphrase = create_passphrase_file(file)
    assert len(passphrase) == 43
    assert b"=" not in passphrase
    assert len(base64.urlsafe_b64decode(passphrase + b"=")) == 32
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert load_passphrase(env_value=None, file=file) == passphrase
    with pytest.raises(KeystoreError, match="already exists"):
        create_passphrase_file(file)
    assert load_passphrase(env_value=None, file=file) == passphrase
    # It opens a keystore made with it.
    ks = Keystore.create(tmp_path / "ks.json", passphrase, scrypt_n=FAST)
    Keystore.open(ks.path, load_passphrase(env_value=None, file=file))
