"""Background tasks with an owner: started once, stopped for sure, never failing unseen.

Every long-running loop of a gateway process on its event loop (the checkpointer, anchoring,
the monitor, the sweeps, leadership, the policy watch, the dependency watch) runs in a
:class:`Supervised` task, and this is the only module that creates such tasks. (The log
writer is a thread of its own, :mod:`gateway.ledger.log`: its commits never wait for the
event loop.) One place,
so that each loop gets the same three guarantees:

* starting twice starts one task, and stopping waits until the task has really ended (a
  stopped loop holds no connection or lock past shutdown);
* a strong reference is kept while it runs (the event loop keeps only a weak one);
* a loop that ends by an unexpected exception is logged at once with its traceback and
  remembered in :attr:`Supervised.failure`, instead of asyncio's "Task exception was never
  retrieved" at garbage collection, or nothing at all.

What one round of a loop does stays in its own module; a loop that runs a round every few
seconds and must survive store outages is :class:`gateway.sweeping.SweepLoop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Supervised"]

_log = logging.getLogger(__name__)


class Supervised:
    """One named background task, owned by the object that holds this.

    ``name`` names the asyncio task (``dsgw-...``: it shows in task dumps and in the log);
    ``log`` receives the line for an unexpected end, defaulting to this module's logger.
    """

    def __init__(self, name: str, *, log: logging.Logger | None = None) -> None:
        self.name = name
        self._log = log or _log
        self._task: asyncio.Task[object] | None = None
        #: The exception that ended the latest run unexpectedly; None while it runs well.
        self.failure: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether a task was started and has not ended (nor been stopped)."""
        return self._task is not None and not self._task.done()

    def start(self, factory: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run ``factory()`` as the task; does nothing while a task runs.

        A factory rather than a coroutine, so that a second call creates no coroutine that
        is never awaited. Must be called from a running event loop.
        """
        if self.running:
            return
        self.failure = None
        task = asyncio.create_task(factory(), name=self.name)
        task.add_done_callback(self._ended)
        self._task = task

    def cancel(self) -> None:
        """Ask the task to stop without waiting for it (see :meth:`stop`); lets an owner of
        several tasks cancel them all before waiting for each."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended. Safe when never started and when
        called twice; a failure of the task is not raised here (it was logged when it
        happened). Cancelling the caller while it waits still cancels the caller."""
        task = self._task
        if task is None:
            return
        task.cancel()
        await self._wait(task)

    async def join(self) -> None:
        """Wait, without cancelling, for a task that was told to finish by other means
        (an event its loop watches), so that it is never torn mid-round. Safe when never
        started and when called twice."""
        task = self._task
        if task is not None:
            await self._wait(task)

    async def _wait(self, task: asyncio.Task[object]) -> None:
        try:
            with contextlib.suppress(Exception):  # logged and kept in ``failure`` by _ended
                await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled
        finally:
            if self._task is task:
                self._task = None

    def _ended(self, task: asyncio.Task[object]) -> None:
        """Done callback: retrieves the outcome so none is lost, and reports a failure."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failure = exc
            self._log.error(
                "%s: background task ended unexpectedly: %r", self.name, exc, exc_info=exc
            )
