"""Running the HTTP app until SIGINT/SIGTERM, then shutting down without losing records.

``dsgw serve`` runs one worker process per core (``--workers``); each binds the same port
with ``SO_REUSEPORT`` and the kernel spreads connections across them. The workers share
nothing in memory: the store, Redis (quotas), the leader lock (background work) and the
policy push (:mod:`gateway.cluster`) make their decisions agree. The parent only starts,
watches and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from gateway.api.app import create_app
from gateway.api.server import GatewayRunner
from gateway.background import Role
from gateway.errors import ConfigError
from gateway.runtime import Gateway
from gateway.settings import Settings

__all__ = [
    "WorkerPool",
    "running_gateway",
    "serve_forever",
    "settle_heap",
    "wait_for_signal",
]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, gateway: Gateway | None = None, *, reuse_port: bool = False
) -> AsyncIterator[tuple[Gateway, int]]:
    """Start the gateway's HTTP server; yields the gateway and the bound port.

    A gateway opened here campaigns for leadership (:meth:`BackgroundWork.campaign`) and follows
    policy changes from other machines, as one of several processes; a ``gateway`` passed
    in (the demo, tests) runs the background work itself, as the only process.

    On exit, in this order: the server stops accepting; in-flight calls finish, each with
    its record (up to ``shutdown_drain_seconds``, after which aiohttp cancels what is left);
    only then does :meth:`Gateway.close` stop what they used: the log writer commits what
    is queued, Redis and the store are closed.
    """
    owned = gateway is None
    gateway = gateway or await Gateway.open(settings, anchoring=False)
    role = Role.CAMPAIGN if owned else Role.SOLE
    runner = GatewayRunner(
        create_app(gateway, background=role),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.server.shutdown_drain_seconds,
    )
    try:
        await runner.setup()
        site = web.TCPSite(
            runner, settings.server.host, settings.server.port, reuse_port=reuse_port
        )
        await site.start()
        port = int(runner.addresses[0][1]) if runner.addresses else settings.server.port
        yield gateway, port
    finally:
        # Drains the in-flight calls, then stops the background work (the app's cleanup
        # context), before anything they use is closed.
        await runner.cleanup()
        await gateway.close(final_checkpoint=True)


async def wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


#: Container objects allocated, net, between two collections of the youngest generation
#: (CPython's default is 700). Why so many: a call allocates a few hundred, almost all freed
#: by reference counting when it ends, so at the default the collector ran every few calls
#: and walked whatever was alive at that moment; it also promoted each batch of the
#: monitor's window to older generations, which made full collections frequent. A cycle of
#: garbage still goes, a little later, and the memory this holds is bounded by the count.
YOUNG_COLLECTION_THRESHOLD = 50_000


def settle_heap() -> None:
    """Tune the garbage collector for serving, once the gateway has started.

    What starting made (modules, the policy, the services) lives as long as the process:
    frozen, it is out of the collector's reach, so that a full collection under load walks
    only what calls made since (over the startup heap it paused every call for about 100
    ms, once every few seconds). The youngest generation is then collected every
    :data:`YOUNG_COLLECTION_THRESHOLD` allocations instead of every 700.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def serve_forever(settings: Settings, *, worker: int | None = None) -> None:
    async with running_gateway(settings, reuse_port=worker is not None) as (_gateway, port):
        settle_heap()
        if worker is None:
            print(
                f"dsgw listening on http://{settings.server.host}:{port} (Ctrl-C stops)", flush=True
            )
        await wait_for_signal()
        if worker is None:
            print("dsgw: stopping; committing queued log records", flush=True)


def _worker_main(settings: Settings, index: int) -> None:
    """A worker process: one event loop serving on the shared port until told to stop."""
    from gateway.logs import configure_logging

    os.environ["DSGW_WORKER_ID"] = str(index)
    configure_logging(settings)  # a spawned process starts with no logging set up
    # The parent relays Ctrl-C as SIGTERM; a terminal's SIGINT to the whole group must not
    # make a worker stop before the parent has decided to stop them all.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve_forever(settings, worker=index))


class WorkerPool:
    """Starts ``count`` workers, restarts one that dies, stops them all on a signal.

    A worker that dies within ``min_uptime`` seconds of starting, ``max_quick_exits`` times
    in a row, stops the pool: a worker that cannot start (port taken, store down, bad
    keystore passphrase) would otherwise be restarted forever.
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        min_uptime: float = 10.0,
        max_quick_exits: int = 3,
        stop_timeout: float | None = None,
    ) -> None:
        if count > 1 and settings.server.port == 0:
            raise ConfigError("serve: several workers need a fixed port (port 0 picks one each)")
        self._settings = settings
        self._count = count
        self._min_uptime = min_uptime
        self._max_quick_exits = max_quick_exits
        # A worker drains its calls for up to shutdown_drain_seconds, then commits and
        # closes: killed only if it has not stopped some time after that.
        self._stop_timeout = (
            stop_timeout
            if stop_timeout is not None
            else settings.server.shutdown_drain_seconds + 10
        )
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, tuple[BaseProcess, float]] = {}
        self._quick_exits = 0
        self._stopping = False
        self.restarts = 0

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main, args=(self._settings, index), name=f"dsgw-worker-{index}"
        )
        process.start()
        self._workers[index] = (process, time.monotonic())
        log.info("serve: worker %d started (pid %s)", index, process.pid)

    def _stop(self, *_args: Any) -> None:
        self._stopping = True

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status for the command."""
        from gateway.api.telemetry import prepare_multiprocess_dir

        # Counters of every worker in one directory, so a scrape that lands on any worker
        # reports the machine's totals (prometheus_client's multiprocess mode).
        metrics_dir = self._settings.data_dir / "metrics"
        prepare_multiprocess_dir(metrics_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self._count):
                self._spawn(index)
            server = self._settings.server
            print(
                f"dsgw listening on http://{server.host}:{server.port} "
                f"with {self._count} workers (Ctrl-C stops)",
                flush=True,
            )
            status = self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._shutdown()
        return status

    def _supervise(self) -> int:
        from gateway.api.telemetry import worker_exited

        while not self._stopping:
            time.sleep(0.2)
            for index, (process, started) in list(self._workers.items()):
                if process.is_alive() or self._stopping:
                    continue
                pid = process.pid
                process.join()
                if pid is not None:
                    worker_exited(pid)
                uptime = time.monotonic() - started
                log.error(
                    "serve: worker %d (pid %s) exited with status %s after %.1f s",
                    index,
                    pid,
                    process.exitcode,
                    uptime,
                )
                self._quick_exits = self._quick_exits + 1 if uptime < self._min_uptime else 0
                if self._quick_exits >= self._max_quick_exits:
                    log.error("serve: workers keep failing at start; stopping (see above)")
                    return 1
                self.restarts += 1
                self._spawn(index)
        return 0

    def _shutdown(self) -> None:
        """SIGTERM every worker (each finishes its calls and commits its records), then
        wait; a worker still running after ``stop_timeout`` is killed."""
        print("dsgw: stopping workers; committing queued log records", flush=True)
        for process, _started in self._workers.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + self._stop_timeout
        for process, _started in self._workers.values():
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                log.error("serve: worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        self._workers.clear()
