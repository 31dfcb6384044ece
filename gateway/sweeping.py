"""A supervised background loop: run one round every ``interval`` seconds until stopped.

The deadline sweeps of use applications and of objections, and the misuse monitor, all need
the same loop: a round that fails because the store is down must not end the loop (the next
round tries again), and stopping must wait for the task to end. One helper, so they cannot
drift apart; the task itself is a :class:`gateway.tasks.Supervised`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from gateway.dependencies import DependencyHealth
from gateway.errors import DsgwError
from gateway.tasks import Supervised

__all__ = ["SweepLoop"]


class SweepLoop:
    """Runs ``round`` in a background task named ``name``, every ``interval`` seconds.

    A round that raises a gateway, database or OS error is logged on ``log`` as
    ``"<what> failed, will retry: <error>"`` and the loop goes on; when ``health`` is given,
    a dependency outage is reported there instead (once for the whole outage). Any other
    exception is a bug: it ends the task, logged with its traceback and kept in
    :attr:`failure`; with ``survive_bugs`` it is logged as ``"<what> failed unexpectedly,
    will retry"`` and the loop goes on (for work that must never stop silently, such as
    misuse monitoring).
    """

    def __init__(
        self,
        round: Callable[[], Awaitable[object]],
        *,
        name: str,
        what: str,
        log: logging.Logger,
        health: DependencyHealth | None = None,
        survive_bugs: bool = False,
    ) -> None:
        self._round = round
        self._what = what
        self._log = log
        self._health = health
        self._survive_bugs = survive_bugs
        self._task = Supervised(name, log=log)

    @property
    def running(self) -> bool:
        """Whether the loop has been started and has neither ended nor been stopped."""
        return self._task.running

    @property
    def failure(self) -> BaseException | None:
        """The bug that ended the loop, if one did."""
        return self._task.failure

    def start(self, interval: float) -> None:
        """Start the loop; a second call while it runs does nothing."""
        self._task.start(lambda: self._forever(interval))

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end; does nothing when it is not running."""
        await self._task.stop()

    async def _forever(self, interval: float) -> None:
        while True:
            try:
                await self._round()
            except (DsgwError, SQLAlchemyError, OSError) as exc:  # the next round tries again
                if self._health is None or not self._health.absorb(exc):
                    self._log.warning("%s failed, will retry: %s", self._what, exc)
            except Exception:
                if not self._survive_bugs:
                    raise
                self._log.exception("%s failed unexpectedly, will retry", self._what)
            await asyncio.sleep(interval)
