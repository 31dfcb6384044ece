"""RFC 9162 Merkle math: published vectors, and properties against a naive recursive model."""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ValidationError
from gateway.ledger.hashing import HashAlgorithm, hash_function, leaf_hash
from gateway.ledger.merkle import (
    ConsistencyProof,
    InclusionProof,
    consistency_path,
    inclusion_path,
    perfect_subtrees,
    root_from_leaves,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

ALGORITHMS: tuple[HashAlgorithm, ...] = ("sha256", "sm3")

# --- the Certificate Transparency reference tree ------------------------------------------
# Inputs, roots and proofs as published with the RFC 6962 reference implementation's tests
# (transparency-dev/merkle, proof/verify_test.go). Leaf hashes there are plain
# H(0x00 || input), without dsgw's salt, so the math is tested over those leaves.

CT_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_LEAVES = [hashlib.sha256(b"\x00" + bytes.fromhex(x)).digest() for x in CT_INPUTS]
CT_ROOTS = [  # index = tree size
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path); the source numbers leaves from 1, these from 0.
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [  # (first, second, path)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _ct_subtree(start: int, end: int) -> bytes:
    return root_from_leaves("sha256", CT_LEAVES[start:end])


def _unhex(path: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(h) for h in path)


def test_reference_roots() -> None:
    for size, root in enumerate(CT_ROOTS):
        assert root_from_leaves("sha256", CT_LEAVES[:size]).hex() == root, size


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    assert inclusion_path("sha256", index, size, _ct_subtree) == _unhex(path)
    root = bytes.fromhex(CT_ROOTS[size])
    proof = InclusionProof(index, size, _unhex(path))
    assert verify_inclusion("sha256", CT_LEAVES[index], proof, root)
    # The reference tests' corruptions, all of which must fail.
    leaf = CT_LEAVES[index]
    for bad_index, bad_size in ((index - 1, size), (index + 1, size), (index ^ 2, size)):
        if bad_index >= 0:
            bad = InclusionProof(bad_index, bad_size, proof.path)
            assert not verify_inclusion("sha256", leaf, bad, root)
    for bad_size in (size * 2, size // 2):
        assert not verify_inclusion(
            "sha256", leaf, InclusionProof(index, bad_size, proof.path), root
        )
    assert not verify_inclusion("sha256", SOME_HASH, proof, root)
    assert not verify_inclusion("sha256", leaf, proof, bytes.fromhex(CT_ROOTS[0]))
    assert not verify_inclusion("sha256", leaf, proof, SOME_HASH)
    for extra in (root, SOME_HASH):
        assert not verify_inclusion(
            "sha256", leaf, InclusionProof(index, size, (*proof.path, extra)), root
        )
        assert not verify_inclusion(
            "sha256", leaf, InclusionProof(index, size, (extra, *proof.path)), root
        )


@pytest.mark.parametrize(("first", "second", "path"), CT_CONSISTENCY)
def test_reference_consistency_proofs(first: int, second: int, path: list[str]) -> None:
    assert consistency_path("sha256", first, second, _ct_subtree) == _unhex(path)
    root1, root2 = bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second])
    proof = ConsistencyProof(first, second, _unhex(path))
    assert verify_consistency("sha256", proof, root1, root2)
    if first == second:
        return
    probes = [
        ConsistencyProof(first - 1, second, proof.path),
        ConsistencyProof(first + 1, second, proof.path),
        ConsistencyProof(first ^ 2, second, proof.path),
        ConsistencyProof(first, second * 2, proof.path),
        ConsistencyProof(first, second // 2, proof.path),
        ConsistencyProof(first, second, ()),
        ConsistencyProof(first, second, proof.path[:-1]),
        ConsistencyProof(first, second, (*proof.path, root1)),
        ConsistencyProof(first, second, (*proof.path, root2)),
        ConsistencyProof(first, second, (root1, *proof.path)),
        ConsistencyProof(first, second, (root2, *proof.path)),
        ConsistencyProof(first, second, (proof.path[0], *proof.path)),
    ]
    for probe in probes:
        assert not verify_consistency("sha256", probe, root1, root2), probe
    assert not verify_consistency("sha256", proof, root2, root1)
    assert not verify_consistency("sha256", proof, SOME_HASH, root2)
    assert not verify_consistency("sha256", proof, root1, SOME_HASH)


def test_consistency_edge_cases() -> None:
    empty = bytes.fromhex(CT_ROOTS[0])
    root1 = bytes.fromhex(CT_ROOTS[1])
    # first == second: only with an empty path and equal roots.
    assert verify_consistency("sha256", ConsistencyProof(1, 1, ()), root1, root1)
    assert not verify_consistency("sha256", ConsistencyProof(1, 1, ()), root1, SOME_HASH)
    assert not verify_consistency("sha256", ConsistencyProof(1, 1, (empty,)), root1, root1)
    # first == 0 is not a proof RFC 9162 defines, even between equal roots.
    assert not verify_consistency("sha256", ConsistencyProof(0, 0, ()), empty, empty)
    assert not verify_consistency("sha256", ConsistencyProof(0, 1, ()), empty, root1)
    # Time travel and empty proofs.
    assert not verify_consistency("sha256", ConsistencyProof(2, 1, ()), root1, root1)
    assert not verify_consistency("sha256", ConsistencyProof(1, 2, ()), root1, root1)
    with pytest.raises(ValueError):
        consistency_path("sha256", 0, 3, _ct_subtree)
    with pytest.raises(ValueError):
        consistency_path("sha256", 4, 3, _ct_subtree)
    assert consistency_path("sha256", 3, 3, _ct_subtree) == ()


def test_inclusion_edge_cases() -> None:
    leaf = CT_LEAVES[0]
    # A one-leaf tree: the root is the leaf and the path is empty.
    assert inclusion_path("sha256", 0, 1, _ct_subtree) == ()
    assert verify_inclusion("sha256", leaf, InclusionProof(0, 1, ()), leaf)
    for index, size in ((0, 0), (1, 0), (1, 1), (2, 1)):
        assert not verify_inclusion("sha256", leaf, InclusionProof(index, size, ()), leaf)
        with pytest.raises(ValueError):
            inclusion_path("sha256", index, size, _ct_subtree)
    # Hashes of the wrong length never verify.
    assert not verify_inclusion("sha256", b"", InclusionProof(0, 1, ()), b"")
    assert not verify_inclusion("sha256", leaf, InclusionProof(0, 2, (b"",)), leaf)
    with pytest.raises(ValueError, match="did not return"):
        inclusion_path("sha256", 0, 2, lambda s, e: _ct_subtree(s, e).hex().encode())


# --- a naive model: RFC 9162 §2.1 written as recursion over the leaf list ---------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(alg: HashAlgorithm, leaves: Sequence[bytes]) -> bytes:
    h = hash_function(alg)
    if not leaves:
        return h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = _k(len(leaves))
    return h(b"\x01" + naive_mth(alg, leaves[:k]) + naive_mth(alg, leaves[k:]))


def naive_path(alg: HashAlgorithm, m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*naive_path(alg, m, leaves[:k]), naive_mth(alg, leaves[k:])]
    return [*naive_path(alg, m - k, leaves[k:]), naive_mth(alg, leaves[:k])]


def naive_subproof(alg: HashAlgorithm, m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [naive_mth(alg, leaves)]
    k = _k(n)
    if m <= k:
        return [*naive_subproof(alg, m, leaves[:k], b), naive_mth(alg, leaves[k:])]
    return [*naive_subproof(alg, m - k, leaves[k:], False), naive_mth(alg, leaves[:k])]


MAX_LEAVES = 300


@functools.cache
def model(alg: HashAlgorithm) -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    """300 leaves, and the hash of every perfect aligned subtree among them."""
    leaves = [leaf_hash(alg, b"salt", i.to_bytes(4, "big")) for i in range(MAX_LEAVES)]
    perfect: dict[tuple[int, int], bytes] = {}
    width = 1
    while width <= MAX_LEAVES:
        for start in range(0, MAX_LEAVES - width + 1, width):
            perfect[(start, start + width)] = naive_mth(alg, leaves[start : start + width])
        width *= 2
    return leaves, perfect


def stored_subtree(alg: HashAlgorithm) -> tuple[list[bytes], Callable[[int, int], bytes]]:
    """``subtree(start, end)`` as the database answers it: from perfect subtrees only."""
    leaves, perfect = model(alg)

    def lookup(start: int, end: int) -> bytes:
        assert (start, end) in perfect, f"asked for a non-perfect subtree [{start}, {end})"
        return perfect[(start, end)]

    return leaves, lambda start, end: subtree_hash(alg, start, end, lookup)


def _not_a_root(alg: HashAlgorithm) -> bytes:
    return hash_function(alg)(b"not a root")


def _flip(path: tuple[bytes, ...], i: int) -> tuple[bytes, ...]:
    item = bytes([path[i][0] ^ 0x10]) + path[i][1:]
    return (*path[:i], item, *path[i + 1 :])


@settings(max_examples=150, deadline=None)
@given(alg=st.sampled_from(ALGORITHMS), data=st.data())
def test_inclusion_proofs_match_the_model_and_resist_tampering(
    alg: HashAlgorithm, data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, MAX_LEAVES), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    leaves, subtree = stored_subtree(alg)
    tree = leaves[:size]
    root = naive_mth(alg, tree)
    assert root_from_leaves(alg, tree) == root
    assert subtree(0, size) == root
    path = inclusion_path(alg, index, size, subtree)
    assert list(path) == naive_path(alg, index, tree)
    proof = InclusionProof(index, size, path)
    assert verify_inclusion(alg, tree[index], proof, root)
    assert InclusionProof.from_dict(proof.to_dict()) == proof

    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        assert not verify_inclusion(alg, tree[other], proof, root)
        assert not verify_inclusion(alg, tree[index], InclusionProof(other, size, path), root)
    assert not verify_inclusion(alg, tree[index], proof, _not_a_root(alg))
    for i in range(len(path)):
        assert not verify_inclusion(
            alg, tree[index], InclusionProof(index, size, _flip(path, i)), root
        )
    if path:
        assert not verify_inclusion(alg, tree[index], InclusionProof(index, size, path[:-1]), root)
    assert not verify_inclusion(alg, tree[index], InclusionProof(index, size, (*path, root)), root)


@settings(max_examples=150, deadline=None)
@given(alg=st.sampled_from(ALGORITHMS), data=st.data())
def test_consistency_proofs_match_the_model_and_resist_tampering(
    alg: HashAlgorithm, data: st.DataObject
) -> None:
    second = data.draw(st.integers(1, MAX_LEAVES), label="second")
    first = data.draw(st.integers(1, second), label="first")
    leaves, subtree = stored_subtree(alg)
    root1, root2 = naive_mth(alg, leaves[:first]), naive_mth(alg, leaves[:second])
    path = consistency_path(alg, first, second, subtree)
    expected = [] if first == second else naive_subproof(alg, first, leaves[:second], True)
    assert list(path) == expected
    proof = ConsistencyProof(first, second, path)
    assert verify_consistency(alg, proof, root1, root2)
    assert ConsistencyProof.from_dict(proof.to_dict()) == proof
    if first == second:
        assert not verify_consistency(alg, ConsistencyProof(first, second, (root1,)), root1, root2)
        return
    assert not verify_consistency(alg, proof, root2, root1)
    assert not verify_consistency(alg, proof, _not_a_root(alg), root2)
    assert not verify_consistency(alg, proof, root1, _not_a_root(alg))
    for i in range(len(path)):
        assert not verify_consistency(
            alg, ConsistencyProof(first, second, _flip(path, i)), root1, root2
        )
    assert not verify_consistency(alg, ConsistencyProof(first, second, path[:-1]), root1, root2)
    assert not verify_consistency(
        alg, ConsistencyProof(first, second, (*path, root2)), root1, root2
    )


def test_every_consistency_pair_of_small_trees() -> None:
    leaves, subtree = stored_subtree("sha256")
    for second in range(1, 65):
        root2 = naive_mth("sha256", leaves[:second])
        for first in range(1, second + 1):
            path = consistency_path("sha256", first, second, subtree)
            root1 = naive_mth("sha256", leaves[:first])
            assert verify_consistency("sha256", ConsistencyProof(first, second, path), root1, root2)
        for index in range(second):
            path = inclusion_path("sha256", index, second, subtree)
            assert verify_inclusion(
                "sha256", leaves[index], InclusionProof(index, second, path), root2
            )


def _nodes(lo: int, hi: int) -> list[tuple[int, int]]:
    """Every subtree of the RFC 9162 tree over [lo, hi)."""
    if hi - lo <= 1:
        return [(lo, hi)]
    k = _k(hi - lo)
    return [(lo, hi), *_nodes(lo, lo + k), *_nodes(lo + k, hi)]


def test_every_subtree_is_a_short_chain_of_perfect_subtrees() -> None:
    for size in range(1, 130):
        for start, end in _nodes(0, size):
            blocks = perfect_subtrees(start, end)
            assert blocks[0][0] == start and blocks[-1][1] == end
            assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
            for lo, hi in blocks:
                width = hi - lo
                assert width & (width - 1) == 0 and lo % width == 0
            assert len(blocks) <= (end - start).bit_length()
    with pytest.raises(ValueError, match="not a subtree"):
        perfect_subtrees(1, 4)
    with pytest.raises(ValueError):
        perfect_subtrees(5, 4)
    assert perfect_subtrees(2, 6) == [(2, 4), (4, 6)]
    assert subtree_hash("sha256", 3, 3, _ct_subtree) == bytes.fromhex(CT_ROOTS[0])


def test_proof_serialisation() -> None:
    proof = InclusionProof(5, 8, _unhex(CT_INCLUSION[1][2]))
    data = proof.to_dict()
    assert data == {"leaf_index": 5, "tree_size": 8, "path": CT_INCLUSION[1][2]}
    assert InclusionProof.from_dict(data) == proof
    consistency = ConsistencyProof(2, 5, _unhex(CT_CONSISTENCY[3][2]))
    assert consistency.to_dict()["path"] == CT_CONSISTENCY[3][2]
    assert ConsistencyProof.from_dict(consistency.to_dict()) == consistency
    bad_inputs: list[object] = [
        [],
        {"leaf_index": -1, "tree_size": 8, "path": []},
        {"leaf_index": True, "tree_size": 8, "path": []},
        {"leaf_index": 1, "tree_size": "8", "path": []},
        {"leaf_index": 1, "tree_size": 2**64, "path": []},
        {"leaf_index": 1, "tree_size": 8, "path": "ab"},
        {"leaf_index": 1, "tree_size": 8, "path": ["zz"]},
        {"leaf_index": 1, "tree_size": 8, "path": [1]},
        {"leaf_index": 1, "tree_size": 8, "path": ["00"] * 100},
        {"tree_size": 8, "path": []},
    ]
    for bad in bad_inputs:
        with pytest.raises(ValidationError):
            InclusionProof.from_dict(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'second'"):
        ConsistencyProof.from_dict({"first": 1, "path": []})
