"""Readiness: whether this process can answer calls now, checked live.

Every dependency a call needs is checked, each within a timeout and all at once, so a
probe answers within about two seconds whatever hangs: the store answers ``SELECT 1``, the
call-log writer runs, the keystore file is readable and holds the token-signing key, Redis
answers ``PING`` (when quotas are shared through it), the file systems of the data
directory and of a SQLite store have ``disk_min_free_mb`` free, and the policy snapshot is
trusted (:attr:`gateway.governance.policy.PolicyStore.fresh`). Each outcome is reported to
the process's :class:`~gateway.dependencies.DependencyHealth`, so probes also find a
dependency's return when no call does. ``/readyz`` and the background
:class:`DependencyWatch` both run :func:`check_dependencies`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.errors import DsgwError, KeystoreUnavailableError, StoreUnavailableError
from gateway.tasks import Supervised
from keys.keystore import KeyPurpose

if TYPE_CHECKING:
    from gateway.runtime import Gateway

__all__ = ["CHECK_TIMEOUT", "DependencyWatch", "check_dependencies", "store_paths"]

log = logging.getLogger(__name__)

#: Seconds each check may take before it counts as failed.
CHECK_TIMEOUT: Final = 2.0
_MIB: Final = 1024 * 1024

Check = dict[str, Any]


def store_paths(gateway: Gateway) -> list[Path]:
    """Directories whose file systems a call writes to: the data directory, and the
    directory of a SQLite store wherever its URL puts it."""
    paths = [gateway.settings.data_dir]
    url = make_url(gateway.settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        store = Path(url.database).parent
        if store not in paths:
            paths.append(store)
    return paths


async def _timed(what: str, gateway: Gateway, probe: Any) -> Check:
    started = time.monotonic()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except TimeoutError:
        gateway.health.failed(what, f"no answer within {CHECK_TIMEOUT:g} s")
        return {"ok": False, "detail": "timeout"}
    except Exception as exc:
        if gateway.health.observe(exc) is None:
            raise  # not a dependency's absence: a bug
        return {"ok": False, "detail": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


async def _database(gateway: Gateway) -> Check:
    async def probe() -> None:
        async with gateway.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        gateway.health.recovered("database")

    return await _timed("database", gateway, probe)


async def _redis(gateway: Gateway) -> Check:
    quotas = gateway.shared_quotas
    assert quotas is not None
    return await _timed("redis", gateway, quotas.ping)


def _keystore(gateway: Gateway) -> Check:
    try:
        # A stat when nothing changed; finds a keystore file that disappeared or broke.
        gateway.keystore.reload_if_changed()
        gateway.keystore.active(KeyPurpose.TOKEN_SIGNING)
    except (DsgwError, OSError) as exc:
        gateway.health.report(KeystoreUnavailableError("keystore unreadable"), exc)
        return {"ok": False, "detail": "the keystore cannot be read or has no signing key"}
    gateway.health.recovered("keystore")
    return {"ok": True}


async def _policy(gateway: Gateway) -> Check:
    """Whether calls would be decided now. Also *tries* the reload a pending change needs
    (within its backoff): a node no call reaches (the load balancer took it out) must still
    find out that it can serve again. The reload itself is never cancelled by the timeout:
    calls may be waiting for it."""
    reload = asyncio.ensure_future(gateway.policy.current())
    reload.add_done_callback(_retrieve)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await asyncio.shield(reload)
    except TimeoutError:
        return {"ok": False, "detail": "the policy reload takes too long"}
    except StoreUnavailableError:
        pass  # untrusted: reported where the reload failed
    except Exception as exc:
        if gateway.health.observe(exc) is None:
            raise
    if gateway.policy.fresh:
        return {"ok": True}
    return {"ok": False, "detail": "the policy snapshot cannot be trusted until a reload"}


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded task's outcome as seen (the caller may have stopped waiting)."""
    if not task.cancelled():
        task.exception()


def _disk(gateway: Gateway) -> Check:
    threshold = gateway.settings.health.disk_min_free_mb
    lowest: int | None = None
    for path in store_paths(gateway):
        try:
            free = shutil.disk_usage(path).free // _MIB
        except OSError as exc:
            gateway.health.failed("disk", exc)
            return {"ok": False, "detail": f"cannot read free space ({exc.strerror})"}
        lowest = free if lowest is None else min(lowest, free)
    assert lowest is not None
    if lowest < threshold:
        gateway.health.failed(
            "disk", f"{lowest} MiB free, below disk_min_free_mb = {threshold} MiB"
        )
        return {"ok": False, "free_mb": lowest, "detail": "free space below disk_min_free_mb"}
    gateway.health.recovered("disk")
    return {"ok": True, "free_mb": lowest}


async def check_dependencies(gateway: Gateway) -> dict[str, Check]:
    """Check every dependency a call needs (concurrently, each within
    :data:`CHECK_TIMEOUT`); ``{name: {"ok": bool, ...}}``, all required."""
    checks: dict[str, Check] = {"database": {}}
    # A task group, not background tasks: the probes end with this call, and a probe that
    # fails by a bug cancels the others rather than leaving them running unwatched.
    try:
        async with asyncio.TaskGroup() as group:
            waiting = {"database": group.create_task(_database(gateway))}
            if gateway.shared_quotas is not None:
                waiting["redis"] = group.create_task(_redis(gateway))
            waiting["policy"] = group.create_task(_policy(gateway))
            checks["log_writer"] = {"ok": gateway.log.running}
            checks["keystore"] = _keystore(gateway)
            checks["disk"] = _disk(gateway)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the bug itself, as callers saw it before
    for name, task in waiting.items():
        checks[name] = task.result()
    return checks


class DependencyWatch:
    """Runs :func:`check_dependencies` every ``interval`` seconds in the background, so an
    outage (and a return) is logged and shown in the metrics even when no call or probe
    meets it."""

    def __init__(self, gateway: Gateway, interval: float) -> None:
        self._gateway = gateway
        self._interval = interval
        self._task = Supervised("dsgw-dependency-watch", log=log)

    def start(self) -> None:
        self._task.start(self._run)

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            try:
                await check_dependencies(self._gateway)
            except Exception:  # a bug in a check must not end the watch
                log.exception("dependency watch: a check failed unexpectedly")
            await asyncio.sleep(self._interval)
