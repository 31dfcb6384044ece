"""Counters and histograms of the gateway's worker processes, for ``GET /metrics``.

Labels are bounded: the call kind, the scenario (created by the authority, so few), the
decision and the status class; never a merchant, a token or a parameter value. The scenario
of a call comes from its path or token request, before anything is authenticated, so it is a
label only if the policy knows the scenario (``known_scenario``); every other name counts
under the one label ``unknown``. Otherwise anyone could mint a time series per request
(``/v1/scenarios/<anything>/...``) and write their own strings into the operator's
dashboards.

Two modes, chosen when a :class:`Telemetry` is built:

- **One process** (``PROMETHEUS_MULTIPROC_DIR`` unset): each app has its own in-memory
  registry (tests build many apps in one process; a process-wide one would refuse the
  second), and a scrape shows that process's counts.
- **Several worker processes** (``PROMETHEUS_MULTIPROC_DIR`` set, by ``dsgw serve
  --workers N`` to a directory it prepared with :func:`prepare_multiprocess_dir`): every
  value is written to a memory-mapped file of that directory, one file per process and
  metric type (prometheus_client's multiprocess mode), and a scrape answered by any worker
  sums the files of all of them. The serving master calls :func:`worker_exited` when it
  reaps a worker: the worker's counters and histograms stay counted, its live gauges go.

The rules of multiprocess mode that this module follows (prometheus_client docs,
"Multiprocess Mode"): a scrape builds a fresh registry holding a ``MultiProcessCollector``
and never registers live metrics in it; every Gauge names a ``multiprocess_mode`` (here
``livesum``) and none uses ``set_function``; no Info or Enum metrics; no exemplars.

The environment variable is prometheus_client's own contract, which is why this module,
not :mod:`gateway.settings`, reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from gateway.errors import ConfigError
from gateway.governance.policy import UNKNOWN_NAME

__all__ = [
    "MULTIPROC_ENV",
    "Telemetry",
    "multiprocess_dir",
    "multiprocess_exposition",
    "prepare_multiprocess_dir",
    "worker_exited",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# The files prometheus_client writes: ``<type>_<pid>.db``, gauges ``gauge_<mode>_<pid>.db``.
_METRIC_FILE: Final = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")

# The value class this module installed, and for which directory (see _use_value_class).
_installed: tuple[Any, Path] | None = None


def multiprocess_dir() -> Path | None:
    """The shared metrics directory when multiprocess mode is on (the environment variable
    is set and not empty), else ``None``."""
    raw = os.environ.get(MULTIPROC_ENV, "")
    return Path(raw) if raw else None


def _use_value_class(directory: Path | None) -> None:
    """Make metrics built from now on in this process record in memory (``None``) or in
    ``directory``'s files.

    prometheus_client picks its value class once, at import, from the environment. The
    serving master may import it before it sets the variable and then fork its workers, so
    the choice is made again here, before any metric of ours exists (the library's own test
    suite swaps ``values.ValueClass`` the same way). A class the library chose at import is
    kept: metrics built with it may already have files open.
    """
    global _installed
    current = values.ValueClass
    if directory is None:
        if getattr(current, "_multiprocess", False):
            values.ValueClass = values.MutexValue
        _installed = None
        return
    chosen_at_import = _installed is None
    if getattr(current, "_multiprocess", False) and (
        chosen_at_import or (_installed is not None and _installed[:2] == (current, directory))
    ):
        _installed = (current, directory)
        return
    # Memory-backed so far, or ours for another directory (tests): files of a new set.
    fresh = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    values.ValueClass = fresh
    _installed = (fresh, directory)


class Telemetry:
    """The gateway's request counters and histograms for one app.

    Built once per app. With ``PROMETHEUS_MULTIPROC_DIR`` set, the values are recorded in
    that directory (see the module docstring) and :meth:`exposition` sums every process's.
    """

    def __init__(self, *, known_scenario: Callable[[str], bool]) -> None:
        """``known_scenario`` says whether a scenario id exists (in the current policy);
        only those become ``scenario`` labels."""
        self._known_scenario = known_scenario
        self.multiprocess_dir = multiprocess_dir()
        _use_value_class(self.multiprocess_dir)
        # In multiprocess mode no registry of live metrics is ever exposed: a scrape reads
        # the files. The registry still holds them so that one-process exposition works.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dsgw_requests",
            "Recorded requests, by kind (data, token, admin, account, delivery, public, read, "
            "ledger, metrics, meta, unmatched, protocol), scenario (unknown for any name the "
            "policy does not hold), decision (allow, deny, error) and status class.",
            ["kind", "scenario", "decision", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dsgw_request_duration_seconds",
            "Time from a logged call's arrival to its record being durable, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.probes = Counter(
            "dsgw_probe_requests",
            "Health probes answered (/healthz, /readyz): counted here instead of recorded.",
            ["probe"],
            registry=self.registry,
        )
        self.batches = Histogram(
            "dsgw_log_commit_batch_records",
            "Records per group commit of the call-log writer.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # livesum: each live worker contributes its 1; worker_exited removes a dead one's.
        self.workers = Gauge(
            "dsgw_worker_processes",
            "Gateway worker processes serving on this machine (1 without --workers).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.workers.set(1)
        # The labelled children each call counts into, looked up once per label set:
        # ``labels()`` validates and converts its arguments every time. Bounded by the
        # labels' own values (kinds, known scenarios, decisions, status classes).
        self._request_counts: dict[tuple[str, str, str, str], Counter] = {}
        self._latencies: dict[str, Histogram] = {}
        # Told by gateway.dependencies.DependencyHealth (subscribe). livemin: on a machine
        # with several workers, 0 as soon as any live worker finds the dependency down.
        self.dependency_up = Gauge(
            "dsgw_dependency_up",
            "1 while this process reaches the dependency (database, disk, keystore, redis), "
            "0 from a failure until it answers again.",
            ["dependency"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.dependency_failures = Counter(
            "dsgw_dependency_failures",
            "Operations (calls, background passes, probes) that failed because the "
            "dependency was unavailable.",
            ["dependency"],
            registry=self.registry,
        )

    def observe_call(
        self, kind: str, scenario: str | None, decision: str, status: int, seconds: float
    ) -> None:
        label = "" if not scenario else scenario if self._known_scenario(scenario) else UNKNOWN_NAME
        key = (kind, label, decision, f"{status // 100}xx")
        count = self._request_counts.get(key)
        if count is None:
            count = self._request_counts[key] = self.requests.labels(*key)
        count.inc()
        latency = self._latencies.get(kind)
        if latency is None:
            latency = self._latencies[kind] = self.latency.labels(kind)
        latency.observe(seconds)

    def observe_probe(self, path: str) -> None:
        self.probes.labels(path.lstrip("/")).inc()

    def observe_batch(self, records: int) -> None:
        self.batches.observe(records)

    def dependency_changed(self, dependency: str, up: bool) -> None:
        self.dependency_up.labels(dependency).set(1 if up else 0)

    def dependency_failed(self, dependency: str) -> None:
        self.dependency_failures.labels(dependency).inc()

    def exposition(self) -> bytes:
        """The counters in the Prometheus text format: this process's, or in multiprocess
        mode the sum over every worker process of the machine, dead ones included."""
        if self.multiprocess_dir is not None:
            return multiprocess_exposition(self.multiprocess_dir)
        return generate_latest(self.registry)


def multiprocess_exposition(directory: Path) -> bytes:
    """Every process's metrics in ``directory``, merged, in the Prometheus text format.

    A fresh registry per scrape, holding only the collector: registering live metrics in it
    as well would export them twice.
    """
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_exited(pid: int) -> None:
    """Bookkeeping for a reaped worker process ``pid``: its live gauges (the
    ``dsgw_worker_processes`` share) stop counting; its counters and histograms stay, so
    totals never go down. A no-op unless multiprocess mode is on in this process."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 or, if it exists, empty it of a previous run's files.

    Call it in the serving master before any worker starts, then set
    ``PROMETHEUS_MULTIPROC_DIR`` to it. Only prometheus_client's own files are removed: a
    directory holding anything else (a mistyped path such as a home directory), not a
    directory, a symbolic link, or one owned by another user is refused with
    :class:`ConfigError`, and nothing in it is touched. Missing parents are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"metrics: cannot create {path}: {exc.strerror}") from exc
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(
            f"metrics: {path} is not a directory (or is a symbolic link): {exc.strerror}"
        ) from exc
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise ConfigError(f"metrics: {path} belongs to another user; refusing to use it")
        os.fchmod(fd, 0o700)
        names = os.listdir(fd)
        strangers = sorted(name for name in names if not _METRIC_FILE.fullmatch(name))
        if strangers:
            shown = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
            raise ConfigError(
                f"metrics: {path} holds files that are not metric files ({shown}); "
                "refusing to empty it: point PROMETHEUS_MULTIPROC_DIR at a directory of its own"
            )
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)  # never follows a link: removes the link itself
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ConfigError(f"metrics: cannot remove {path / name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
