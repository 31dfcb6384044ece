"""The consortium chain's genesis: a Hyperledger Besu QBFT genesis file built reproducibly
from the validators' addresses, and read back to check it.

The validators (the data bureau, the operator, the exchange and the supervisor, see
``docs/deployment.md``) each generate their node key on their own machine and share only its
address and enode URL; anyone holding the four addresses and the agreed parameters builds the
same file, byte for byte, and compares its SHA-256 with the others' before the nodes start.

The validators are kept in the genesis block's ``extraData``, encoded by
:mod:`gateway.chain.qbft_extra`.

The rest follows Besu's QBFT genesis: ``difficulty`` 1, the Istanbul ``mixHash``
(``"ctical byzantine fault tolerance"``), ``config.qbft`` with ``blockperiodseconds``,
``epochlength`` and ``requesttimeoutseconds``, the Berlin and London rules from block 0 (the
AnchorRegistry is compiled for the ``paris`` EVM, which both cover, and the anchoring worker
sends EIP-1559 transactions), and on a free-gas network ``zeroBaseFee`` (validators then run
with ``--min-gas-price=0``; besu-docs, "Configure free gas networks").

A validator's node key (:class:`gateway.chain.node_key.NodeKey`) is in its own module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from eth_typing import ChecksumAddress

from gateway.chain.node_key import NodeKey
from gateway.chain.qbft_extra import VANITY_LENGTH, QbftExtraData, parse_address, validator_set
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


_ZERO_HASH: Final = "0x" + "00" * 32


_ZERO_ADDRESS: Final = "0x" + "00" * 20


def tolerated_faults(validators: int) -> int:
    """How many of ``validators`` may fail (or lie) without stopping or forking the chain."""
    return max(0, (validators - 1) // 3)


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
