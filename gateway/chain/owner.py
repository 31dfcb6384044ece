"""The AnchorRegistry's owner at work: deploying it, authorizing and revoking anchoring
accounts, handing ownership over, each a transaction signed with the owner's key.

The owner (in a consortium, the data bureau) is not the gateway: its key is kept apart,
ideally offline, and used only for these few acts. It is read from a file only its owner may
read (:func:`read_owner_key`), never from the gateway's keystore.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.exceptions import MethodUnavailable, TimeExhausted, Web3RPCError
from web3.types import TxParams, TxReceipt

from gateway.chain.backends import RpcBackend
from gateway.chain.contract import AnchorRegistry, RegistryArtifact, revert_reason
from gateway.chain.errors import ChainConfigError, ChainError, revert_errors, rpc_errors
from gateway.chain.qbft import NodeKey, parse_address
from gateway.errors import ForbiddenError, ValidationError

__all__ = [
    "call_data",
    "fees",
    "owner_call",
    "pending_owner",
    "read_owner_key",
    "registry_at",
    "transact",
]

_GAS_HEADROOM: Final = 1.25
_FALLBACK_PRIORITY_FEE: Final = 10**9  # 1 gwei, where the node has no fee oracle


def read_owner_key(path: Path) -> LocalAccount:
    """The account whose private key (hex, ``0x`` optional, one line) is in ``path``.

    Raises :class:`ForbiddenError` if the file may be read by its group or by others (only
    mode 0600 or 0400 will do), :class:`ValidationError` if it is not a key.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ValidationError(f"chain: cannot read the key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # the file read is the file checked
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError(f"chain: the key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ForbiddenError(
                f"chain: the key file {path} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); a private key must be mode 0600: "
                f"`chmod 600 {path}`"
            )
        data = handle.read(4096)
    try:
        key = NodeKey.from_besu_file(data.decode("ascii"))
    except (UnicodeDecodeError, ValidationError) as exc:
        raise ValidationError(
            f"chain: the key file {path} must hold one private key, 64 hex digits "
            "(0x optional), on one line"
        ) from exc
    account: LocalAccount = Account.from_key(key.private_key)
    return account


async def fees(backend: RpcBackend) -> dict[str, int]:
    """The fee fields of a transaction at the node's current prices: EIP-1559 where blocks
    have a base fee (zero on a free-gas QBFT network), a legacy gas price otherwise."""
    w3 = backend.w3
    with rpc_errors("reading gas prices", backend.node):
        block = await w3.eth.get_block("latest")
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(await w3.eth.gas_price)}
        try:
            priority = int(await w3.eth.max_priority_fee)
        except (Web3RPCError, MethodUnavailable):
            priority = _FALLBACK_PRIORITY_FEE
    return {
        "type": 2,
        "maxFeePerGas": 2 * int(base) + priority,
        "maxPriorityFeePerGas": priority,
    }


async def transact(
    backend: RpcBackend,
    sender: LocalAccount,
    *,
    to: ChecksumAddress | None,
    data: bytes,
    what: str,
    artifact: RegistryArtifact,
    timeout: float,
) -> TxReceipt:
    """Sign ``data`` (to ``to``, or a contract creation) with ``sender``'s key, send it and
    wait until it is mined.

    Raises :class:`ChainError` if the chain refuses it (with the registry's reason where it
    reverts), it reverts, or it is not mined within ``timeout`` seconds.
    """
    w3 = backend.w3
    call: TxParams = {"from": sender.address, "data": HexStr("0x" + data.hex())}
    if to is not None:
        call["to"] = to
    with rpc_errors(f"{what}: estimating gas", backend.node):
        try:
            estimate = int(await w3.eth.estimate_gas(call))
        except revert_errors() as exc:
            raise ChainError(
                f"chain: {what}: refused by the chain: {revert_reason(exc, artifact)}"
            ) from exc
        except Web3RPCError as exc:
            raise ChainError(f"chain: {what}: refused by the node: {exc}") from exc
        chain_id = int(await w3.eth.chain_id)
        nonce = int(await w3.eth.get_transaction_count(sender.address, "pending"))
    fields: dict[str, Any] = {
        "chainId": chain_id,
        "nonce": nonce,
        "gas": math.ceil(estimate * _GAS_HEADROOM),
        "value": 0,
        "data": data,
        **await fees(backend),
    }
    if to is not None:
        fields["to"] = to
    signed = sender.sign_transaction(fields)
    with rpc_errors(f"{what}: sending the transaction", backend.node):
        try:
            tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        except Web3RPCError as exc:
            raise ChainError(
                f"chain: {what}: the node refused the transaction ({exc}); on a network with "
                f"priced gas, {sender.address} needs funds"
            ) from exc
        try:
            receipt = await w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=timeout, poll_latency=0.5
            )
        except TimeExhausted as exc:
            raise ChainError(
                f"chain: {what}: transaction {tx_hash.to_0x_hex()} was not mined within "
                f"{timeout:.0f} s; check that the validators produce blocks (it may still be "
                "mined: look it up before sending again)"
            ) from exc
    if receipt["status"] != 1:
        raise ChainError(f"chain: {what}: reverted in transaction {tx_hash.to_0x_hex()}")
    return receipt


def call_data(signature: str, *addresses: str) -> bytes:
    """Calldata of ``signature`` (e.g. ``authorize(address)``) with address arguments."""
    data = keccak(text=signature)[:4]
    if addresses:
        data += abi_encode(["address"] * len(addresses), list(addresses))
    return data


async def registry_at(backend: RpcBackend, contract: str) -> AnchorRegistry:
    registry = AnchorRegistry(backend, parse_address(contract, "registry address"))
    if not await registry.deployed():
        raise ChainConfigError(
            f"chain: no AnchorRegistry at {registry.address} on {backend.node} (no code there, "
            "or code of another contract); check the address and the node"
        )
    return registry


async def pending_owner(registry: AnchorRegistry) -> ChecksumAddress:
    with rpc_errors("reading the registry's pending owner", registry.backend.node):
        result = await registry.backend.w3.eth.call(
            {"to": registry.address, "data": HexStr("0x" + call_data("pendingOwner()").hex())}
        )
    return to_checksum_address(bytes(result)[12:32])


async def owner_call(
    backend: RpcBackend,
    registry: AnchorRegistry,
    owner: LocalAccount,
    signature: str,
    argument: str | None,
    what: str,
    timeout: float,
) -> TxReceipt:
    """Send ``signature(argument)`` to the registry from its owner's key, after checking
    that the key is the owner's."""
    current = await registry.owner()
    if current != owner.address:
        raise ForbiddenError(
            f"chain: the registry's owner is {current}, but the key file is for "
            f"{owner.address}; only the owner can {what}"
        )
    data = call_data(signature) if argument is None else call_data(signature, argument)
    return await transact(
        backend,
        owner,
        to=registry.address,
        data=data,
        what=what,
        artifact=registry.artifact,
        timeout=timeout,
    )
