"""RFC 9162 (Certificate Transparency v2) Merkle tree math: tree hashes, proofs, verification.

Pure functions, no storage: :mod:`gateway.ledger.tree` keeps the nodes in the database and
feeds them in through callbacks, and a third party can check the gateway's proofs with this
module alone. The hash algorithm is a parameter because a deployment may use SM3 instead of
SHA-256; everything else is exactly RFC 9162 §2.1.

Why proofs are generated through a ``subtree(start, end)`` callback instead of over a list of
leaves: RFC 9162 splits a tree of ``n`` leaves at the largest power of two ``k < n``, so every
subtree that a proof names is a right-leaning chain of *perfect* subtrees (``2**level``
leaves starting at a multiple of ``2**level``). A store that keeps the hash of every perfect
subtree can answer any proof with O(log n) lookups and never rebuilds a tree per request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import ValidationError
from gateway.ledger.hashing import HashAlgorithm, hash_function

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "consistency_path",
    "consistency_ranges",
    "empty_root",
    "inclusion_path",
    "inclusion_ranges",
    "perfect_subtrees",
    "root_from_leaves",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

# RFC 9162 domain separation: 0x00 for leaves (applied in hashing.leaf_hash), 0x01 for nodes.
_NODE_PREFIX: Final = b"\x01"
# Tree sizes and indices are uint64 in RFC 9162's structures.
_MAX_SIZE: Final = 2**64 - 1
# A proof of a uint64-sized tree has at most 64 (inclusion) or 65 (consistency) hashes; a
# longer list in untrusted input is refused before any hashing is spent on it.
_MAX_PATH: Final = 66

Subtree = Callable[[int, int], bytes]
"""``subtree(start, end)`` answers MTH of the leaves ``[start, end)``."""


@functools.cache
def _digest_size(alg: HashAlgorithm) -> int:
    return len(hash_function(alg)(b""))


def empty_root(alg: HashAlgorithm) -> bytes:
    """MTH of the empty tree: the hash of the empty string (RFC 9162 §2.1.1)."""
    return hash_function(alg)(b"")


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(alg: HashAlgorithm, leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (each ``H(0x00 || input)``).

    Hashes level by level, carrying an unpaired last node up unchanged; this gives the same
    tree as RFC 9162's split at the largest power of two, in O(n) hashes and no recursion.
    """
    if not leaf_hashes:
        return empty_root(alg)
    hash_ = hash_function(alg)
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [
            hash_(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees whose chain is MTH of the leaves ``[start, end)``, left to right.

    Follows RFC 9162's definition literally: split at the largest power of two ``k`` below
    the range's size; the left part must then be a perfect subtree (``k`` leaves starting at
    a multiple of ``k``) and the right part is split again. That holds for every subtree of
    an RFC 9162 tree of any size, so every range a proof asks for decomposes into at most
    ``log2(end - start) + 1`` perfect subtrees.

    Raises ``ValueError`` for a range that is not a subtree of any RFC 9162 tree (such as
    ``[1, 4)``): its MTH could only be computed from the individual leaves.
    """
    if not 0 <= start <= end:
        raise ValueError(f"merkle: [{start}, {end}) is not a range of leaves")
    blocks: list[tuple[int, int]] = []
    while start < end:
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            blocks.append((start, end))
            break
        k = _split(n)
        if start % k:
            raise ValueError(
                f"merkle: [{start}, {end}) is not a subtree of an RFC 9162 tree; its left "
                f"part [{start}, {start + k}) is not aligned to {k} leaves"
            )
        blocks.append((start, start + k))
        start += k
    return blocks


def subtree_hash(alg: HashAlgorithm, start: int, end: int, perfect: Subtree) -> bytes:
    """MTH of the leaves ``[start, end)`` from O(log n) perfect-subtree hashes.

    ``perfect(start, end)`` is only ever asked for a perfect subtree (``2**level`` leaves
    starting at a multiple of ``2**level``; level 0 is a single leaf hash), which a store can
    answer with a lookup. The chain is hashed right to left, ``H(B1, H(B2, ... H(Bm-1, Bm)))``,
    because RFC 9162 always puts the larger, perfect part on the left.

    Raises ``ValueError`` as :func:`perfect_subtrees` does.
    """
    if start == end:
        return empty_root(alg)
    hash_ = hash_function(alg)
    blocks = perfect_subtrees(start, end)
    result = perfect(*blocks[-1])
    for block in reversed(blocks[:-1]):
        result = hash_(_NODE_PREFIX + perfect(*block) + result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form ``PATH(index, D[size])`` (RFC 9162 §2.1.3.1),
    ordered from the leaf's sibling up to the root's other child, as the proof lists them.

    Raises ``ValueError`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size <= _MAX_SIZE:
        raise ValueError(f"merkle: leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k
    #               = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form ``PROOF(first, D[second])`` (RFC 9162 §2.1.4.1), in
    proof order. ``first == second`` gives the empty proof.

    Raises ``ValueError`` unless ``0 < first <= second``: RFC 9162 defines no proof from the
    empty tree, which is consistent with every tree and needs none.
    """
    if not 0 < first <= second <= _MAX_SIZE:
        raise ValueError(f"merkle: no consistency proof from size {first} to size {second}")
    ranges: list[tuple[int, int]] = []
    if first == second:
        return ranges
    lo, hi, whole = 0, second, True
    # SUBPROOF(m, D[m], true) = {};  SUBPROOF(m, D[m], false) = {MTH(D[m])}
    # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])           for m <= k
    #                      = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])   for m > k
    while True:
        if first == hi:
            if not whole:
                ranges.append((lo, hi))
            break
        k = _split(hi - lo)
        if first <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole = False
    ranges.reverse()
    return ranges


def _checked(alg: HashAlgorithm, value: bytes, start: int, end: int) -> bytes:
    # A callback that hands back a hex string or a wide column would otherwise produce a proof
    # that simply never verifies; say where it went wrong instead.
    if not isinstance(value, bytes) or len(value) != _digest_size(alg):
        raise ValueError(f"merkle: subtree({start}, {end}) did not return a {alg} hash")
    return value


def inclusion_path(
    alg: HashAlgorithm, index: int, size: int, subtree: Subtree
) -> tuple[bytes, ...]:
    """The RFC 9162 inclusion path of leaf ``index`` in the tree of ``size`` leaves.

    ``subtree(start, end)`` must answer MTH of any range :func:`inclusion_ranges` names; build
    it with :func:`subtree_hash` over stored perfect subtrees to need O(log n) lookups.
    Raises ``ValueError`` unless ``0 <= index < size`` or if ``subtree`` answers something
    that is not an ``alg`` hash.
    """
    return tuple(
        _checked(alg, subtree(start, end), start, end)
        for start, end in inclusion_ranges(index, size)
    )


def consistency_path(
    alg: HashAlgorithm, first: int, second: int, subtree: Subtree
) -> tuple[bytes, ...]:
    """The RFC 9162 consistency path from the tree of ``first`` leaves to that of ``second``.

    Same contract for ``subtree`` as :func:`inclusion_path`; raises ``ValueError`` unless
    ``0 < first <= second``.
    """
    return tuple(
        _checked(alg, subtree(start, end), start, end)
        for start, end in consistency_ranges(first, second)
    )


def _hashes_ok(alg: HashAlgorithm, *values: bytes) -> bool:
    size = _digest_size(alg)
    return all(isinstance(value, bytes) and len(value) == size for value in values)


def verify_inclusion(
    alg: HashAlgorithm, leaf_hash: bytes, proof: InclusionProof, root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show that ``leaf_hash`` is in the tree ``root``?

    Returns ``False`` for any proof that does not verify, never raises. Beyond the RFC's
    steps, every hash must be of ``alg``'s length: nothing else can come from a log of ``alg``.
    """
    path = proof.path
    if not _hashes_ok(alg, leaf_hash, root, *path):
        return False
    # 1. leaf_index >= tree_size fails.
    if proof.leaf_index >= proof.tree_size:
        return False
    hash_ = hash_function(alg)
    # 2.-3.
    fn, sn = proof.leaf_index, proof.tree_size - 1
    r = leaf_hash
    # 4.
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_(_NODE_PREFIX + p + r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_(_NODE_PREFIX + r + p)
        fn >>= 1
        sn >>= 1
    # 5.
    return sn == 0 and r == root


def verify_consistency(
    alg: HashAlgorithm, proof: ConsistencyProof, first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``second_root`` an append-only extension of
    ``first_root``?

    ``first == second`` verifies only with an empty path and equal roots; ``first == 0`` is
    refused (RFC 9162 requires ``0 < first``: the empty tree proves nothing to anyone).
    Returns ``False`` for any proof that does not verify, never raises.
    """
    first, second, path = proof.first, proof.second, list(proof.path)
    if not _hashes_ok(alg, first_root, second_root, *path):
        return False
    if not 0 < first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    hash_ = hash_function(alg)
    # 1.
    if not path:
        return False
    # 2.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # 3.-4.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_(_NODE_PREFIX + c + fr)
            sr = hash_(_NODE_PREFIX + c + sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_(_NODE_PREFIX + sr + c)
        fn >>= 1
        sn >>= 1
    # 7.
    return fr == first_root and sr == second_root and sn == 0


def _size_field(data: Mapping[str, Any], key: str, what: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SIZE:
        raise ValidationError(f"{what}: {key!r} must be an integer from 0 to 2**64-1")
    return value


def _path_field(data: Mapping[str, Any], what: str) -> tuple[bytes, ...]:
    value = data.get("path")
    if not isinstance(value, list) or len(value) > _MAX_PATH:
        raise ValidationError(f"{what}: 'path' must be a list of at most {_MAX_PATH} hashes")
    path: list[bytes] = []
    for i, item in enumerate(value):
        try:
            if not isinstance(item, str):
                raise ValueError("not a string")
            path.append(bytes.fromhex(item))
        except ValueError:
            raise ValidationError(f"{what}: path[{i}] is not a hex string") from None
    return tuple(path)


def _mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what}: expected an object")
    return data


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 ``inclusion_proof_v2`` without the log id: leaf ``leaf_index`` is in the tree
    of ``tree_size`` leaves, by the sibling hashes ``path`` from the leaf up."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "path": [h.hex() for h in self.path],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InclusionProof:
        """Parse untrusted JSON; raises :class:`ValidationError` on a malformed proof (a
        well-formed but wrong proof parses and then fails :func:`verify_inclusion`)."""
        what = "inclusion proof"
        data = _mapping(data, what)
        return cls(
            leaf_index=_size_field(data, "leaf_index", what),
            tree_size=_size_field(data, "tree_size", what),
            path=_path_field(data, what),
        )


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 ``consistency_proof_v2`` without the log id: the tree of ``second`` leaves
    extends the tree of ``first`` leaves, by the hashes ``path``."""

    first: int
    second: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "path": [h.hex() for h in self.path]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyProof:
        """Parse untrusted JSON; raises :class:`ValidationError` on a malformed proof."""
        what = "consistency proof"
        data = _mapping(data, what)
        return cls(
            first=_size_field(data, "first", what),
            second=_size_field(data, "second", what),
            path=_path_field(data, what),
        )
