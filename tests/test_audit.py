"""`audit` names every edited, deleted, inserted or reordered record, on SQLite and
PostgreSQL, by tampering with the rows directly as an attacker with database access would."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from gateway.db.schema import LogEntryRow
from gateway.ledger.audit import AuditReport, audit_stream
from gateway.ledger.hashing import GENESIS, entry_hash, leaf_hash
from keys.keystore import KeyPurpose
from tests.support.world import World


async def _calls(world: World, count: int = 12) -> None:
    token = await world.token()
    body = {"values": {"credit_code": world.sample["credit_code"], "name": "x"}}
    for _ in range(count):
        await world.data(token, "enterprises", "verify", body)
    assert await world.gateway.checkpointer.checkpoint("calls") is not None


async def _audit(world: World) -> AuditReport:
    keystore = world.gateway.keystore
    key = keystore.public_key(keystore.active(KeyPurpose.CHECKPOINT).kid)
    return await audit_stream(
        world.gateway.engine,
        "calls",
        algorithm="sha256",
        checkpoint_key=(world.gateway.settings.deployment, key),
    )


def _kinds(report: AuditReport) -> set[tuple[int, str]]:
    return {(f.seq, f.kind) for f in report.findings}


async def _row(world: World, seq: int) -> LogEntryRow:
    async with world.gateway.engine.connect() as conn:
        row = (
            await conn.execute(
                select(LogEntryRow.__table__).where(
                    LogEntryRow.stream == "calls", LogEntryRow.seq == seq
                )
            )
        ).one()
    return row  # type: ignore[return-value]


async def _set(world: World, seq: int, **values: object) -> None:
    async with world.gateway.engine.begin() as conn:
        await conn.execute(
            update(LogEntryRow)
            .where(LogEntryRow.stream == "calls", LogEntryRow.seq == seq)
            .values(**values)
        )


async def test_clean_log_has_no_findings(world: World) -> None:
    await _calls(world)
    report = await _audit(world)
    assert report.clean and report.records >= 13 and report.checkpoints == 1


async def test_edited_record_is_named(world: World) -> None:
    await _calls(world)
    row = await _row(world, 5)
    record = json.loads(row.payload)
    record["decision"] = "deny" if record["decision"] == "allow" else "allow"
    await _set(
        world,
        5,
        payload=json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    )
    assert (5, "edited") in _kinds(await _audit(world))


async def test_deleted_record_is_named(world: World) -> None:
    await _calls(world)
    async with world.gateway.engine.begin() as conn:
        await conn.execute(
            LogEntryRow.__table__.delete().where(
                LogEntryRow.stream == "calls", LogEntryRow.seq == 7
            )
        )
    kinds = _kinds(await _audit(world))
    assert (7, "deleted") in kinds
    assert (8, "chain") in kinds


async def test_inserted_record_is_named(world: World) -> None:
    await _calls(world)
    last = await _row(world, 12)
    forged = {**json.loads(last.payload), "decision": "allow", "rows": 0}
    payload = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    salt = bytes(16)
    leaf = leaf_hash("sha256", salt, payload.encode())
    async with world.gateway.engine.begin() as conn:
        top = (
            await conn.execute(
                select(LogEntryRow.seq)
                .where(LogEntryRow.stream == "calls")
                .order_by(LogEntryRow.seq.desc())
                .limit(1)
            )
        ).scalar()
        assert top is not None
        await conn.execute(
            LogEntryRow.__table__.insert().values(
                stream="calls",
                seq=top + 1,
                recorded_at=last.recorded_at,
                kind="data",
                payload=payload,
                salt=salt,
                leaf_hash=leaf,
                prev_hash=GENESIS,
                entry_hash=entry_hash("sha256", GENESIS, leaf),
            )
        )
    assert (top + 1, "chain") in _kinds(await _audit(world))


async def test_reordered_records_are_named(world: World) -> None:
    await _calls(world)
    a, b = await _row(world, 3), await _row(world, 4)
    for seq, src in ((3, b), (4, a)):
        await _set(world, seq, payload=src.payload, salt=src.salt, leaf_hash=src.leaf_hash)
    kinds = _kinds(await _audit(world))
    assert {(3, "chain"), (4, "chain")} <= kinds


async def test_consistent_rewrite_is_caught_by_the_signed_checkpoint(world: World) -> None:
    """An attacker who recomputes every leaf and link after editing a record still cannot
    match the signed checkpoint."""
    await _calls(world)
    size = (await _audit(world)).records
    previous = bytes((await _row(world, 5)).prev_hash)
    for seq in range(5, size):
        row = await _row(world, seq)
        payload = row.payload
        if seq == 5:
            payload = payload.replace('"decision":"allow"', '"decision":"deny"')
        leaf = leaf_hash("sha256", bytes(row.salt), payload.encode())
        link = entry_hash("sha256", previous, leaf)
        await _set(world, seq, payload=payload, leaf_hash=leaf, prev_hash=previous, entry_hash=link)
        previous = link
    report = await _audit(world)
    assert [f.kind for f in report.findings] == ["checkpoint"]
    assert "differ from what was signed" in report.findings[0].detail
