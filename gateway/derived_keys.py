"""Sub-keys derived from the keystore's secrets, one per use, so that one secret never
serves two purposes directly (a leaked trace index key reveals nothing of recipient marks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keys.keystore import KeyPurpose, Keystore

__all__ = ["DerivedKeys", "derive_key"]


def derive_key(secret: bytes, label: str) -> bytes:
    """A sub-key per use, so one secret never serves two purposes directly."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret)


@dataclass(frozen=True, slots=True)
class DerivedKeys:
    """The keys derived from the active mark secret: the trace index's row hashes, the
    recipients' marks, the call records' parameter digests and the overlap audit's
    elements."""

    trace: bytes = field(repr=False)
    mark: bytes = field(repr=False)
    param: bytes = field(repr=False)
    overlap: bytes = field(repr=False)

    @classmethod
    def of(cls, keystore: Keystore) -> DerivedKeys:
        secret = keystore.secret(keystore.active(KeyPurpose.MARK).kid)
        return cls(
            trace=derive_key(secret, "dsgw trace row hashes v1"),
            mark=derive_key(secret, "dsgw recipient marks v1"),
            param=derive_key(secret, "dsgw call-record parameter digests v1"),
            overlap=derive_key(secret, "dsgw overlap audit elements v1"),
        )
