"""JSON Web Keys: publishing the gateway's Ed25519 keys and reading merchants' keys.

Published keys follow RFC 8037 (``kty`` OKP, ``crv`` Ed25519). Merchants authenticating with
``private_key_jwt`` register an Ed25519 (OKP) or P-256 (EC) public JWK; it arrives from
outside, so it is checked strictly and refused with a message naming the bad member rather
than producing a key that fails obscurely at the first client assertion.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.errors import ValidationError

__all__ = ["ClientPublicKey", "ed25519_jwk", "jwk_to_public_key", "jwks"]

ClientPublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]*$")
# Members that only a private JWK carries (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_OKP_ALGS: Final = frozenset({"EdDSA", "Ed25519"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ed25519_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The RFC 8037 public JWK of ``public_key``."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def jwks(keys: Iterable[tuple[str, Ed25519PublicKey]]) -> dict[str, list[dict[str, str]]]:
    """A JWK Set (RFC 7517 §5) of ``(kid, public key)`` pairs, in the order given."""
    return {"keys": [ed25519_jwk(key, kid) for kid, key in keys]}


def _fail(detail: str) -> ValidationError:
    return ValidationError(f"JWK: {detail}")


def _text(jwk: Mapping[str, object], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise _fail(f"member {name!r} must be a non-empty string")
    return value


def _coordinate(jwk: Mapping[str, object], name: str, length: int) -> bytes:
    """Decode a base64url member strictly: no padding, canonical, exactly ``length`` bytes."""
    value = _text(jwk, name)
    if not _B64URL.fullmatch(value):
        raise _fail(f"member {name!r} must be base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as err:
        raise _fail(f"member {name!r} is not valid base64url") from err
    if len(raw) != length or _b64url(raw) != value:
        raise _fail(f"member {name!r} must encode exactly {length} bytes")
    return raw


def _check_common(jwk: Mapping[str, object], algs: frozenset[str]) -> None:
    if "alg" in jwk and jwk["alg"] not in algs:
        raise _fail(f"alg {jwk['alg']!r} does not fit this key; use {' or '.join(sorted(algs))}")
    if "use" in jwk and jwk["use"] != "sig":
        raise _fail("use must be 'sig': the key verifies client assertions")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if (
            not isinstance(ops, list)
            or not all(isinstance(op, str) for op in ops)
            or "verify" not in ops
        ):
            raise _fail("key_ops must be a list of strings that includes 'verify'")
    if "kid" in jwk and (not isinstance(jwk["kid"], str) or not jwk["kid"]):
        raise _fail("kid must be a non-empty string")


def jwk_to_public_key(jwk: Mapping[str, object]) -> ClientPublicKey:
    """The public key of an Ed25519 (OKP) or P-256 (EC) JWK.

    Raises :class:`ValidationError` for anything else, including a JWK that carries private
    key material: a merchant's private key must never be sent to the gateway.
    """
    untrusted: object = jwk  # decoded JSON: the annotation is a hope, not a fact
    if not isinstance(untrusted, Mapping):
        raise _fail("must be a JSON object")
    leaked = [name for name in _PRIVATE_MEMBERS if name in jwk]
    if leaked:
        raise _fail(
            f"contains private key member(s) {', '.join(leaked)}; send only the public key "
            "and treat the private key as compromised"
        )
    kty = jwk.get("kty")
    if kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise _fail("an OKP key must have crv 'Ed25519'")
        _check_common(jwk, _OKP_ALGS)
        try:
            return Ed25519PublicKey.from_public_bytes(_coordinate(jwk, "x", 32))
        except ValueError as err:
            raise _fail("x is not a valid Ed25519 public key") from err
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise _fail("an EC key must have crv 'P-256'")
        _check_common(jwk, frozenset({"ES256"}))
        x = int.from_bytes(_coordinate(jwk, "x", 32), "big")
        y = int.from_bytes(_coordinate(jwk, "y", 32), "big")
        try:
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError as err:
            raise _fail("x and y are not a point on P-256") from err
    raise _fail(f"kty {kty!r} is not supported; use 'OKP' (Ed25519) or 'EC' (P-256)")
