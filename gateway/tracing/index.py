"""Layer 1: the delivery index, keyed hashes of every delivered row.

For each row a query answer delivers, the gateway stores in ``trace_rows`` (in the same
transaction as the call's record) one hash per identifying field delivered in clear and one
hash of the whole row, each pointing at the call's ``seq``. Rows found in a leak are hashed
the same way and looked up, which names the deliveries, hence the recipients, that
contained them.

Why keyed (HMAC-SHA256 under a keystore sub-key): the index must not let anyone holding the
database enumerate identifiers (credit codes, identity numbers come from small spaces) and
learn who received what. Why 63 bits: a signed BIGINT holds it, the primary key stays at 16
bytes per entry, and a false match between two different values has probability 2^-63.
Why per field: the same string in two different fields is not the same identity, and the
trace finds identifying columns by content, field by field.

Masked identifiers are not hashed: a masked credit code keeps 9 of 18 characters, far too
little entropy to identify a row, and would map unrelated rows to one another.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.tracing.normalize import normalize

__all__ = [
    "cell_text",
    "hash63",
    "identity_hash",
    "row_hash",
    "rows_digest",
]

_SEPARATOR = "\x1f"


def hash63(key: bytes, message: str) -> int:
    """HMAC-SHA256 of ``message`` truncated to a non-negative 63-bit integer."""
    digest = hmac.digest(key, message.encode("utf-8"), "sha256")
    return int.from_bytes(digest[:8], "big") >> 1


def cell_text(value: Any) -> str:
    """The text a delivered JSON value shows in a file: what both sides normalise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def identity_hash(key: bytes, dataset_id: str, field: str, normalized: str) -> int:
    """The index key of one identifying value; ``normalized`` is already :func:`normalize`d
    (the trace looks up several variants of one cell)."""
    return hash63(key, f"id|{dataset_id}|{field}|{normalized}")


def row_hash(key: bytes, dataset_id: str, cells: Mapping[str, str]) -> int:
    """The index key of a whole row: every delivered field by name, normalised."""
    body = _SEPARATOR.join([f"{name}={normalize(cells[name])}" for name in sorted(cells)])
    return hash63(key, f"row|{dataset_id}|{body}")


def rows_digest(hashes: Iterable[int]) -> str:
    """SHA-256 over the sorted, deduplicated index entries of one delivery (8 bytes each,
    big-endian). The call record carries it, so the anchored record commits to exactly the
    ``trace_rows`` entries written with it."""
    digest = hashlib.sha256()
    for value in sorted(set(hashes)):
        digest.update(value.to_bytes(8, "big"))
    return digest.hexdigest()
