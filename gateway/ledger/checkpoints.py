"""Signed checkpoints of each log stream, in the C2SP ``tlog-checkpoint`` signed-note format.

A checkpoint commits the gateway to a tree head (size, root). Using the format that
transparency-log witnesses and verifiers already read means a third party can check it
without dsgw code::

    dsgw.local/calls            <- origin: the deployment and the stream
    12345                       <- tree size
    2vWtS...=                   <- base64 root hash
                                <- (SM3 deployments add the extension line "hash sm3")
    — dsgw.local AbCd...==      <- signature line: key name, base64(key id || Ed25519 sig)

The Ed25519 key id is the first four bytes of SHA-256(name || 0x0A || 0x01 || public key),
as C2SP signed-note prescribes; the verifier key string is ``name+hex(key id)+base64(0x01 ||
public key)``.

Every note thus names the key that signed it. Verifiers hold a :class:`KeyRing` (the
active checkpoint key and every retired one) and pick the key by that name, so a routine
``dsgw keys rotate checkpoint`` leaves every older checkpoint verifiable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock, utc
from gateway.db.schema import CheckpointRow
from gateway.dependencies import DependencyHealth
from gateway.errors import DsgwError, NotFoundError, ValidationError
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import STREAMS
from gateway.ledger.tree import MerkleTree

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointKeys",
    "Checkpointer",
    "KeyRing",
    "NoteSigner",
    "NoteVerifier",
    "checkpoint_from_row",
    "key_ring",
    "latest_checkpoint",
    "parse_checkpoint",
    "signature_key_ids",
    "verifier_key",
    "verify_note",
]

log = logging.getLogger(__name__)

_DASH = "\u2014"  # the em dash that starts a signature line
_ED25519 = b"\x01"


class CheckpointError(DsgwError):
    slug = "checkpoint"
    title = "Checkpoint invalid"
    status = 422


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + _raw(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string a witness or client configures to check our notes."""
    return (
        f"{name}+{_key_id(name, public_key).hex()}+"
        + base64.b64encode(_ED25519 + _raw(public_key)).decode()
    )


@dataclass(frozen=True, slots=True)
class NoteSigner:
    name: str
    key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c == "+" for c in self.name):
            raise ValidationError("checkpoint key name must be non-empty without spaces or '+'")

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.key.public_key())

    def sign(self, text: str) -> str:
        """The signed note: ``text`` (ending in a newline), a blank line, one signature."""
        if not text.endswith("\n"):
            raise ValueError("note text must end with a newline")
        signature = self.key.sign(text.encode("utf-8"))
        encoded = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n{_DASH} {self.name} {encoded}\n"


def verify_note(note: str, name: str, public_key: Ed25519PublicKey) -> str:
    """Return the note's text if one of its signatures is ``name``'s valid signature.

    Raises :class:`CheckpointError` naming the failing step otherwise.
    """
    text, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise CheckpointError("checkpoint: no signature block")
    text += "\n"
    wanted = _key_id(name, public_key)
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if len(blob) != 68 or blob[:4] != wanted:
            continue
        try:
            public_key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as exc:
            raise CheckpointError(
                f"checkpoint: signature by {name} does not verify for key {wanted.hex()}"
            ) from exc
        return text
    raise CheckpointError(f"checkpoint: no signature by {name} with key id {wanted.hex()}")


def signature_key_ids(note: str) -> list[tuple[str, bytes]]:
    """The (key name, key id) of every well-formed signature line of ``note``, in order:
    what the note says about which keys signed it (nothing is verified here)."""
    _text, sep, signatures = note.rpartition("\n\n")
    found: list[tuple[str, bytes]] = []
    for line in signatures.splitlines() if sep else ():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if len(blob) == 68:
            found.append((parts[1], blob[:4]))
    return found


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """One checkpoint verifier key: the key name (the deployment) and its Ed25519 key."""

    name: str
    key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.key)

    def to_text(self) -> str:
        """The C2SP verifier key string (``name+keyid+base64key``)."""
        return verifier_key(self.name, self.key)

    @classmethod
    def from_text(cls, text: str) -> NoteVerifier:
        """Parse a C2SP verifier key string; :class:`ValidationError` if it is malformed or
        its key id is not its key's."""
        try:
            name, _key_id_hex, encoded = text.split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise ValidationError("verifier key must look like name+keyid+base64key") from exc
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise ValidationError("verifier key is not an Ed25519 signed-note key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.to_text() != text:
            raise ValidationError("verifier key id does not match its key")
        return verifier


class KeyRing:
    """The checkpoint keys a verifier trusts, found by the key id each note names.

    A keystore's ring holds the active key and every retired one (checkpoint keys are
    never pruned), so checkpoints signed before a rotation keep verifying.
    """

    def __init__(self, verifiers: Iterable[NoteVerifier]) -> None:
        self._by_id: dict[tuple[str, bytes], NoteVerifier] = {}
        for verifier in verifiers:
            self._by_id.setdefault((verifier.name, verifier.key_id), verifier)

    def __iter__(self) -> Iterator[NoteVerifier]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def signer_of(self, note: str) -> NoteVerifier:
        """The trusted key whose id a signature line of ``note`` names (not yet verified).

        Raises :class:`CheckpointError` when the note names none of the ring's keys.
        """
        named = signature_key_ids(note)
        for key in named:
            if key in self._by_id:
                return self._by_id[key]
        listed = ", ".join(f"{name} {kid.hex()}" for name, kid in named) or "no key"
        known = ", ".join(f"{v.name} {v.key_id.hex()}" for v in self) or "none"
        raise CheckpointError(f"checkpoint: signed by {listed}, none of the trusted keys ({known})")

    def verify(self, note: str) -> tuple[Checkpoint, NoteVerifier]:
        """Verify ``note`` with the key it names; the checkpoint and that key.

        Raises :class:`CheckpointError` naming the failing step.
        """
        signer = self.signer_of(note)
        return parse_checkpoint(verify_note(note, signer.name, signer.key)), signer


CheckpointKeys = KeyRing | tuple[str, Ed25519PublicKey]
"""What audits accept as the checkpoint key: a ring, or one (name, key) pair."""


def key_ring(keys: CheckpointKeys) -> KeyRing:
    """``keys`` as a ring (a single (name, key) pair makes a ring of one)."""
    if isinstance(keys, KeyRing):
        return keys
    return KeyRing([NoteVerifier(keys[0], keys[1])])


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    algorithm: HashAlgorithm
    note: str

    @property
    def stream(self) -> str:
        return self.origin.rsplit("/", 1)[-1]

    @staticmethod
    def body(origin: str, size: int, root: bytes, algorithm: HashAlgorithm) -> str:
        lines = [origin, str(size), base64.b64encode(root).decode()]
        if algorithm != "sha256":
            lines.append(f"hash {algorithm}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "stream": self.stream,
            "size": self.size,
            "root": self.root.hex(),
            "algorithm": self.algorithm,
            "note": self.note,
        }


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a verified note text (see :func:`verify_note`) into a checkpoint."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint: expected origin, size and root lines")
    origin, size_text, root_text, *extensions = lines[:-1]
    if not size_text.isdigit():
        raise CheckpointError(f"checkpoint: size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise CheckpointError("checkpoint: root is not base64") from exc
    algorithm: HashAlgorithm = "sha256"
    for line in extensions:
        if line == "hash sm3":
            algorithm = "sm3"
    return Checkpoint(origin, int(size_text), root, algorithm, text)


def checkpoint_from_row(row: Any) -> Checkpoint:
    """A checkpoint from a ``checkpoints`` row (as stored; not re-verified)."""
    algorithm: HashAlgorithm = "sm3" if row.algorithm == "sm3" else "sha256"
    origin = row.note.split("\n", 1)[0]
    return Checkpoint(origin, row.size, bytes(row.root), algorithm, row.note)


async def latest_checkpoint(engine: AsyncEngine, stream: str) -> Checkpoint:
    """The newest checkpoint of ``stream``; :class:`NotFoundError` if there is none yet."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(CheckpointRow.__table__)
                .where(CheckpointRow.stream == stream)
                .order_by(CheckpointRow.size.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        raise NotFoundError(f"stream {stream} has no checkpoint yet")
    return checkpoint_from_row(row)


class Checkpointer:
    """Folds each stream's tree and signs a checkpoint every ``every_records`` records or
    ``every_seconds`` seconds, whichever comes first.

    Several gateway processes may run one: the (stream, size) primary key keeps a single
    checkpoint per tree size, and every process would sign the same body.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        signer: NoteSigner,
        clock: Clock,
        *,
        deployment: str,
        algorithm: HashAlgorithm = "sha256",
        every_records: int = 10_000,
        every_seconds: float = 5.0,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        # A store outage is logged there once, not once per stream and round.
        self._health = health or DependencyHealth()
        self._signer = signer
        self._clock = clock
        self._deployment = deployment
        self._algorithm: HashAlgorithm = algorithm
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._trees = {s: MerkleTree(engine, s, algorithm=algorithm) for s in STREAMS}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.signed = 0
        # Called after each checkpoint this process signs (the anchoring worker's wake-up).
        self.on_signed: Callable[[], None] | None = None

    def origin(self, stream: str) -> str:
        return f"{self._deployment}/{stream}"

    async def checkpoint(self, stream: str, *, force: bool = True) -> Checkpoint | None:
        """Fold ``stream`` and sign a checkpoint of its current size if it grew (and, unless
        ``force``, if a size or time bound was reached). Returns the new checkpoint."""
        tree = self._trees[stream]
        while await tree.fold() > 0:
            pass
        size = await tree.size()
        if size == 0:
            return None
        try:
            last = await latest_checkpoint(self._engine, stream)
            last_size = last.size
        except NotFoundError:
            last_size = 0
        if size <= last_size:
            return None
        if not force and size - last_size < self._every_records:
            elapsed = await self._since_last(stream)
            if elapsed is not None and elapsed < self._every_seconds:
                return None
        root = await tree.root(size)
        text = Checkpoint.body(self.origin(stream), size, root, self._algorithm)
        note = self._signer.sign(text)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(CheckpointRow).values(
                        stream=stream,
                        size=size,
                        root=root,
                        algorithm=self._algorithm,
                        note=note,
                        key_id=self._signer.key_id.hex(),
                        created_at=self._clock.now(),
                    )
                )
        except IntegrityError:
            return None  # another process signed this size first
        self.signed += 1
        if self.on_signed is not None:
            self.on_signed()
        return Checkpoint(self.origin(stream), size, root, self._algorithm, note)

    async def _since_last(self, stream: str) -> float | None:
        async with self._engine.connect() as conn:
            last = await conn.scalar(
                select(CheckpointRow.created_at)
                .where(CheckpointRow.stream == stream)
                .order_by(CheckpointRow.size.desc())
                .limit(1)
            )
        if last is None:
            return None
        return (self._clock.now() - utc(last)).total_seconds()

    async def run(self, *, poll_seconds: float = 0.5) -> None:
        """Checkpoint until :meth:`stop`; store failures are logged and retried, never fatal."""
        while not self._stopping.is_set():
            for stream in STREAMS:
                try:
                    await self.checkpoint(stream, force=False)
                except (SQLAlchemyError, OSError, DsgwError) as exc:
                    if not self._health.absorb(exc):
                        log.warning("checkpoint of %s failed, will retry: %s", stream, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), poll_seconds)

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name="dsgw-checkpointer")

    async def stop(self) -> None:
        """Let the loop finish its current round and end. Never cancelled mid-transaction:
        a write torn by cancellation could hold the store's lock past shutdown."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
