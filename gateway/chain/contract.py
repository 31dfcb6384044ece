"""The AnchorRegistry contract (``contracts/src/AnchorRegistry.sol``) from Python: its
compiled artifact, deployment on dev chains, the calls the anchoring worker makes, and the
``Anchored`` events it emits.

Calls are encoded and results decoded here with eth-abi against the artifact's ABI, checked
once when the artifact is loaded, so that a contract that does not match this code is refused
at start, not at the first anchor.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_typing import ChecksumAddress, HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.exceptions import ContractLogicError
from web3.types import LogReceipt, TxReceipt

from gateway.chain.backends import ChainBackend
from gateway.chain.errors import ChainConfigError, ChainError, rpc_errors

__all__ = [
    "ANCHORED_TOPIC",
    "ARTIFACT_PATH",
    "AnchorRegistry",
    "AnchoredEvent",
    "RegistryArtifact",
    "RegistryHead",
    "revert_reason",
    "stream_id",
]

ARTIFACT_PATH: Final = (
    Path(__file__).resolve().parents[2] / "contracts" / "build" / "AnchorRegistry.json"
)

_ANCHOR_SIGNATURE: Final = "anchor(bytes32,uint64,bytes32,bytes32[])"
_ANCHOR_WITHOUT_PROOF_SIGNATURE: Final = "anchorWithoutProof(bytes32,uint64,bytes32)"
_LATEST_SIGNATURE: Final = "latest(bytes32)"
_AUTHORIZED_SIGNATURE: Final = "authorized(address)"
_AUTHORIZE_SIGNATURE: Final = "authorize(address)"
_OWNER_SIGNATURE: Final = "owner()"
_ANCHORED_SIGNATURE: Final = "Anchored(bytes32,uint64,bytes32,bytes32,uint64,bool,address)"
ANCHORED_TOPIC: Final = keccak(text=_ANCHORED_SIGNATURE)
"""topic0 of ``Anchored``; topic1 is the stream id, topic2 the anchoring account."""


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def stream_id(stream: str) -> bytes:
    """The registry's id of a log stream: ``keccak256`` of its UTF-8 name, as the contract
    documents (``keccak256("calls")``)."""
    return keccak(text=stream)


@dataclass(frozen=True, slots=True)
class RegistryArtifact:
    """The compiled contract: ABI, creation code and the runtime code a deployment has."""

    abi: tuple[Mapping[str, Any], ...]
    bytecode: bytes
    deployed_bytecode: bytes

    @classmethod
    def from_file(cls, path: Path = ARTIFACT_PATH) -> RegistryArtifact:
        """Load ``contracts/build/AnchorRegistry.json`` (or ``path``).

        Raises :class:`ChainConfigError` if the file is missing, unreadable, or its ABI lacks
        a function or event this code calls.
        """
        try:
            data = json.loads(path.read_text("utf-8"))
            artifact = cls(
                abi=tuple(data["abi"]),
                bytecode=bytes.fromhex(str(data["bytecode"]).removeprefix("0x")),
                deployed_bytecode=bytes.fromhex(str(data["deployedBytecode"]).removeprefix("0x")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ChainConfigError(
                f"chain: cannot load the AnchorRegistry artifact {path} ({exc}); "
                "run `npm ci --prefix contracts && npm run build --prefix contracts`"
            ) from exc
        artifact._check()
        return artifact

    def _signatures(self, kind: str) -> set[str]:
        return {
            f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            for item in self.abi
            if item.get("type") == kind
        }

    def _check(self) -> None:
        functions = self._signatures("function")
        needed = {
            _ANCHOR_SIGNATURE,
            _ANCHOR_WITHOUT_PROOF_SIGNATURE,
            _LATEST_SIGNATURE,
            _AUTHORIZED_SIGNATURE,
            _AUTHORIZE_SIGNATURE,
            _OWNER_SIGNATURE,
        }
        missing = sorted(needed - functions)
        if _ANCHORED_SIGNATURE not in self._signatures("event"):
            missing.append(f"event {_ANCHORED_SIGNATURE}")
        if missing or not self.bytecode or not self.deployed_bytecode:
            raise ChainConfigError(
                f"chain: the AnchorRegistry artifact does not match this gateway (missing "
                f"{', '.join(missing) or 'bytecode'}); rebuild it with "
                "`npm run build --prefix contracts`"
            )

    def describe_error(self, data: bytes) -> str | None:
        """``Name(arg=value, ...)`` of the custom error whose ABI encoding is ``data``, or
        None if it is none of the registry's errors."""
        for item in self.abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            if _selector(f"{item['name']}({','.join(types)})") != data[:4]:
                continue
            try:
                values = abi_decode(types, data[4:])
            except DecodingError:
                return None
            args = ", ".join(
                f"{i['name']}={'0x' + v.hex() if isinstance(v, bytes) else v}"
                for i, v in zip(item["inputs"], values, strict=True)
            )
            return f"{item['name']}({args})"
        return None


@dataclass(frozen=True, slots=True)
class RegistryHead:
    """A stream's latest anchor according to the registry (all zero if never anchored).

    ``proof_checked`` is False for a stream anchored without consistency proofs (SM3 trees,
    which the EVM cannot hash); a stream keeps the mode of its first anchor.
    """

    size: int
    root: bytes
    block_number: int
    proof_checked: bool = True


@dataclass(frozen=True, slots=True)
class AnchoredEvent:
    """One ``Anchored`` log: the registry accepted (size, root) for a stream."""

    stream_id: bytes
    size: int
    root: bytes
    previous_root: bytes
    previous_size: int
    proof_checked: bool
    by: ChecksumAddress
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int


def revert_reason(exc: BaseException, artifact: RegistryArtifact) -> str:
    """A readable reason for a reverted call or gas estimate: the registry's custom error
    with its arguments where the node hands over the revert data."""
    data: bytes | None = None
    if isinstance(exc, ContractLogicError) and isinstance(exc.data, str):
        try:
            data = bytes.fromhex(exc.data.removeprefix("0x"))
        except ValueError:
            data = None
    elif exc.args and str(exc.args[0]).startswith("execution reverted: b"):
        # eth-tester's TransactionFailed carries the repr of the revert bytes.
        text = str(exc.args[0]).removeprefix("execution reverted: ")
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        data = parsed if isinstance(parsed, bytes) else None
    if data:
        described = artifact.describe_error(data)
        if described:
            return described
        return f"revert data 0x{data.hex()}"
    return str(exc) or type(exc).__name__


class AnchorRegistry:
    """A deployed registry at ``address`` on ``backend``'s chain.

    Read calls go to the node each time (nothing is cached), so an instance stays valid
    across node restarts. Every method raises :class:`ChainUnavailableError` when the node
    does not answer.
    """

    def __init__(
        self, backend: ChainBackend, address: str, artifact: RegistryArtifact | None = None
    ) -> None:
        self._backend = backend
        self._address = to_checksum_address(address)
        self._artifact = artifact or RegistryArtifact.from_file()

    @property
    def address(self) -> ChecksumAddress:
        return self._address

    @property
    def backend(self) -> ChainBackend:
        return self._backend

    @property
    def artifact(self) -> RegistryArtifact:
        return self._artifact

    # -- dev chains: deploy and authorize through the node's unlocked accounts ---------

    @classmethod
    async def deploy(
        cls,
        backend: ChainBackend,
        deployer: ChecksumAddress,
        artifact: RegistryArtifact | None = None,
    ) -> tuple[AnchorRegistry, TxReceipt]:
        """Deploy a registry owned by ``deployer``, an account the node signs for (dev
        chains). Returns the registry and the deployment's receipt.

        Raises :class:`ChainError` if the deployment fails.
        """
        artifact = artifact or RegistryArtifact.from_file()
        receipt = await backend.send_unlocked(
            {"from": deployer, "data": HexStr("0x" + artifact.bytecode.hex())},
            "deploy the AnchorRegistry",
        )
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError("chain: deploying the AnchorRegistry produced no contract")
        return cls(backend, address, artifact), receipt

    async def authorize(self, account: str, *, owner: ChecksumAddress) -> TxReceipt:
        """Let ``account`` anchor, sent by ``owner`` through the node (dev chains)."""
        data = _selector(_AUTHORIZE_SIGNATURE) + abi_encode(
            ["address"], [to_checksum_address(account)]
        )
        return await self._backend.send_unlocked(
            {"from": owner, "to": self._address, "data": HexStr("0x" + data.hex())},
            f"authorize {account} on the AnchorRegistry",
        )

    # -- reads ---------------------------------------------------------------------------

    async def _call(self, step: str, data: bytes) -> bytes:
        with rpc_errors(step, self._backend.node):
            result = await self._backend.w3.eth.call(
                {"to": self._address, "data": HexStr("0x" + data.hex())}
            )
        return bytes(result)

    async def deployed(self) -> bool:
        """Whether the registry's runtime code is at :attr:`address` (False on a chain that
        lost it, e.g. a reset dev chain)."""
        with rpc_errors("reading the registry's code", self._backend.node):
            code = await self._backend.w3.eth.get_code(self._address)
        return bytes(code) == self._artifact.deployed_bytecode

    async def chain_id(self) -> int:
        with rpc_errors("reading the chain id", self._backend.node):
            return int(await self._backend.w3.eth.chain_id)

    async def latest(self, stream: str) -> RegistryHead:
        """The stream's latest anchor on chain."""
        data = _selector(_LATEST_SIGNATURE) + abi_encode(["bytes32"], [stream_id(stream)])
        result = await self._call(f"reading the registry's latest {stream!r} anchor", data)
        try:
            size, root, block, checked = abi_decode(["uint64", "bytes32", "uint64", "bool"], result)
        except DecodingError as exc:
            raise ChainConfigError(
                f"chain: the contract at {self._address} answered latest() with "
                f"{result.hex()!r}, not an AnchorRegistry answer; check the registry address"
            ) from exc
        return RegistryHead(
            size=int(size), root=bytes(root), block_number=int(block), proof_checked=bool(checked)
        )

    async def authorized(self, account: str) -> bool:
        data = _selector(_AUTHORIZED_SIGNATURE) + abi_encode(
            ["address"], [to_checksum_address(account)]
        )
        result = await self._call("reading the registry's authorized accounts", data)
        return bool(abi_decode(["bool"], result)[0])

    async def owner(self) -> ChecksumAddress:
        """The account that authorizes anchoring accounts."""
        result = await self._call("reading the registry's owner", _selector(_OWNER_SIGNATURE))
        return to_checksum_address(abi_decode(["address"], result)[0])

    def anchor_calldata(
        self, stream: str, size: int, root: bytes, consistency_proof: Sequence[bytes] | None
    ) -> bytes:
        """The input of ``anchor(streamId, size, root, consistencyProof)``, or of
        ``anchorWithoutProof(streamId, size, root)`` when ``consistency_proof`` is None (trees
        of a hash the EVM cannot compute)."""
        if len(root) != 32 or any(len(node) != 32 for node in consistency_proof or ()):
            raise ChainConfigError("chain: the registry takes 32-byte roots and proof hashes only")
        if consistency_proof is None:
            return _selector(_ANCHOR_WITHOUT_PROOF_SIGNATURE) + abi_encode(
                ["bytes32", "uint64", "bytes32"], [stream_id(stream), size, root]
            )
        return _selector(_ANCHOR_SIGNATURE) + abi_encode(
            ["bytes32", "uint64", "bytes32", "bytes32[]"],
            [stream_id(stream), size, root, list(consistency_proof)],
        )

    # -- events --------------------------------------------------------------------------

    def _event(self, entry: LogReceipt | Mapping[str, Any]) -> AnchoredEvent | None:
        topics = [bytes(t) for t in entry["topics"]]
        if (
            to_checksum_address(entry["address"]) != self._address
            or len(topics) != 3
            or topics[0] != ANCHORED_TOPIC
        ):
            return None
        size, root, previous_root, previous_size, checked = abi_decode(
            ["uint64", "bytes32", "bytes32", "uint64", "bool"], bytes(entry["data"])
        )
        return AnchoredEvent(
            stream_id=topics[1],
            size=int(size),
            root=bytes(root),
            previous_root=bytes(previous_root),
            previous_size=int(previous_size),
            proof_checked=bool(checked),
            by=to_checksum_address(topics[2][12:]),
            block_number=int(entry["blockNumber"]),
            block_hash=bytes(entry["blockHash"]),
            tx_hash=bytes(entry["transactionHash"]),
            log_index=int(entry["logIndex"]),
        )

    def events_in_receipt(self, receipt: TxReceipt) -> list[AnchoredEvent]:
        """The ``Anchored`` events of this registry in a transaction receipt."""
        found = (self._event(entry) for entry in receipt["logs"])
        return [event for event in found if event is not None]

    async def anchored_events(
        self,
        stream: str | None = None,
        *,
        from_block: int = 0,
        to_block: int | Literal["latest"] = "latest",
    ) -> list[AnchoredEvent]:
        """``Anchored`` events of one stream (or all), oldest first."""
        topics: list[Any] = [HexStr("0x" + ANCHORED_TOPIC.hex())]
        if stream is not None:
            topics.append(HexStr("0x" + stream_id(stream).hex()))
        with rpc_errors("reading Anchored events", self._backend.node):
            logs = await self._backend.w3.eth.get_logs(
                {
                    "address": self._address,
                    "topics": topics,
                    "fromBlock": from_block,
                    "toBlock": to_block,
                }
            )
        events = [e for e in (self._event(entry) for entry in logs) if e is not None]
        return sorted(events, key=lambda e: (e.block_number, e.log_index))
