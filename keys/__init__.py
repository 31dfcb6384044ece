"""Key management: the encrypted keystore, its passphrase, and JWK encoding."""

from keys.jwk import ClientPublicKey, ed25519_jwk, jwk_to_public_key, jwks
from keys.keystore import Algorithm, KeyInfo, KeyPurpose, Keystore, SecretInfo
from keys.passphrase import create_passphrase_file, load_passphrase

__all__ = [
    "Algorithm",
    "ClientPublicKey",
    "KeyInfo",
    "KeyPurpose",
    "Keystore",
    "SecretInfo",
    "create_passphrase_file",
    "ed25519_jwk",
    "jwk_to_public_key",
    "jwks",
    "load_passphrase",
]
