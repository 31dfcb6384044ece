"""Running the HTTP app until SIGINT/SIGTERM, then shutting down without losing records."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.api.app import create_app
from gateway.runtime import Gateway
from gateway.settings import Settings

__all__ = ["running_gateway", "serve_forever", "wait_for_signal"]


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, gateway: Gateway | None = None
) -> AsyncIterator[tuple[Gateway, int]]:
    """Start the gateway's HTTP server; yields the gateway and the bound port.

    On exit the server stops accepting, in-flight calls finish, the log writer commits what
    is queued, and the store is closed.
    """
    gateway = gateway or await Gateway.open(settings)
    runner = web.AppRunner(create_app(gateway), access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=10)
        await site.start()
        port = int(runner.addresses[0][1]) if runner.addresses else settings.port
        gateway.checkpointer.start()
        gateway.applications.start_sweeper()
        if settings.monitor_enabled:
            gateway.monitor.start(settings.monitor_interval_seconds)
        yield gateway, port
    finally:
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


async def serve_forever(settings: Settings) -> None:
    async with running_gateway(settings) as (_gateway, port):
        print(f"dsgw listening on http://{settings.host}:{port} (Ctrl-C stops)", flush=True)
        await wait_for_signal()
        print("dsgw: stopping; committing queued log records", flush=True)
