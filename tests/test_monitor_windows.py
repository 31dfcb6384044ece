"""The monitor's in-memory windows: random call streams evaluated batch by batch give the
same detections as an evaluation that reads every window from the log, however the stream
is cut into batches, when the monitor restarts mid-window and when two monitors share one
store; steady batches read nothing but themselves; memory stays bounded; the background
round drains a backlog. Records are appended to the real log, as the server appends them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from gateway.cli.demo import DEMO_SCENARIO
from gateway.db.schema import LogEntryRow
from gateway.ledger.records import CallRecord
from gateway.monitoring.calls import CallWindows, read_batch
from gateway.monitoring.models import Detection
from gateway.monitoring.monitor import Monitor
from gateway.monitoring.rules import DEFAULT_RULES, RuleContext, Thresholds
from gateway.monitoring.window_state import EVICTION_SLACK
from gateway.workdays import default_calendar
from tests.support.world import World
from tests.test_alerts import sequential_codes

# Thresholds low enough that short random streams fire every rule, and a window bound low
# enough that windows are cut.
SMALL = Thresholds(
    volume_min_calls=4,
    volume_min_history_days=2,
    volume_baseline_days=3,
    enumeration_run=3,
    scraping_distinct_subjects=4,
    scraping_pages=3,
    refusal_threshold=3,
    invalid_token_threshold=3,
    verify_negatives=2,
    window_max_calls=12,
)
CODES = sequential_codes(40, 10)
MERCHANTS = ("m-one", "m-two", None)


def monitor(world: World, *, name: str = "alerts", batch_size: int = 5000) -> Monitor:
    gateway = world.gateway
    return Monitor(
        gateway.engine,
        gateway.alerts,
        gateway.policy,
        world.clock,
        thresholds=SMALL,
        calendar=default_calendar(),
        name=name,
        batch_size=batch_size,
    )


async def head(world: World) -> int:
    """The next position of the calls stream."""
    async with world.gateway.engine.connect() as conn:
        last = await conn.scalar(
            select(func.max(LogEntryRow.seq)).where(LogEntryRow.stream == "calls")
        )
    return 0 if last is None else int(last) + 1


# -- random call streams --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a random stream: when (seconds from the stream's start, negative for a
    record of an earlier day) and what."""

    offset: float
    merchant: str | None
    shape: str
    code: int
    page: int
    remote: int


calls = st.builds(
    Call,
    offset=st.one_of(
        st.floats(min_value=0, max_value=1800),  # the stream's half hour, in any order
        st.sampled_from([-86400.0, -2 * 86400.0, -3 * 86400.0, -9000.0]),  # earlier days
    ),
    merchant=st.sampled_from(MERCHANTS),
    shape=st.sampled_from(["verify", "query", "page", "refused", "unauthenticated", "budget"]),
    code=st.integers(0, len(CODES) - 1),
    page=st.integers(0, 5),
    remote=st.integers(0, 2),
)


# Earlier days of one merchant, at the time of day of the stream: its volume baseline.
history_calls = st.builds(
    Call,
    offset=st.builds(
        lambda day, second: -day * 86400.0 + second,
        st.integers(1, 3),
        st.floats(min_value=-600, max_value=1800),
    ),
    merchant=st.just("m-one"),
    shape=st.just("verify"),
    code=st.integers(0, len(CODES) - 1),
    page=st.just(0),
    remote=st.just(0),
)


def record(call: Call, start: dt.datetime) -> CallRecord:
    at = start + dt.timedelta(seconds=call.offset)
    values: dict[str, Any] = {
        "kind": "data",
        "merchant_id": call.merchant,
        "client_id": f"client-{call.merchant}" if call.merchant else "stranger",
        "scenario_id": DEMO_SCENARIO,
        "dataset_id": "enterprises",
        "mode": "verify",
        "decision": "allow",
        "status": 200,
        "remote": f"10.0.0.{call.remote}",
        "parameters": {"credit_code": CODES[call.code]},
    }
    if call.shape == "query":
        values.update(mode="query", parameters={"credit_code": {"in": CODES[call.code :][:3]}})
    elif call.shape == "page":
        values.update(mode="query", parameters={"district": "x", "limit": 2, "offset": call.page})
    elif call.shape == "refused":
        values.update(decision="deny", status=403, reason="out-of-scope", dataset_id="vehicles")
    elif call.shape == "unauthenticated":
        values.update(decision="deny", status=401, reason="invalid-token", merchant_id=None)
    elif call.shape == "budget":
        budget = {"subject": "s-1", "negatives": call.page, "bound": 4}
        values["parameters"] = {"credit_code": CODES[call.code], "verify_budget": budget}
    return CallRecord(started_at=at, **values)


async def append(world: World, stream: list[Call]) -> tuple[int, int]:
    """Append ``stream`` in order (each call commits before the next, so positions follow
    the list while recording times need not); returns the positions it took."""
    first = await head(world)
    start = world.clock.now()
    for call in stream:
        await world.gateway.log.append(record(call, start).to_pending(start))
    return first, await head(world)


async def from_log(world: World, start: int, end: int) -> list[Detection]:
    """The batch ``[start, end)`` evaluated with every window read from the log."""
    batch = await read_batch(world.gateway.engine, start, end - start)
    context = RuleContext(
        batch=batch,
        windows=CallWindows(world.gateway.engine, end, max_calls=SMALL.window_max_calls),
        snapshot=await world.gateway.policy.current(),
        is_working_day=default_calendar().is_working_day,
        thresholds=SMALL,
    )
    return [d for rule in DEFAULT_RULES for d in await rule.evaluate(context)]


def cuts(total: int, sizes: list[int]) -> list[int]:
    """Batch sizes drawn for a stream of ``total`` records (the last one repeats)."""
    out: list[int] = []
    for size in itertools.chain(sizes, itertools.repeat(sizes[-1])):
        if sum(out) >= total:
            return out
        out.append(min(size, total - sum(out)))
    return out


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(
    stream=st.lists(calls, min_size=5, max_size=80),
    history=st.lists(history_calls, max_size=12),
    late=st.integers(0, 12),
    sizes=st.lists(st.integers(1, 10), min_size=1, max_size=8),
    restart=st.integers(0, 10),
)
async def test_windows_in_memory_detect_what_windows_read_from_the_log_detect(
    world: World,
    stream: list[Call],
    history: list[Call],
    late: int,
    sizes: list[int],
    restart: int,
) -> None:
    """Each batch, evaluated by a monitor that kept its windows from the batches before (or
    that restarted before it, or that another monitor shared the stream with), raises
    exactly what the batch raises with every window read from the log. A merchant's history
    (its volume baseline) arrives before the stream and, partly, after it."""
    world.clock.advance(dt.timedelta(hours=3))  # examples share one log: keep them apart
    first, end = await append(world, [*history[late:], *stream, *history[:late]])
    steady, restarted = monitor(world), monitor(world)
    pair = (monitor(world), monitor(world))
    position = first
    for i, size in enumerate(cuts(end - first, sizes)):
        expected = await from_log(world, position, position + size)
        if i == restart:
            restarted = monitor(world)  # a restarted process: cold windows mid-stream
        for m in (steady, restarted, pair[i % 2]):
            m.batch_size = size
        assert await steady.evaluate(position) == (position + size, expected)
        assert await restarted.evaluate(position) == (position + size, expected)
        # Two monitors taking turns: each finds the other's batch gone by and catches up.
        assert await pair[i % 2].evaluate(position) == (position + size, expected)
        for detection in expected:
            note(f"fires {detection.rule}")
        position += size
    assert steady.windows.loads == 1 and steady.windows.catch_ups == 0
    note(f"baseline counted: {steady.windows.history.queries > 1}")
    note(f"batches: {min(len(cuts(end - first, sizes)), 5)}")
    note(f"turns caught up: {max(p.windows.catch_ups for p in pair) > 0}")


# -- how the windows are kept -----------------------------------------------------------------


def log_reads(world: World) -> tuple[list[str], Callable[[], None]]:
    """The statements that read ``log_entries`` from now on, and how to stop listening."""
    seen: list[str] = []
    engine = world.gateway.engine.sync_engine

    def capture(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM log_entries" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    return seen, lambda: event.remove(engine, "before_cursor_execute", capture)


async def test_a_steady_monitor_reads_each_batch_once_and_no_window(world: World) -> None:
    m = monitor(world, batch_size=10)
    m.thresholds = dataclasses.replace(SMALL, window_max_calls=1000)  # no window is cut
    stream = [Call(i * 2.0, "m-one", "verify", i % 10, 0, 0) for i in range(10)]
    await append(world, stream)
    assert (await m.run_once()).batches == 1  # the first batch reads the reach: a start
    for _round in range(3):
        world.clock.advance(dt.timedelta(seconds=30))
        await append(world, [*stream, Call(1, None, "unauthenticated", 0, 0, 1)])
        seen, stop = log_reads(world)
        try:
            run = await m.run_once()
        finally:
            stop()
        assert run.batches == 2
        # Per batch: its own records, nothing else (the last read finds the stream's end).
        reads = [s for s in seen if "payload" in s]
        assert len(reads) == 3 and all("seq >=" in s for s in reads), reads
    assert (m.windows.loads, m.windows.catch_ups) == (1, 0)
    assert m.windows.history.queries == 1  # m-one's first allowed call, once
    [alert] = [c.alert for c in run.changes if c.alert.rule == "enumeration"]
    assert alert.evidence["figures"]["run"] == 10


async def test_windows_stay_within_the_reach_and_the_bound(world: World) -> None:
    m = monitor(world, batch_size=1000)
    many = [
        Call(i * 0.1, merchant, "verify", i % 10, 0, 0) for i in range(40) for merchant in MERCHANTS
    ]
    await append(world, many)
    await m.run_once()
    # Two merchants' data calls (the third has none: it is nobody's) and no refusals.
    assert len(m.windows) == 2 * SMALL.window_max_calls
    # A batch past the reach (and the slack) drops everything before it.
    world.clock.advance(SMALL.reach + EVICTION_SLACK + dt.timedelta(seconds=10))
    await append(world, [Call(0, "m-one", "verify", 0, 0, 0)])
    await m.run_once()
    assert len(m.windows) == 1 and m.windows.loads == 1


async def test_two_monitors_sharing_one_store_keep_their_windows(world: World) -> None:
    """Each batch is committed once, by whichever monitor moved the cursor; the other reads
    the batches it did not evaluate (or, after a long absence, the reach afresh), and its
    next batch raises what a read of the log does."""
    one, two = monitor(world, batch_size=4), monitor(world, batch_size=4)
    refusals = [Call(i * 1.0, "m-one", "refused", 0, 0, 0) for i in range(4)]
    for turn in range(6):
        await append(world, refusals)
        await (one if turn % 2 else two).step()
    # Both racing for the same batch: one commits, the other's windows hold it too.
    await append(world, refusals)
    results = await asyncio.gather(one.step(), two.step())
    assert [r.committed for r in results if r is not None].count(True) == 1
    await append(world, refusals)
    position = await one.position()
    expected = await from_log(world, position, position + 4)
    assert [d.rule for d in expected] == ["refusal-burst"]
    assert await one.evaluate(position) == (position + 4, expected)
    assert await two.evaluate(position) == (position + 4, expected)
    assert one.windows.loads == two.windows.loads == 1
    assert one.windows.catch_ups >= 2 and two.windows.catch_ups >= 2
    # A long absence: the reach is read afresh instead of every batch missed.
    for _turn in range(6):
        await append(world, refusals)
        await two.step()
    await append(world, refusals)
    position = await one.position()
    expected = await from_log(world, position, position + 4)
    assert await one.evaluate(position) == (position + 4, expected)
    assert one.windows.loads == 2


# -- pacing -----------------------------------------------------------------------------------


async def test_a_round_evaluates_one_batch_unless_full_ones_are_waiting(world: World) -> None:
    m = monitor(world, batch_size=5)
    quiet = [Call(i, "m-one", "verify", 0, 0, 0) for i in range(3)]
    await append(world, quiet)
    assert (await m.run_round()).batches == 1
    # A backlog of full batches drains in one round; a partial batch ends it.
    _first, end = await append(world, quiet * 8)
    run = await m.run_round()
    assert (run.batches, run.position) == (5, end)
    # Sustained load above a batch per round: every round catches up with the head.
    for _round in range(4):
        _first, end = await append(world, quiet * 6)
        assert (await m.run_round()).position == end
    assert (await m.run_round()).batches == 0
