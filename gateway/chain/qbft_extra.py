"""The QBFT ``extraData`` of a block header, and the validator addresses it lists.

Besu's block-header validator selection keeps the initial validators in the genesis block's
``extraData`` (besu-docs, "Configure QBFT consensus", Extra data; Besu's
``QbftExtraDataCodec``)::

    extraData = RLP([vanity, [validator, ...], vote, round, [seal, ...]])

* ``vanity``: 32 bytes, all zero here;
* the validators' 20-byte addresses, ascending here, so that the same set always gives the
  same genesis;
* ``vote``: the empty list when the block carries no vote (always, in a genesis); otherwise
  ``[recipient, 0xff]`` to add or ``[recipient, ""]`` to drop a validator;
* ``round``: an RLP scalar, 0 in a genesis, which encodes as the empty string (``0x80``);
* ``seals``: the committers' 65-byte signatures, none in a genesis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import rlp  # type: ignore[import-untyped]
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from rlp.exceptions import DecodingError as RlpDecodingError  # type: ignore[import-untyped]

from gateway.errors import ValidationError

__all__ = ["VANITY_LENGTH", "QbftExtraData", "parse_address", "validator_set"]

VANITY_LENGTH: Final = 32

_VOTE_ADD: Final = b"\xff"

_VOTE_DROP: Final = b""

_SEAL_LENGTH: Final = 65

_ADDRESS_TEXT: Final = re.compile(r"0x[0-9a-fA-F]{40}")


def parse_address(text: str, what: str = "validator address") -> ChecksumAddress:
    """``text`` as a checksummed address.

    Raises :class:`ValidationError` unless it is ``0x`` and 40 hex digits, with a correct
    EIP-55 checksum when it mixes upper and lower case (a typo in a mixed-case address is
    caught, as wallets do), and not the zero address.
    """
    value = text.strip()
    if not _ADDRESS_TEXT.fullmatch(value):
        raise ValidationError(
            f"qbft: {what} {text!r} is not an address (0x followed by 40 hex digits)"
        )
    digits = value[2:]
    checksummed = to_checksum_address(value)
    if digits not in (digits.lower(), digits.upper()) and value != checksummed:
        raise ValidationError(
            f"qbft: {what} {value} has a wrong EIP-55 checksum (a typo?); "
            "copy it again from `besu public-key export-address`"
        )
    if int(digits, 16) == 0:
        raise ValidationError(f"qbft: {what} cannot be the zero address")
    return checksummed


def validator_set(addresses: Iterable[str]) -> tuple[ChecksumAddress, ...]:
    """The validators as Besu keeps them: unique, in ascending byte order.

    Raises :class:`ValidationError` for a malformed or repeated address.
    """
    seen: dict[bytes, ChecksumAddress] = {}
    for text in addresses:
        address = parse_address(text)
        raw = bytes.fromhex(address[2:])
        if raw in seen:
            raise ValidationError(f"qbft: validator {address} is given twice")
        seen[raw] = address
    return tuple(seen[raw] for raw in sorted(seen))


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(parse_address(address)[2:])


@dataclass(frozen=True, slots=True)
class QbftExtraData:
    """The ``extraData`` of a QBFT block header (block-header validator selection).

    ``vote`` is ``(recipient, add)`` when the block proposes adding (``True``) or dropping
    (``False``) a validator; ``seals`` are the committers' signatures.
    """

    validators: tuple[ChecksumAddress, ...]
    vanity: bytes = bytes(VANITY_LENGTH)
    vote: tuple[ChecksumAddress, bool] | None = None
    round: int = 0
    seals: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if len(self.vanity) != VANITY_LENGTH:
            raise ValidationError(f"qbft: the vanity is {VANITY_LENGTH} bytes")
        if self.round < 0:
            raise ValidationError("qbft: the round is a non-negative integer")
        if any(len(seal) != _SEAL_LENGTH for seal in self.seals):
            raise ValidationError(f"qbft: a seal is a {_SEAL_LENGTH}-byte signature")

    @classmethod
    def for_genesis(cls, validators: Iterable[str]) -> QbftExtraData:
        """A genesis block's extra data: zero vanity, the validators (sorted), no vote,
        round 0, no seals."""
        return cls(validators=validator_set(validators))

    def to_bytes(self) -> bytes:
        """The RLP encoding Besu writes (validators in the order held here)."""
        vote: list[bytes] = []
        if self.vote is not None:
            recipient, add = self.vote
            vote = [_address_bytes(recipient), _VOTE_ADD if add else _VOTE_DROP]
        return bytes(
            rlp.encode(
                [
                    self.vanity,
                    [_address_bytes(v) for v in self.validators],
                    vote,
                    self.round,
                    list(self.seals),
                ]
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> QbftExtraData:
        """Decode QBFT extra data, as strictly as Besu reads it.

        Raises :class:`ValidationError` if ``data`` is not exactly one RLP list of the five
        QBFT items.
        """
        try:
            items = rlp.decode(data, strict=True)
        except RlpDecodingError as exc:
            raise ValidationError(f"qbft: extraData is not valid RLP ({exc})") from exc
        if not isinstance(items, list) or len(items) != 5:
            raise ValidationError(
                "qbft: extraData must be RLP([vanity, validators, vote, round, seals]); "
                "is this an IBFT 2.0, Clique or post-merge genesis?"
            )
        vanity, validators, vote, round_, seals = items
        if not isinstance(vanity, bytes) or len(vanity) != VANITY_LENGTH:
            raise ValidationError(f"qbft: extraData's vanity must be {VANITY_LENGTH} bytes")
        if not isinstance(validators, list) or not all(
            isinstance(v, bytes) and len(v) == 20 for v in validators
        ):
            raise ValidationError("qbft: extraData's validators must be 20-byte addresses")
        decoded_vote: tuple[ChecksumAddress, bool] | None = None
        if not isinstance(vote, list):
            raise ValidationError("qbft: extraData's vote must be a list")
        if vote:
            if len(vote) != 2 or not isinstance(vote[0], bytes) or len(vote[0]) != 20:
                raise ValidationError("qbft: extraData's vote must be [recipient, kind]")
            if vote[1] not in (_VOTE_ADD, _VOTE_DROP):
                raise ValidationError("qbft: extraData's vote kind must be 0xff (add) or empty")
            decoded_vote = (to_checksum_address(vote[0]), vote[1] == _VOTE_ADD)
        if not isinstance(round_, bytes) or round_.startswith(b"\x00") or len(round_) > 4:
            raise ValidationError("qbft: extraData's round must be a canonical RLP scalar")
        if not isinstance(seals, list) or not all(isinstance(s, bytes) for s in seals):
            raise ValidationError("qbft: extraData's seals must be a list of signatures")
        return cls(
            validators=tuple(to_checksum_address(v) for v in validators),
            vanity=vanity,
            vote=decoded_vote,
            round=int.from_bytes(round_, "big"),
            seals=tuple(seals),
        )

    @classmethod
    def from_hex(cls, text: str) -> QbftExtraData:
        """:meth:`from_bytes` of a ``0x`` hex string, as a genesis file holds it."""
        try:
            data = bytes.fromhex(text.removeprefix("0x"))
        except ValueError as exc:
            raise ValidationError("qbft: extraData is not a hex string") from exc
        return cls.from_bytes(data)

    def to_hex(self) -> str:
        return "0x" + self.to_bytes().hex()
