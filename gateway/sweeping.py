"""A supervised background loop: run one round every ``interval`` seconds until stopped.

The deadline sweeps of use applications and of objections both need the same loop: a round
that fails because the store is down must not end the loop (the next round tries again),
and stopping must wait for the task to end. One helper, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from gateway.dependencies import DependencyHealth
from gateway.errors import DsgwError

__all__ = ["SweepLoop"]


class SweepLoop:
    """Runs ``round`` in a background task named ``name``, every ``interval`` seconds.

    A round that raises a gateway, database or OS error is logged on ``log`` as
    ``"<what> failed, will retry: <error>"`` and the loop goes on; when ``health`` is given,
    a dependency outage is reported there instead (once for the whole outage). Any other
    exception is a bug and ends the task.
    """

    def __init__(
        self,
        round: Callable[[], Awaitable[object]],
        *,
        name: str,
        what: str,
        log: logging.Logger,
        health: DependencyHealth | None = None,
    ) -> None:
        self._round = round
        self._name = name
        self._what = what
        self._log = log
        self._health = health
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the loop has been started and not stopped."""
        return self._task is not None

    def start(self, interval: float) -> None:
        """Start the loop; a second call while it runs does nothing."""
        if self._task is None:
            self._task = asyncio.create_task(self._forever(interval), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end; does nothing when it is not running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self, interval: float) -> None:
        while True:
            try:
                await self._round()
            except (DsgwError, SQLAlchemyError, OSError) as exc:  # the next round tries again
                if self._health is None or not self._health.absorb(exc):
                    self._log.warning("%s failed, will retry: %s", self._what, exc)
            await asyncio.sleep(interval)
