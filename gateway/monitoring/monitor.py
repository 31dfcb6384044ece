"""The monitor: evaluates the misuse rules over the calls stream, batch by batch.

Progress is a cursor in ``monitor_cursors`` (the next ``calls`` position to evaluate). A
batch's alerts commit in the same transaction that moves the cursor from its old position
(compare-and-set), so when two gateway processes run the monitor, each batch is evaluated
once: the slower process finds the cursor moved and its transaction changes nothing.

Rules read their windows from memory (:mod:`gateway.monitoring.window_state`): each batch
is read and parsed once and added to the windows, which drop what falls out of the rules'
reach. The windows are built from the log in one read on start and after a gap (batches
another process evaluated are read and added, a large gap starts afresh), and hold exactly
what a read of the log up to the batch would, so a restarted monitor resumes at the cursor,
raises nothing twice and reaches the same result.

In the background (``dsgw serve``) the monitor evaluates one batch per interval, and the
next one at once while the last was full: a steady trickle of calls is evaluated in one
batch per interval instead of one batch per few calls, and a backlog still drains.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import Clock
from gateway.db.schema import MonitorCursorRow
from gateway.dependencies import DependencyHealth
from gateway.governance.policy import PolicyStore
from gateway.monitoring.calls import read_batch
from gateway.monitoring.models import AlertChange, Detection
from gateway.monitoring.rules import DEFAULT_RULES, Rule, RuleContext, Thresholds
from gateway.monitoring.store import AlertStore
from gateway.monitoring.webhook import WebhookSender
from gateway.monitoring.window_state import WindowState
from gateway.sweeping import SweepLoop
from gateway.workdays import UncoveredYearError, WorkingCalendar
from gateway.workdays.store import LiveCalendar

__all__ = ["BatchResult", "Monitor", "MonitorRun"]

# Records another process evaluated that a monitor reads to keep its windows, in batches;
# beyond that, reading the reach afresh costs less.
CATCH_UP_BATCHES = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    start: int
    end: int
    changes: tuple[AlertChange, ...]
    # False when another process evaluated this batch first (nothing was written here).
    committed: bool = True


@dataclass(slots=True)
class MonitorRun:
    """What one run over the backlog did."""

    start: int
    position: int
    batches: int = 0
    changes: list[AlertChange] = field(default_factory=list)

    @property
    def records(self) -> int:
        return self.position - self.start


class Monitor:
    def __init__(
        self,
        engine: AsyncEngine,
        alerts: AlertStore,
        policy: PolicyStore,
        clock: Clock,
        *,
        thresholds: Thresholds | None = None,
        calendar: WorkingCalendar | LiveCalendar | None = None,
        rules: Sequence[Rule] = DEFAULT_RULES,
        name: str = "alerts",
        batch_size: int = 5000,
        webhook: WebhookSender | None = None,
        health: DependencyHealth | None = None,
    ) -> None:
        self._engine = engine
        # A store outage is logged there once, not once per round.
        self._health = health or DependencyHealth()
        self.alerts = alerts
        self._policy = policy
        self._clock = clock
        self.thresholds = thresholds or Thresholds()
        self._calendar = calendar
        self._rules = tuple(rules)
        self.name = name
        self.batch_size = batch_size
        self.webhook = webhook
        # A store hiccup leaves the cursor where it was: the next round evaluates again.
        # A bug must not silently end monitoring either: it is logged loudly and retried.
        self.windows = WindowState(engine)
        self._stepping = asyncio.Lock()
        self._loop = SweepLoop(
            self.run_round,
            name="dsgw-monitor",
            what="monitor: evaluation",
            log=log,
            health=self._health,
            survive_bugs=True,
        )
        self._warned_years: set[int] = set()

    def is_working_day(self, day: dt.date) -> bool:
        """The State Council calendar; Monday to Friday for a year it does not cover (and
        a warning), so a missing schedule degrades the out-of-hours rule, not the monitor."""
        if self._calendar is not None:
            try:
                return self._calendar.is_working_day(day)
            except UncoveredYearError:
                if day.year not in self._warned_years:
                    self._warned_years.add(day.year)
                    log.warning(
                        "monitor: no working-day schedule for %d; out-of-hours treats Monday "
                        "to Friday as working days (docs/workdays.md)",
                        day.year,
                    )
        return day.weekday() < 5

    async def position(self) -> int:
        """The next ``calls`` position to evaluate (0 for a new cursor)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(MonitorCursorRow.position).where(MonitorCursorRow.name == self.name)
            )
        if value is not None:
            return int(value)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(MonitorCursorRow).values(
                        name=self.name, position=0, updated_at=self._clock.now()
                    )
                )
        except IntegrityError:
            return await self.position()  # another process created it first
        return 0

    async def evaluate(self, start: int) -> tuple[int, list[Detection]]:
        """The detections of the batch starting at ``start`` and where it ends; writes
        nothing to the store (the batch joins the in-memory windows)."""
        batch = await read_batch(self._engine, start, self.batch_size)
        if not batch:
            return start, []
        try:
            await self.windows.advance(
                start,
                batch,
                reach=self.thresholds.reach,
                max_calls=self.thresholds.window_max_calls,
                catch_up=CATCH_UP_BATCHES * self.batch_size,
            )
            context = RuleContext(
                batch=batch,
                windows=self.windows.windows(),
                snapshot=await self._policy.current(),
                is_working_day=self.is_working_day,
                thresholds=self.thresholds,
            )
            detections: list[Detection] = []
            for rule in self._rules:
                detections.extend(await rule.evaluate(context))
        except BaseException:
            self.windows.reset()  # half-advanced windows are not trusted
            raise
        return batch[-1].seq + 1, detections

    async def step(self) -> BatchResult | None:
        """Evaluate the next batch and commit its alerts with the cursor; None when there
        is nothing new. One step at a time per monitor: its windows follow one batch."""
        async with self._stepping:
            return await self._step()

    async def _step(self) -> BatchResult | None:
        start = await self.position()
        end, detections = await self.evaluate(start)
        if end == start:
            return None

        async def commit(conn: AsyncConnection, now: dt.datetime) -> list[AlertChange] | None:
            moved = await conn.execute(
                update(MonitorCursorRow)
                .where(MonitorCursorRow.name == self.name, MonitorCursorRow.position == start)
                .values(position=end, updated_at=now)
            )
            if moved.rowcount != 1:
                return None
            return [await self.alerts.record(conn, now, d) for d in detections]

        changes = await self.alerts.transaction(commit)
        if changes is None:
            return BatchResult(start, end, (), committed=False)
        for change in changes:
            if change.event != "repeated":
                alert = change.alert
                log.warning(
                    "alert %d %s [%s] %s", alert.id, change.event, alert.severity, alert.title
                )
        if changes and self.webhook is not None:
            self.webhook.wake()
        return BatchResult(start, end, tuple(changes))

    async def run_once(self, *, max_batches: int | None = None) -> MonitorRun:
        """Evaluate the backlog up to the stream's head (or ``max_batches`` batches)."""
        return await self._run(max_batches=max_batches)

    async def run_round(self) -> MonitorRun:
        """One background round: one batch, and the next while the last one was full."""
        return await self._run(while_full=True)

    async def _run(self, *, max_batches: int | None = None, while_full: bool = False) -> MonitorRun:
        start = await self.position()
        run = MonitorRun(start=start, position=start)
        while max_batches is None or run.batches < max_batches:
            result = await self.step()
            if result is None:
                break
            run.batches += 1
            run.position = result.end
            run.changes.extend(result.changes)
            if while_full and result.end - result.start < self.batch_size:
                break
        return run

    def start(self, interval: float) -> None:
        """Run in the background every ``interval`` seconds (``dsgw serve``)."""
        self._loop.start(interval)
        if self.webhook is not None:
            self.webhook.start()

    @property
    def running(self) -> bool:
        return self._loop.running

    async def stop(self) -> None:
        await self._loop.stop()
        if self.webhook is not None:
            await self.webhook.close()
