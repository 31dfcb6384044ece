"""A Besu node key: its file format, address and enode URL.

So that tools and tests derive a validator's identity exactly as Besu does, without Besu.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from eth_keys.datatypes import PrivateKey
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.exceptions import ValidationError as EthKeysValidationError

from gateway.errors import ValidationError

__all__ = ["NodeKey"]


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A Besu node key: the secp256k1 key whose address is the validator's address and whose
    public key is the node id of its enode URL.

    The file (``<data-path>/key`` or ``--node-private-key-file``) holds one line, ``0x`` and
    the 64 hex digits of the private key, as Besu writes it. Never share it: a party shares
    :attr:`address` and :meth:`enode` only.
    """

    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        try:
            PrivateKey(self.private_key)
        except EthKeysValidationError as exc:
            raise ValidationError("qbft: not a secp256k1 private key") from exc

    @classmethod
    def generate(cls) -> NodeKey:
        while True:
            candidate = secrets.token_bytes(32)
            try:
                return cls(candidate)
            except ValidationError:  # pragma: no cover - 2**-128 odds
                continue

    @classmethod
    def from_besu_file(cls, text: str) -> NodeKey:
        """The key in a Besu key file's text. Raises :class:`ValidationError` if it is not
        one line of 64 hex digits (``0x`` optional)."""
        lines = text.splitlines()
        value = lines[0].strip().removeprefix("0x") if len(lines) == 1 else ""
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValidationError("qbft: a node key file holds one line of 64 hex digits")
        return cls(bytes.fromhex(value))

    def to_besu_file(self) -> str:
        return "0x" + self.private_key.hex()

    @property
    def address(self) -> ChecksumAddress:
        """The validator address (``besu public-key export-address``)."""
        return to_checksum_address(PrivateKey(self.private_key).public_key.to_address())

    @property
    def node_id(self) -> str:
        """The uncompressed public key without its 0x04 prefix, 128 hex digits
        (``besu public-key export``)."""
        return PrivateKey(self.private_key).public_key.to_bytes().hex()

    def enode(self, host: str, port: int = 30303) -> str:
        """The enode URL peers use to reach this node (static nodes, bootnodes)."""
        if not 0 < port < 65536:
            raise ValidationError(f"qbft: port {port} is not a TCP port")
        return f"enode://{self.node_id}@{host}:{port}"
