"""AnchorRegistry: the committed artifact is what the pinned solc makes of the source, and the
contract — on py-evm in process and on a real anvil node — anchors per-stream RFC 9162 roots,
accepting an anchor only with a valid consistency proof from the stream's previous anchor.

The RFC 9162 code below is a small, self-contained reference written from the RFC for these
tests; it deliberately does not use gateway.ledger."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError
from web3.types import TxReceipt

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
SOURCE = CONTRACTS / "src" / "AnchorRegistry.sol"
ARTIFACT = CONTRACTS / "build" / "AnchorRegistry.json"
ANVIL = CONTRACTS / "node_modules" / ".bin" / "anvil"
# py-evm's rules, so that anvil's gas can be compared with docs/anchor-gas.md.
PRAGUE = ("--hardfork", "prague")
GAS_DOC = ROOT / "docs" / "anchor-gas.md"
INSTALL_HINT = "run `npm ci --prefix contracts` (installs the pinned solc and anvil)"
# Regenerates docs/anchor-gas.md instead of checking it.
UPDATE_GAS_DOC = "DSGW_UPDATE_GAS_DOC"
GAS_COMMAND = f"{UPDATE_GAS_DOC}=1 .venv/bin/python -m pytest tests/test_contracts.py -k gas -s"

CALLS = Web3.keccak(text="calls")
GOVERNANCE = Web3.keccak(text="governance")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = bytes(32)


# --- RFC 9162 section 2.1, SHA-256 ------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of 2 smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_tree_hash(entries: Sequence[bytes]) -> bytes:
    """MTH (section 2.1.1), straight from the definition."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return leaf_hash(entries[0])
    k = split_point(len(entries))
    return node_hash(merkle_tree_hash(entries[:k]), merkle_tree_hash(entries[k:]))


class MerkleTree:
    """A tree over entries whose perfect subtrees are all precomputed, so that MTH of any prefix
    and PROOF between prefixes (section 2.1.4.1) cost O(log n) hashes."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        level = b"".join(leaf_hash(entry) for entry in entries)
        self.size = len(entries)
        self._levels = [level]
        while len(level) > 32:
            level = b"".join(
                node_hash(level[i : i + 32], level[i + 32 : i + 64])
                for i in range(0, len(level) - 32, 64)
            )
            self._levels.append(level)

    def _subtree(self, start: int, n: int) -> bytes:
        """MTH(D[start:start + n]) for the aligned ranges that PROOF and MTH visit."""
        if n & (n - 1) == 0:
            height = n.bit_length() - 1
            index = start >> height
            return self._levels[height][32 * index : 32 * index + 32]
        k = split_point(n)
        return node_hash(self._subtree(start, k), self._subtree(start + k, n - k))

    def root(self, n: int) -> bytes:
        return self._subtree(0, n)

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n <= size."""
        return self._subproof(m, 0, n, complete=True)

    def _subproof(self, m: int, start: int, n: int, *, complete: bool) -> list[bytes]:
        if m == n:
            return [] if complete else [self._subtree(start, m)]
        k = split_point(n)
        if m <= k:
            return [
                *self._subproof(m, start, k, complete=complete),
                self._subtree(start + k, n - k),
            ]
        return [
            *self._subproof(m - k, start + k, n - k, complete=False),
            self._subtree(start, k),
        ]


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: Sequence[bytes]
) -> bool:
    """Section 2.1.4.2, for 0 < first < second."""
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0


def entries(n: int, tag: bytes = b"e") -> list[bytes]:
    return [tag + i.to_bytes(8, "big") for i in range(n)]


def flip(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 1]) + digest[1:]


def test_reference_tree_matches_the_definition() -> None:
    data = entries(40)
    tree = MerkleTree(data)
    for n in range(1, 41):
        assert tree.root(n) == merkle_tree_hash(data[:n])
    # RFC 9162 section 2.1.5's example tree of 7 leaves: PROOF(3, D[7]) is [c, d, g, l].
    assert len(tree.consistency_proof(3, 7)) == 4


def test_reference_proofs_verify_and_tampering_is_caught() -> None:
    tree = MerkleTree(entries(40))
    for n in range(2, 41):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            old, new = tree.root(m), tree.root(n)
            assert verify_consistency(m, n, old, new, proof), (m, n)
            assert not verify_consistency(m, n, flip(old), new, proof)
            assert not verify_consistency(m, n, old, flip(new), proof)
            for i in range(len(proof)):
                tampered = [*proof[:i], flip(proof[i]), *proof[i + 1 :]]
                assert not verify_consistency(m, n, old, new, tampered), (m, n, i)


# --- the committed artifact ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def artifact() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return result


def test_artifact_matches_recompiled_source(artifact: dict[str, Any]) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH: the contracts are compiled with solc-js"
    result = subprocess.run(
        [node, str(CONTRACTS / "compile.mjs"), "--stdout"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"compiling failed, {INSTALL_HINT}:\n{result.stderr}"
    fresh = json.loads(result.stdout)["AnchorRegistry"]
    stale = "contracts/build/AnchorRegistry.json is stale: run `npm run build --prefix contracts`"
    assert fresh["abi"] == artifact["abi"], stale
    assert fresh["bytecode"] == artifact["bytecode"], stale
    assert fresh["deployedBytecode"] == artifact["deployedBytecode"], stale
    assert fresh == artifact, stale


def test_artifact_names_its_source_and_compiler(artifact: dict[str, Any]) -> None:
    source = SOURCE.read_bytes()
    assert artifact["sourceSha256"] == hashlib.sha256(source).hexdigest()
    pragma = re.search(rb"^pragma solidity (\d+\.\d+\.\d+);$", source, re.MULTILINE)
    assert pragma is not None, "the pragma must pin an exact compiler version"
    package = json.loads((CONTRACTS / "package.json").read_text())
    assert package["devDependencies"]["solc"] == pragma.group(1).decode()
    assert artifact["compiler"]["version"].startswith(pragma.group(1).decode() + "+")
    assert artifact["settings"] == {
        "optimizer": {"enabled": True, "runs": 200},
        "evmVersion": "paris",
    }


def _opcodes(code: bytes) -> Iterator[int]:
    """The opcodes of runtime code, skipping PUSH data and solc's trailing CBOR metadata."""
    metadata_length = int.from_bytes(code[-2:], "big")
    code = code[: -(metadata_length + 2)]
    pc = 0
    while pc < len(code):
        op = code[pc]
        yield op
        pc += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)


def test_runtime_code_cannot_call_out_create_or_self_destruct(artifact: dict[str, Any]) -> None:
    forbidden = {
        0xF0: "CREATE",
        0xF1: "CALL",
        0xF2: "CALLCODE",
        0xF4: "DELEGATECALL",
        0xF5: "CREATE2",
        0xFF: "SELFDESTRUCT",
    }
    ops = list(_opcodes(bytes.fromhex(artifact["deployedBytecode"][2:])))
    assert not {forbidden[op] for op in ops if op in forbidden}
    assert 0xFA in ops  # STATICCALL, to the SHA-256 precompile only
    assert 0x5F not in ops  # PUSH0: the code targets paris


# --- on py-evm ------------------------------------------------------------------------------------


@pytest.fixture
def w3() -> Web3:
    return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))


def deploy_with_receipt(
    w3: Web3, artifact: dict[str, Any], deployer: ChecksumAddress
) -> tuple[Contract, TxReceipt]:
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor().transact({"from": deployer})
    )
    assert receipt["status"] == 1
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=artifact["abi"]), receipt


def deploy(w3: Web3, artifact: dict[str, Any], deployer: ChecksumAddress) -> Contract:
    return deploy_with_receipt(w3, artifact, deployer)[0]


def send(w3: Web3, fn: ContractFunction, sender: ChecksumAddress) -> TxReceipt:
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
    assert receipt["status"] == 1
    return receipt


def error_data(exc: BaseException) -> bytes:
    """The revert data of a failed call: web3 hands it over as hex for a JSON-RPC node, and as
    the repr of the bytes in the message for the in-process eth-tester provider."""
    if isinstance(exc, ContractCustomError):
        data = exc.data
        assert isinstance(data, str)
        return bytes.fromhex(data.removeprefix("0x"))
    message = str(exc.args[0])
    prefix = "execution reverted: "
    assert message.startswith(prefix), message
    data = ast.literal_eval(message.removeprefix(prefix))
    assert isinstance(data, bytes), message
    return data


def decode_error(registry: Contract, data: bytes) -> tuple[str, tuple[Any, ...]]:
    """(name, arguments) of the custom error whose ABI encoding is data."""
    for item in registry.abi:
        if item["type"] != "error":
            continue
        types = [param["type"] for param in item["inputs"]]
        if Web3.keccak(text=f"{item['name']}({','.join(types)})")[:4] == data[:4]:
            values = abi_decode(types, data[4:])
            return item["name"], tuple(
                Web3.to_checksum_address(v) if t == "address" else v
                for t, v in zip(types, values, strict=True)
            )
    raise AssertionError(f"revert data {data.hex()} is no custom error of the registry")


def reverts(
    registry: Contract, fn: ContractFunction, sender: ChecksumAddress
) -> tuple[str, tuple[Any, ...]]:
    """Sends fn from sender, expecting it to revert; returns the decoded custom error."""
    with pytest.raises((TransactionFailed, ContractCustomError)) as info:
        fn.transact({"from": sender})
    return decode_error(registry, error_data(info.value))


def events(registry: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in registry.events[name]().process_receipt(receipt)]


@pytest.fixture
def registry(w3: Web3, artifact: dict[str, Any]) -> Contract:
    """A registry owned by accounts[0] with accounts[1] authorized to anchor."""
    owner, anchorer = w3.eth.accounts[:2]
    contract = deploy(w3, artifact, owner)
    send(w3, contract.functions.authorize(anchorer), owner)
    return contract


def test_deployment(w3: Web3, artifact: dict[str, Any]) -> None:
    owner = w3.eth.accounts[0]
    contract = deploy(w3, artifact, owner)
    assert w3.eth.get_code(contract.address).to_0x_hex() == artifact["deployedBytecode"]
    assert contract.functions.owner().call() == owner
    assert contract.functions.pendingOwner().call() == ZERO_ADDRESS
    assert not contract.functions.authorized(owner).call()
    assert contract.functions.latest(CALLS).call() == [0, ZERO_HASH, 0, True]
    created = contract.events.OwnershipTransferred().get_logs(from_block=0)
    assert [dict(e["args"]) for e in created] == [
        {"previousOwner": ZERO_ADDRESS, "newOwner": owner}
    ]


def test_first_anchor_takes_an_empty_proof(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(5))
    receipt = send(w3, registry.functions.anchor(CALLS, 5, tree.root(5), []), anchorer)
    assert events(registry, "Anchored", receipt) == [
        {
            "stream": CALLS,
            "size": 5,
            "root": tree.root(5),
            "previousRoot": ZERO_HASH,
            "previousSize": 0,
            "proofChecked": True,
            "by": anchorer,
        }
    ]
    assert registry.functions.latest(CALLS).call() == [
        5,
        tree.root(5),
        receipt["blockNumber"],
        True,
    ]


def test_anchor_extends_with_a_consistency_proof(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(23))
    send(w3, registry.functions.anchor(CALLS, 7, tree.root(7), []), anchorer)
    proof = tree.consistency_proof(7, 23)
    receipt = send(w3, registry.functions.anchor(CALLS, 23, tree.root(23), proof), anchorer)
    assert events(registry, "Anchored", receipt) == [
        {
            "stream": CALLS,
            "size": 23,
            "root": tree.root(23),
            "previousRoot": tree.root(7),
            "previousSize": 7,
            "proofChecked": True,
            "by": anchorer,
        }
    ]
    assert registry.functions.latest(CALLS).call() == [
        23,
        tree.root(23),
        receipt["blockNumber"],
        True,
    ]


def test_contract_verifies_as_rfc_9162_says(w3: Web3, registry: Contract) -> None:
    """Every (m, n) with m < n <= 12: the honest proof passes; any changed, missing or extra
    hash, or a proof for another size, fails."""
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(12))
    for m in range(1, 12):
        stream = Web3.keccak(text=f"rfc-{m}")
        send(w3, registry.functions.anchor(stream, m, tree.root(m), []), anchorer)
        for n in range(m + 1, 13):
            proof = tree.consistency_proof(m, n)
            registry.functions.anchor(stream, n, tree.root(n), proof).call({"from": anchorer})
            bad = [[*proof[:i], flip(proof[i]), *proof[i + 1 :]] for i in range(len(proof))]
            bad += [proof[:-1], [*proof, proof[-1]], []]
            if n < 12:
                bad.append(tree.consistency_proof(m, n + 1))
            for path in bad:
                fn = registry.functions.anchor(stream, n, tree.root(n), path)
                assert reverts(registry, fn, anchorer) == (
                    "InvalidConsistencyProof",
                    (m, tree.root(m)),
                ), (m, n, path)


def test_anchor_refuses_a_rewritten_history(w3: Web3, registry: Contract) -> None:
    """A proof that is valid for another tree whose first 8 entries differ from the anchored
    ones does not extend the anchored root."""
    anchorer = w3.eth.accounts[1]
    honest = MerkleTree(entries(8))
    forged = MerkleTree([*entries(3), b"rewritten", *entries(20)[4:]])
    send(w3, registry.functions.anchor(CALLS, 8, honest.root(8), []), anchorer)
    proof = forged.consistency_proof(8, 20)
    assert verify_consistency(8, 20, forged.root(8), forged.root(20), proof)
    fn = registry.functions.anchor(CALLS, 20, forged.root(20), proof)
    assert reverts(registry, fn, anchorer) == ("InvalidConsistencyProof", (8, honest.root(8)))


def test_anchor_refuses_a_wrong_new_root(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(9))
    send(w3, registry.functions.anchor(CALLS, 6, tree.root(6), []), anchorer)
    fn = registry.functions.anchor(CALLS, 9, flip(tree.root(9)), tree.consistency_proof(6, 9))
    assert reverts(registry, fn, anchorer) == ("InvalidConsistencyProof", (6, tree.root(6)))


def test_anchor_refuses_a_size_that_does_not_grow(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(6))
    fn = registry.functions.anchor(CALLS, 0, tree.root(1), [])
    assert reverts(registry, fn, anchorer) == ("SizeNotIncreasing", (0, 0))
    send(w3, registry.functions.anchor(CALLS, 5, tree.root(5), []), anchorer)
    for size in (5, 4, 0):
        fn = registry.functions.anchor(CALLS, size, tree.root(max(size, 1)), [])
        assert reverts(registry, fn, anchorer) == ("SizeNotIncreasing", (size, 5))


def test_first_anchor_refuses_a_proof(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    tree = MerkleTree(entries(4))
    fn = registry.functions.anchor(CALLS, 4, tree.root(4), [tree.root(2)])
    assert reverts(registry, fn, anchorer) == ("UnexpectedProof", ())


def test_streams_are_anchored_independently(w3: Web3, registry: Contract) -> None:
    anchorer = w3.eth.accounts[1]
    calls, governance = MerkleTree(entries(10, b"c")), MerkleTree(entries(3, b"g"))
    send(w3, registry.functions.anchor(CALLS, 10, calls.root(10), []), anchorer)
    receipt = send(w3, registry.functions.anchor(GOVERNANCE, 3, governance.root(3), []), anchorer)
    assert events(registry, "Anchored", receipt)[0]["previousSize"] == 0
    assert registry.functions.latest(CALLS).call()[:2] == [10, calls.root(10)]
    assert registry.functions.latest(GOVERNANCE).call()[:2] == [3, governance.root(3)]


def test_streams_of_other_hashes_are_anchored_without_proofs(w3: Web3, registry: Contract) -> None:
    """An SM3 stream: the registry keeps its roots append-only by size, says in every event
    that no proof was checked, and never lets the stream switch mode."""
    anchorer = w3.eth.accounts[1]
    sm3 = Web3.keccak(text="sm3-calls")
    first = send(w3, registry.functions.anchorWithoutProof(sm3, 4, b"\x04" * 32), anchorer)
    second = send(w3, registry.functions.anchorWithoutProof(sm3, 9, b"\x09" * 32), anchorer)
    assert events(registry, "Anchored", first)[0]["proofChecked"] is False
    assert events(registry, "Anchored", second) == [
        {
            "stream": sm3,
            "size": 9,
            "root": b"\x09" * 32,
            "previousRoot": b"\x04" * 32,
            "previousSize": 4,
            "proofChecked": False,
            "by": anchorer,
        }
    ]
    assert registry.functions.latest(sm3).call() == [9, b"\x09" * 32, second["blockNumber"], False]
    fn = registry.functions.anchorWithoutProof(sm3, 9, b"\x0a" * 32)
    assert reverts(registry, fn, anchorer) == ("SizeNotIncreasing", (9, 9))
    fn = registry.functions.anchor(sm3, 12, b"\x0c" * 32, [b"\x00" * 32])
    assert reverts(registry, fn, anchorer) == ("StreamModeMismatch", (False,))
    # A stream anchored with proofs can never continue without them.
    tree = MerkleTree(entries(8))
    send(w3, registry.functions.anchor(CALLS, 5, tree.root(5), []), anchorer)
    fn = registry.functions.anchorWithoutProof(CALLS, 8, tree.root(8))
    assert reverts(registry, fn, anchorer) == ("StreamModeMismatch", (True,))
    fn = registry.functions.anchorWithoutProof(GOVERNANCE, 1, tree.root(1))
    assert reverts(registry, fn, w3.eth.accounts[2]) == ("NotAuthorized", (w3.eth.accounts[2],))


def test_only_authorized_accounts_anchor(w3: Web3, registry: Contract) -> None:
    owner, anchorer, other = w3.eth.accounts[:3]
    tree = MerkleTree(entries(4))
    for sender in (owner, other):
        fn = registry.functions.anchor(CALLS, 2, tree.root(2), [])
        assert reverts(registry, fn, sender) == ("NotAuthorized", (sender,))

    receipt = send(w3, registry.functions.authorize(other), owner)
    assert events(registry, "Authorized", receipt) == [{"account": other}]
    assert registry.functions.authorized(other).call()
    send(w3, registry.functions.anchor(CALLS, 2, tree.root(2), []), other)

    receipt = send(w3, registry.functions.revoke(anchorer), owner)
    assert events(registry, "Revoked", receipt) == [{"account": anchorer}]
    assert not registry.functions.authorized(anchorer).call()
    fn = registry.functions.anchor(CALLS, 4, tree.root(4), tree.consistency_proof(2, 4))
    assert reverts(registry, fn, anchorer) == ("NotAuthorized", (anchorer,))
    send(w3, fn, other)


def test_only_the_owner_manages_anchoring_accounts(w3: Web3, registry: Contract) -> None:
    owner, anchorer, other = w3.eth.accounts[:3]
    for fn in (registry.functions.authorize(other), registry.functions.revoke(anchorer)):
        assert reverts(registry, fn, anchorer) == ("NotOwner", (anchorer,))
    fn = registry.functions.authorize(ZERO_ADDRESS)
    assert reverts(registry, fn, owner) == ("ZeroAddress", ())
    fn = registry.functions.transferOwnership(other)
    assert reverts(registry, fn, anchorer) == ("NotOwner", (anchorer,))


def test_ownership_moves_in_two_steps(w3: Web3, registry: Contract) -> None:
    owner, anchorer, heir, other = w3.eth.accounts[:4]
    receipt = send(w3, registry.functions.transferOwnership(other), owner)
    assert events(registry, "OwnershipTransferStarted", receipt) == [
        {"previousOwner": owner, "newOwner": other}
    ]
    # A second offer replaces the first; the owner stays in charge until it is accepted.
    send(w3, registry.functions.transferOwnership(heir), owner)
    assert registry.functions.pendingOwner().call() == heir
    assert registry.functions.owner().call() == owner
    fn = registry.functions.acceptOwnership()
    assert reverts(registry, fn, other) == ("NotPendingOwner", (other,))
    send(w3, registry.functions.revoke(anchorer), owner)

    receipt = send(w3, registry.functions.acceptOwnership(), heir)
    assert events(registry, "OwnershipTransferred", receipt) == [
        {"previousOwner": owner, "newOwner": heir}
    ]
    assert registry.functions.owner().call() == heir
    assert registry.functions.pendingOwner().call() == ZERO_ADDRESS
    fn = registry.functions.authorize(anchorer)
    assert reverts(registry, fn, owner) == ("NotOwner", (owner,))
    send(w3, fn, heir)

    # Offering ownership to the zero address withdraws a pending offer.
    send(w3, registry.functions.transferOwnership(owner), heir)
    send(w3, registry.functions.transferOwnership(ZERO_ADDRESS), heir)
    fn = registry.functions.acceptOwnership()
    assert reverts(registry, fn, owner) == ("NotPendingOwner", (owner,))


# --- gas --------------------------------------------------------------------------------------

GAS_MAX_HEIGHT = 20
# (size, proof length, gasUsed from size - 1, gasUsed from size / 2 + 1 or None)
GasRow = tuple[int, int, int, int | None]


@pytest.fixture(scope="module")
def big_tree() -> MerkleTree:
    return MerkleTree(entries(1 << GAS_MAX_HEIGHT))


def measure_anchor_gas(w3: Web3, registry: Contract, tree: MerkleTree) -> tuple[int, list[GasRow]]:
    """Gas of a stream's first anchor, and rows (size, proof length, gas from size - 1, gas from
    size / 2 + 1) for sizes 2**1 .. 2**GAS_MAX_HEIGHT. Each anchor is the second of a fresh
    stream, so its storage writes are the steady-state nonzero-to-nonzero ones."""
    anchorer = w3.eth.accounts[1]

    def second_anchor(previous: int, size: int) -> tuple[int, int]:
        stream = Web3.keccak(text=f"gas-{previous}-{size}")
        send(w3, registry.functions.anchor(stream, previous, tree.root(previous), []), anchorer)
        proof = tree.consistency_proof(previous, size)
        receipt = send(
            w3, registry.functions.anchor(stream, size, tree.root(size), proof), anchorer
        )
        return len(proof), receipt["gasUsed"]

    first_gas = send(w3, registry.functions.anchor(CALLS, 1, tree.root(1), []), anchorer)["gasUsed"]
    rows: list[GasRow] = []
    for height in range(1, GAS_MAX_HEIGHT + 1):
        size = 1 << height
        length, from_previous = second_anchor(size - 1, size)
        from_half: int | None = None
        if size // 2 + 1 < size - 1:
            half_length, from_half = second_anchor(size // 2 + 1, size)
            assert half_length == length
        rows.append((size, length, from_previous, from_half))
    return first_gas, rows


def gas_doc(
    backend: str, deploy_gas: int, first_gas: int, rows: Sequence[GasRow], proofless: int
) -> str:
    (_, short, short_gas, _), (_, long, long_gas, _) = rows[1], rows[-1]
    slope = round((long_gas - short_gas) / (long - short))
    table = "\n".join(
        f"| 2^{size.bit_length() - 1} = {size} | {length} | {gas} | {half or '—'} |"
        for size, length, gas, half in rows
    )
    return f"""# Gas per anchor

What `AnchorRegistry.anchor` costs, measured by `tests/test_contracts.py::test_anchor_gas` with
the committed artifact (`contracts/build/AnchorRegistry.json`: solc 0.8.37, optimizer 200 runs,
EVM version paris) on {backend}. gasUsed is the whole transaction: the 21000 base,
calldata and execution. `test_anchor_on_anvil` checks that anvil charges the same. Regenerate
this file with

    {GAS_COMMAND}

(without `{UPDATE_GAS_DOC}=1` the test fails when this file no longer matches the contract).

- deployment: {deploy_gas} gas
- first anchor of a stream (empty proof, two storage slots written from zero): {first_gas} gas

Every later anchor carries an RFC 9162 consistency proof from the stream's previous anchor and
rewrites the same two slots. Its cost grows with the proof, that is with log2(size), not with
the size or with the number of entries added since the previous anchor: about {slope} gas per
hash in the proof. In the table the previous anchor was at size − 1 (one entry added) or at
size / 2 + 1 (almost half the log added); both proofs have the same length:

| size | proof length (hashes) | gasUsed, previous = size − 1 | gasUsed, previous = size / 2 + 1 |
|---:|---:|---:|---:|
{table}

A stream hashed with SM3 is anchored with `anchorWithoutProof` (no proof: the EVM cannot
compute SM3, so consistency is checked off chain by `dsgw audit --chain`); a later anchor of
such a stream costs {proofless} gas at any size.
"""


def test_anchor_gas(artifact: dict[str, Any], big_tree: MerkleTree) -> None:
    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    owner, anchorer = w3.eth.accounts[:2]
    registry, deployed = deploy_with_receipt(w3, artifact, owner)
    send(w3, registry.functions.authorize(anchorer), owner)

    first_gas, rows = measure_anchor_gas(w3, registry, big_tree)
    sm3 = Web3.keccak(text="sm3")
    send(w3, registry.functions.anchorWithoutProof(sm3, 1, b"\x01" * 32), anchorer)
    proofless = send(w3, registry.functions.anchorWithoutProof(sm3, 2**20, b"\x02" * 32), anchorer)
    assert proofless["gasUsed"] < first_gas
    for size, length, gas, half in rows:
        print(f"size {size:>8}  proof {length:>2}  gas {gas:>6}  (from size/2+1: {half})")
    # Proofs grow with log2(size), and so does the cost: a log of a million entries anchors
    # for well under 100k gas.
    assert [length for _, length, _, _ in rows] == [1, *range(3, GAS_MAX_HEIGHT + 2)]
    assert max(gas for _, _, gas, _ in rows) < 100_000

    backend = f"py-evm ({tester.backend.chain.get_vm().fork})"
    text = gas_doc(backend, deployed["gasUsed"], first_gas, rows, proofless["gasUsed"])
    if os.environ.get(UPDATE_GAS_DOC) == "1":
        GAS_DOC.write_text(text)
    assert GAS_DOC.exists() and GAS_DOC.read_text() == text, (
        f"docs/anchor-gas.md does not match the measured gas: run `{GAS_COMMAND}`"
    )


# --- on a real node: anvil from contracts/node_modules ---------------------------------------


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[str]:
    """An anvil node on a free loopback port; yields its URL and stops it afterwards."""
    assert ANVIL.exists(), f"{ANVIL.relative_to(ROOT)} is missing: {INSTALL_HINT}"
    log = tmp_path / "anvil.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", "0", "--accounts", "2", *PRAGUE],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while (match := re.search(rb"Listening on (127\.0\.0\.1:\d+)", log.read_bytes())) is None:
            assert process.poll() is None, f"anvil exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"anvil did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield f"http://{match.group(1).decode()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_anchor_on_anvil(anvil: str, artifact: dict[str, Any]) -> None:
    """The owner is an anvil dev account (unlocked, funded); the anchoring account is a fresh
    key that signs its transactions locally, as the gateway will."""
    w3 = Web3(Web3.HTTPProvider(anvil, request_kwargs={"timeout": 30}))
    assert w3.is_connected()
    owner = w3.eth.accounts[0]
    registry = deploy(w3, artifact, owner)
    assert w3.eth.get_code(registry.address).to_0x_hex() == artifact["deployedBytecode"]

    gateway = Account.create()
    send(w3, registry.functions.authorize(gateway.address), owner)
    funding = w3.eth.send_transaction(
        {"from": owner, "to": gateway.address, "value": w3.to_wei(1, "ether")}
    )
    w3.eth.wait_for_transaction_receipt(funding)

    def anchor_signed(size: int, root: bytes, proof: list[bytes]) -> TxReceipt:
        tx = registry.functions.anchor(CALLS, size, root, proof).build_transaction(
            {"from": gateway.address, "nonce": w3.eth.get_transaction_count(gateway.address)}
        )
        signed = gateway.sign_transaction(tx)
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
        return receipt

    tree = MerkleTree(entries(1000))
    first = anchor_signed(600, tree.root(600), [])
    receipt = anchor_signed(1000, tree.root(1000), tree.consistency_proof(600, 1000))
    assert events(registry, "Anchored", receipt) == [
        {
            "stream": CALLS,
            "size": 1000,
            "root": tree.root(1000),
            "previousRoot": tree.root(600),
            "previousSize": 600,
            "proofChecked": True,
            "by": gateway.address,
        }
    ]
    assert registry.functions.latest(CALLS).call() == [
        1000,
        tree.root(1000),
        receipt["blockNumber"],
        True,
    ]

    # The node charges what py-evm charges, so docs/anchor-gas.md holds for a real node.
    tester = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    tester_owner, tester_anchorer = tester.eth.accounts[:2]
    twin = deploy(tester, artifact, tester_owner)
    send(tester, twin.functions.authorize(tester_anchorer), tester_owner)
    twin_first = send(
        tester, twin.functions.anchor(CALLS, 600, tree.root(600), []), tester_anchorer
    )
    twin_second = send(
        tester,
        twin.functions.anchor(CALLS, 1000, tree.root(1000), tree.consistency_proof(600, 1000)),
        tester_anchorer,
    )
    assert (first["gasUsed"], receipt["gasUsed"]) == (twin_first["gasUsed"], twin_second["gasUsed"])

    # The node reports the custom error of a refused anchor.
    fn = registry.functions.anchor(CALLS, 1000, tree.root(1000), [])
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": gateway.address})
    assert decode_error(registry, error_data(info.value)) == ("SizeNotIncreasing", (1000, 1000))
