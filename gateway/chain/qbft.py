"""The consortium chain's genesis: a Hyperledger Besu QBFT genesis file built reproducibly
from the validators' addresses, and read back to check it.

The validators (the data bureau, the operator, the exchange and the supervisor, see
``docs/deployment.md``) each generate their node key on their own machine and share only its
address and enode URL; anyone holding the four addresses and the agreed parameters builds the
same file, byte for byte, and compares its SHA-256 with the others' before the nodes start.

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

The rest follows Besu's QBFT genesis: ``difficulty`` 1, the Istanbul ``mixHash``
(``"ctical byzantine fault tolerance"``), ``config.qbft`` with ``blockperiodseconds``,
``epochlength`` and ``requesttimeoutseconds``, the Berlin and London rules from block 0 (the
AnchorRegistry is compiled for the ``paris`` EVM, which both cover, and the anchoring worker
sends EIP-1559 transactions), and on a free-gas network ``zeroBaseFee`` (validators then run
with ``--min-gas-price=0``; besu-docs, "Configure free gas networks").

Also here: :class:`NodeKey`, a Besu node key (its file format, address and enode URL), so
that tools and tests derive a validator's identity exactly as Besu does.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import rlp  # type: ignore[import-untyped]
from eth_keys.datatypes import PrivateKey
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.exceptions import ValidationError as EthKeysValidationError
from rlp.exceptions import DecodingError as RlpDecodingError  # type: ignore[import-untyped]

from gateway.errors import ValidationError

__all__ = [
    "DEFAULT_BLOCK_PERIOD",
    "DEFAULT_EPOCH_LENGTH",
    "DEFAULT_GAS_LIMIT",
    "MAX_CHAIN_ID",
    "MIN_VALIDATORS",
    "QBFT_MIX_HASH",
    "VANITY_LENGTH",
    "NodeKey",
    "QbftExtraData",
    "QbftGenesis",
    "parse_address",
    "tolerated_faults",
    "validator_set",
]

VANITY_LENGTH: Final = 32
QBFT_MIX_HASH: Final = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
"""The ``mixHash`` that identifies an Istanbul-family (IBFT 2.0, QBFT) block."""

MIN_VALIDATORS: Final = 4
"""QBFT tolerates ``f`` faulty validators among ``n >= 3f + 1``: four is the least that
tolerates one."""

DEFAULT_BLOCK_PERIOD: Final = 2
DEFAULT_EPOCH_LENGTH: Final = 30_000
DEFAULT_GAS_LIMIT: Final = 30_000_000
"""Gas per block: an anchor takes about 100,000, so hundreds fit in one block."""

MAX_CHAIN_ID: Final = 9_223_372_036_854_775_771
"""EIP-2294's bound, ``floor(MAX_UINT64 / 2) - 36``, which every signer accepts."""

_MIN_GAS_LIMIT: Final = 5_000
_MAX_QUANTITY: Final = 2**63 - 1
_VOTE_ADD: Final = b"\xff"
_VOTE_DROP: Final = b""
_SEAL_LENGTH: Final = 65
_ADDRESS_TEXT: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_ZERO_HASH: Final = "0x" + "00" * 32
_ZERO_ADDRESS: Final = "0x" + "00" * 20


def tolerated_faults(validators: int) -> int:
    """How many of ``validators`` may fail (or lie) without stopping or forking the chain."""
    return max(0, (validators - 1) // 3)


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


def _quantity(value: object, name: str) -> int:
    """A JSON quantity of a genesis file: an integer, or a decimal or ``0x`` hex string."""
    if isinstance(value, bool):
        raise ValidationError(f"qbft: genesis {name} must be a number, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value, 16) if value.lower().startswith("0x") else int(value, 10)
        except ValueError as exc:
            raise ValidationError(f"qbft: genesis {name} {value!r} is not a number") from exc
    else:
        raise ValidationError(f"qbft: genesis {name} must be a number, not {value!r}")
    if number < 0:
        raise ValidationError(f"qbft: genesis {name} cannot be negative")
    return number


def _lower_keys(value: object) -> dict[str, Any]:
    """A JSON object with keys lower-cased, as Besu normalises genesis configuration keys."""
    if not isinstance(value, Mapping):
        raise ValidationError("qbft: genesis config must be a JSON object")
    return {str(k).lower(): v for k, v in value.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class QbftGenesis:
    """A Besu QBFT genesis with block-header validator selection.

    Build one with :meth:`create` (which enforces the consortium's minimum of
    :data:`MIN_VALIDATORS`); read one with :meth:`from_json`. :meth:`to_json` is canonical:
    equal genesis objects give equal bytes.
    """

    chain_id: int
    validators: tuple[ChecksumAddress, ...]
    block_period_seconds: int = DEFAULT_BLOCK_PERIOD
    request_timeout_seconds: int = 2 * DEFAULT_BLOCK_PERIOD
    epoch_length: int = DEFAULT_EPOCH_LENGTH
    gas_limit: int = DEFAULT_GAS_LIMIT
    zero_base_fee: bool = True
    alloc: Mapping[ChecksumAddress, int] = field(default_factory=dict)
    timestamp: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.chain_id <= MAX_CHAIN_ID:
            raise ValidationError(f"qbft: the chain id must be between 1 and {MAX_CHAIN_ID}")
        if not self.validators:
            raise ValidationError("qbft: a QBFT genesis needs at least one validator")
        if list(self.validators) != list(validator_set(self.validators)):
            raise ValidationError("qbft: the validators must be unique and in ascending order")
        for name in ("block_period_seconds", "request_timeout_seconds", "epoch_length"):
            if not 1 <= getattr(self, name) <= _MAX_QUANTITY:
                raise ValidationError(f"qbft: {name} must be a positive whole number")
        if not _MIN_GAS_LIMIT <= self.gas_limit <= _MAX_QUANTITY:
            raise ValidationError(f"qbft: the block gas limit must be at least {_MIN_GAS_LIMIT}")
        if not 0 <= self.timestamp <= _MAX_QUANTITY:
            raise ValidationError("qbft: the genesis timestamp must be a non-negative integer")
        for address, balance in self.alloc.items():
            parse_address(address, "allocated account")
            if balance < 0:
                raise ValidationError(f"qbft: the balance of {address} cannot be negative")

    @classmethod
    def create(
        cls,
        *,
        validators: Sequence[str],
        chain_id: int,
        block_period_seconds: int = DEFAULT_BLOCK_PERIOD,
        request_timeout_seconds: int | None = None,
        epoch_length: int = DEFAULT_EPOCH_LENGTH,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        zero_base_fee: bool = True,
        alloc: Mapping[str, int] | None = None,
        timestamp: int = 0,
    ) -> QbftGenesis:
        """A consortium genesis for ``validators`` (any order; stored sorted).

        ``request_timeout_seconds`` defaults to twice the block period, Besu's recommended
        start for tuning. Raises :class:`ValidationError` for fewer than
        :data:`MIN_VALIDATORS` validators, a bad or repeated address, or a bad parameter.
        """
        members = validator_set(validators)
        if len(members) < MIN_VALIDATORS:
            raise ValidationError(
                f"qbft: {len(members)} validator(s) given; QBFT needs n >= 3f + 1 validators "
                f"to survive f faulty ones, so at least {MIN_VALIDATORS} (the data bureau, "
                "the operator, the exchange and the supervisor) for a chain that survives one "
                "of them failing"
            )
        allocated: dict[ChecksumAddress, int] = {}
        for address, balance in (alloc or {}).items():
            account = parse_address(address, "allocated account")
            if account in allocated:
                raise ValidationError(f"qbft: account {account} is allocated twice")
            allocated[account] = balance
        return cls(
            chain_id=chain_id,
            validators=members,
            block_period_seconds=block_period_seconds,
            request_timeout_seconds=(
                2 * block_period_seconds
                if request_timeout_seconds is None
                else request_timeout_seconds
            ),
            epoch_length=epoch_length,
            gas_limit=gas_limit,
            zero_base_fee=zero_base_fee,
            alloc=allocated,
            timestamp=timestamp,
        )

    @property
    def tolerated_faults(self) -> int:
        return tolerated_faults(len(self.validators))

    @property
    def extra_data(self) -> QbftExtraData:
        return QbftExtraData(validators=self.validators)

    def to_dict(self) -> dict[str, Any]:
        """The genesis document Besu reads with ``--genesis-file``."""
        config: dict[str, Any] = {
            "chainId": self.chain_id,
            "berlinBlock": 0,
            "londonBlock": 0,
            "qbft": {
                "blockperiodseconds": self.block_period_seconds,
                "epochlength": self.epoch_length,
                "requesttimeoutseconds": self.request_timeout_seconds,
            },
        }
        if self.zero_base_fee:
            config["zeroBaseFee"] = True
        return {
            "config": config,
            "nonce": "0x0",
            "timestamp": hex(self.timestamp),
            "extraData": self.extra_data.to_hex(),
            "gasLimit": hex(self.gas_limit),
            "difficulty": "0x1",
            "mixHash": QBFT_MIX_HASH,
            "coinbase": _ZERO_ADDRESS,
            "alloc": {
                address.lower(): {"balance": hex(balance)}
                for address, balance in sorted(self.alloc.items(), key=lambda i: i[0].lower())
            },
            "number": "0x0",
            "gasUsed": "0x0",
            "parentHash": _ZERO_HASH,
        }

    def to_json(self) -> bytes:
        """The canonical file: sorted keys, two-space indent, a final newline."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @property
    def sha256(self) -> str:
        """SHA-256 of :meth:`to_json`: what the parties compare before starting their nodes."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_dict(cls, document: object) -> QbftGenesis:
        """Read and check a QBFT genesis (block-header validator selection).

        Raises :class:`ValidationError` naming the first thing that is not a QBFT genesis:
        no ``config.qbft``, a validator contract, extra data that is not a genesis's (a vote,
        a round, seals), another ``mixHash`` or difficulty.
        """
        if not isinstance(document, Mapping):
            raise ValidationError("qbft: a genesis file is a JSON object")
        top = _lower_keys(document)
        config = _lower_keys(top.get("config", {}))
        if "qbft" not in config:
            raise ValidationError("qbft: the genesis has no config.qbft: not a QBFT genesis")
        qbft = _lower_keys(config["qbft"])
        if "validatorcontractaddress" in qbft:
            raise ValidationError(
                "qbft: the genesis selects validators by contract; this tool handles "
                "block-header validator selection only"
            )
        for name in ("blockperiodseconds", "epochlength", "requesttimeoutseconds"):
            if name not in qbft:
                raise ValidationError(f"qbft: the genesis's config.qbft lacks {name}")
        if "chainid" not in config:
            raise ValidationError("qbft: the genesis has no config.chainId")
        if str(top.get("mixhash", "")).lower() != QBFT_MIX_HASH:
            raise ValidationError(f"qbft: a QBFT genesis's mixHash is {QBFT_MIX_HASH}")
        if _quantity(top.get("difficulty", 0), "difficulty") != 1:
            raise ValidationError("qbft: a QBFT genesis's difficulty is 0x1")
        extra = top.get("extradata")
        if not isinstance(extra, str):
            raise ValidationError("qbft: the genesis has no extraData")
        decoded = QbftExtraData.from_hex(extra)
        if decoded.vote is not None or decoded.round != 0 or decoded.seals:
            raise ValidationError(
                "qbft: a genesis's extraData carries no vote, round 0 and no seals"
            )
        if len(set(decoded.validators)) != len(decoded.validators):
            raise ValidationError("qbft: the genesis names a validator twice")
        if any(decoded.vanity):
            raise ValidationError("qbft: this tool writes, and expects, an all-zero vanity")
        alloc_doc = top.get("alloc", {})
        if not isinstance(alloc_doc, Mapping):
            raise ValidationError("qbft: the genesis's alloc must be a JSON object")
        alloc: dict[ChecksumAddress, int] = {}
        for key, entry in alloc_doc.items():
            text = str(key) if str(key).startswith("0x") else "0x" + str(key)
            account = parse_address(text, "allocated account")
            balance = _lower_keys(entry).get("balance", 0) if isinstance(entry, Mapping) else 0
            alloc[account] = _quantity(balance, f"balance of {account}")
        zero_base_fee = config.get("zerobasefee", False)
        return cls(
            chain_id=_quantity(config["chainid"], "config.chainId"),
            validators=tuple(sorted(decoded.validators, key=lambda a: bytes.fromhex(a[2:]))),
            block_period_seconds=_quantity(qbft["blockperiodseconds"], "blockperiodseconds"),
            request_timeout_seconds=_quantity(
                qbft["requesttimeoutseconds"], "requesttimeoutseconds"
            ),
            epoch_length=_quantity(qbft["epochlength"], "epochlength"),
            gas_limit=_quantity(top.get("gaslimit", 0), "gasLimit"),
            zero_base_fee=zero_base_fee is True,
            alloc=alloc,
            timestamp=_quantity(top.get("timestamp", 0), "timestamp"),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> QbftGenesis:
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError(f"qbft: the genesis is not valid JSON ({exc})") from exc
        return cls.from_dict(document)


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
