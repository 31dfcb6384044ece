"""Hash functions of the log: RFC 9162 leaf hashing plus the per-stream hash chain.

A deployment chooses SHA-256 (default) or SM3 (GB/T 32905) once; every checkpoint names the
algorithm it used. Leaves commit to a per-record random salt so that sibling hashes in an
inclusion proof reveal nothing about neighbouring records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives import hashes

__all__ = [
    "GENESIS",
    "HashAlgorithm",
    "entry_hash",
    "hash_function",
    "leaf_hash",
    "link_hasher",
    "node_hash",
]

HashAlgorithm = Literal["sha256", "sm3"]

# The "previous entry hash" of the first record of a stream.
GENESIS = bytes(32)

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Not an RFC 9162 prefix: keeps chain hashes from ever colliding with tree hashes.
_CHAIN_PREFIX = b"\x02"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


_FUNCTIONS: dict[str, Callable[[bytes], bytes]] = {"sha256": _sha256, "sm3": _sm3}


def hash_function(algorithm: HashAlgorithm) -> Callable[[bytes], bytes]:
    try:
        return _FUNCTIONS[algorithm]
    except KeyError:
        raise ValueError(f"unknown hash algorithm {algorithm!r}") from None


def leaf_hash(algorithm: HashAlgorithm, salt: bytes, record: bytes) -> bytes:
    """RFC 9162 MTH of one entry: ``H(0x00 || salt || canonical record bytes)``."""
    return hash_function(algorithm)(_LEAF_PREFIX + salt + record)


def node_hash(algorithm: HashAlgorithm, left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: ``H(0x01 || left || right)``."""
    return hash_function(algorithm)(_NODE_PREFIX + left + right)


def entry_hash(algorithm: HashAlgorithm, previous: bytes, leaf: bytes) -> bytes:
    """Chain link: ``H(0x02 || previous entry hash || leaf hash)``."""
    return hash_function(algorithm)(_CHAIN_PREFIX + previous + leaf)


def link_hasher(algorithm: HashAlgorithm) -> Callable[[bytes, bytes, bytes], tuple[bytes, bytes]]:
    """``(previous entry hash, salt, record) -> (leaf hash, entry hash)``, exactly as
    :func:`leaf_hash` and :func:`entry_hash`, with the function looked up once: the log
    writer hashes a whole batch at a time."""
    function = hash_function(algorithm)

    def link(previous: bytes, salt: bytes, record: bytes) -> tuple[bytes, bytes]:
        leaf = function(_LEAF_PREFIX + salt + record)
        return leaf, function(_CHAIN_PREFIX + previous + leaf)

    return link
