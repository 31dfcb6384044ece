"""The settings object: every setting of a deployment, its default and what it means.

Built by :func:`gateway.settings.loading.load_settings`; a :class:`Settings` that exists
has passed its checks.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.catalog.allowlist import HostRule, parse_source_hosts
from gateway.errors import ConfigError

__all__ = ["Network", "Settings", "parse_networks", "time_zone"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of a deployment, with safe defaults for the embedded single-node shape."""

    data_dir: Path = Path("dsgw-data")
    # SQLAlchemy URL of the gateway's own store; empty means SQLite in the data directory.
    database_url: str = ""
    # PostgreSQL connections per process: pool_size kept open, max_overflow more under load,
    # and how long a caller waits for one before the call is refused with 503.
    # statement_cache = false behind a transaction-mode pooler (PgBouncer): docs/postgresql.md.
    database_pool_size: int = 10
    database_max_overflow: int = 10
    database_pool_timeout_seconds: float = 5.0
    database_statement_cache: bool = True
    # PostgreSQL reached directly (not through a transaction-mode pooler) for what needs a
    # session of its own: the leader lock and the policy listener of `dsgw serve`. Empty:
    # database_url, which then must not be such a pooler (docs/postgresql.md).
    database_session_url: str = field(default="", repr=False)
    # Redis shared by every gateway process for quotas and rate limits (redis://host:6379/0);
    # empty: each process keeps its own, which is exact only for a single process.
    redis_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    # The deployment's name: token issuer/audience and the ledger's checkpoint origin use it.
    deployment: str = "dsgw.local"
    # Public base URL of this gateway; token `aud` for client assertions is derived from it.
    public_url: str = ""
    keystore_passphrase: str = field(default="", repr=False)
    keystore_passphrase_file: str = ""
    token_lifetime_seconds: int = 900
    # Clock skew tolerated on exp/nbf/iat. Small: tokens are short-lived.
    token_leeway_seconds: int = 30
    token_cache_size: int = 100_000
    # argon2id cost for client secrets (RFC 9106 second recommended option by default).
    secret_hash_time_cost: int = 3
    secret_hash_memory_kib: int = 65_536
    max_body_bytes: int = 64 * 1024
    # Leaked files handed to `POST /admin/trace` may be larger than any other request body;
    # only that route accepts them. Rows beyond trace_max_rows are refused, not truncated.
    trace_upload_max_bytes: int = 32 * 1024 * 1024
    trace_max_rows: int = 1_000_000
    # Leak tracing (docs/tracing.md): one canary row per this many rows of a dataset that
    # allows canaries (0: none); the probability a leaked row was obtained elsewhere than
    # from its recipients (guilt model); the false-attribution probability at or below
    # which a trace names a recipient.
    trace_canary_rate: int = 64
    trace_p_guess: float = 0.5
    trace_named_threshold: float = 1e-6
    aggregate_min_subjects: int = 10
    # Overlap audit of exact aggregates (docs/privacy.md): a cell whose subjects (with
    # their contributions) differ from a cell answered before to the same merchant on the
    # same dataset by 1 to k-1 is withheld; k is this (2-30). 0 switches the audit off,
    # which leaves exact aggregates open to differencing again (tests, comparisons).
    aggregate_overlap_min: int = 10
    # The most subject-level rows (one per subject and cell) one audited aggregate may
    # fetch; beyond, the call is refused with 422 aggregate-too-large ("narrow the filters").
    aggregate_audit_max_rows: int = 100_000
    # Verification budget of a grant that declares none (docs/privacy.md): negative verify
    # answers about one subject per agreement and fixed window, for claims of sensitive
    # fields. window hours: a divisor of 24 or whole days.
    verify_negatives_per_subject: int = 5
    verify_window_hours: int = 24
    # Unauthenticated onboarding applications accepted per client address and hour.
    onboarding_per_hour: int = 10
    # A source department answers a data-quality objection within this many working days
    # (ZW art. 11 asks for prompt handling; docs/workflows.md). Never deemed answered.
    objection_working_days: int = 10
    # Group commit: how many call records one transaction may carry at most.
    log_batch_max: int = 512
    ledger_hash_algorithm: str = "sha256"
    # Sign a checkpoint every N records or T seconds, whichever comes first.
    checkpoint_every_records: int = 10_000
    checkpoint_every_seconds: int = 5
    source_pool_size: int = 4
    # Where source rows may live (docs/security.md, "Where source data and its credentials
    # live"): directories for file sources (CSV, SQLite; relative ones are inside data_dir)
    # and hosts, host:port or URL prefixes (postgresql://host:port/db) for database sources.
    # Whatever else a dataset names is refused, the gateway's own store and the data
    # directory outside its sources/ folder whatever these say.
    source_directories: tuple[str, ...] = ("sources",)
    source_hosts: tuple[str, ...] = ()
    # Source passwords a dataset may name as ``env:DSGW_SRC_...``: every DSGW_SRC_*
    # variable, taken from the environment here and nowhere else (never from a file).
    source_env_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Anchoring: "none", "embedded" (in-process py-evm, ephemeral), "anvil" (a local node
    # started with persistent state in the data directory) or "rpc" (chain_rpc_url).
    chain: str = "anvil"
    chain_rpc_url: str = ""
    # Registry address on an rpc chain; dev chains deploy one on first use.
    chain_contract: str = ""
    chain_confirmations: int = 1
    # Working-day schedules (JSON, docs/workdays.md) for years or regions beyond the shipped
    # State Council schedules; in DSGW_WORKDAY_CALENDARS separated by the path separator.
    workday_calendars: tuple[str, ...] = ()
    # The deployment's time zone (IANA name): date-only periods are whole days in it, and
    # deadlines, daily quotas, reports and monitoring hours count its days (docs/workdays.md).
    timezone: str = "Asia/Shanghai"
    # Misuse monitoring over the calls stream (docs/alerts.md): `dsgw serve` runs it every
    # interval; `dsgw monitor run --once` runs it by hand.
    monitor_enabled: bool = True
    monitor_interval_seconds: int = 5
    monitor_batch_size: int = 5000
    # The most call records one rule window reads (newest first); bounds the monitor's work
    # per batch however busy a merchant is (docs/alerts.md).
    monitor_window_max_calls: int = 20000
    # volume-spike: allowed data calls in a window against the same window on previous days.
    alert_volume_window_minutes: int = 60
    alert_volume_baseline_days: int = 7
    alert_volume_min_history_days: int = 3
    alert_volume_min_calls: int = 100
    alert_volume_factor: int = 3
    alert_volume_sigmas: int = 5
    # enumeration and scraping: one window for identifier runs, distinct subjects, paging.
    alert_pattern_window_minutes: int = 60
    alert_enumeration_run: int = 20
    # enumeration: negative verify answers about one subject (sensitive claims) in one
    # budget window that raise the alert even while the budget still allows more.
    alert_verify_negatives: int = 10
    alert_scraping_distinct_subjects: int = 500
    alert_scraping_pages: int = 20
    # refusal-burst: refused (403) data calls per merchant or client in a short window.
    alert_refusal_window_minutes: int = 10
    alert_refusal_threshold: int = 20
    # invalid-tokens: 401s per remote address or client id in a window.
    alert_invalid_token_window_minutes: int = 10
    alert_invalid_token_threshold: int = 20
    # out-of-hours: calls outside a scenario's hours before an alert is raised.
    alert_out_of_hours_min_calls: int = 1
    # Where new alerts and their handling are pushed (https unless loopback), signed with
    # HMAC-SHA256 under alert_webhook_secret (DSGW_ALERT_WEBHOOK_SECRET; never logged).
    alert_webhook_url: str = ""
    alert_webhook_secret: str = field(default="", repr=False)
    alert_webhook_timeout_seconds: int = 5
    alert_webhook_max_attempts: int = 8
    # Log output on stderr (docs/observability.md): "text" lines or "json" objects, at this
    # level; secrets and personal data are masked in both. access_log adds one "dsgw.access"
    # record per HTTP request (method, path without query, status, duration).
    log_format: str = "text"
    log_level: str = "INFO"
    access_log: bool = False
    # Worker processes of `dsgw serve` on this machine; 0: one per core when redis_url is
    # set (quotas must be shared to be right), else one.
    workers: int = 0
    # Load balancers whose X-Forwarded-For is believed (comma-separated addresses or CIDR
    # networks); empty: the connection's peer is the client.
    trusted_proxies: str = ""
    # Every process re-checks policy this often even when no change was pushed to it: the
    # bound on how long a revocation made on another machine can go unseen.
    policy_poll_seconds: float = 2.0
    # How often processes campaign for leadership and the leader checks it still leads.
    leader_check_seconds: float = 1.0
    # While the store does not answer, how long a process keeps deciding calls on its last
    # policy snapshot after it stopped being sure the snapshot is current (its policy
    # listener was lost); past it, calls are refused with 503 (docs/security.md).
    policy_max_staleness_seconds: float = 30.0
    # Readiness fails, and dsgw_dependency_up{dependency="disk"} is 0, when the file
    # system of the data directory or of a SQLite store has less free space than this.
    disk_min_free_mb: int = 100
    # How often a server checks its dependencies (store, Redis, disk, keystore) even when
    # no call or probe does, so their outages are logged and shown in metrics.
    dependency_check_seconds: float = 5.0
    # On SIGTERM: how long in-flight calls may take to finish before the server closes
    # what they use (store, Redis, call-log writer). `dsgw serve --workers` kills a worker
    # that has not stopped 10 s after this.
    shutdown_drain_seconds: float = 20.0

    def __post_init__(self) -> None:
        # Resolved once, here: an absolute path with symlinks resolved, so every process
        # and every use (the SQLite URL, the keystore, the chain directory and its lock)
        # names the same directory however it was given (relative, via a symlink).
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())

    @property
    def zone(self) -> ZoneInfo:
        """The ``timezone`` setting as a zone; :class:`ConfigError` for an unknown name."""
        return time_zone(self.timezone)

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL to connect with (drivers filled in for known dialects)."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'dsgw.sqlite3'}"
        if url.startswith("sqlite:///"):
            url = "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        elif url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    @property
    def resolved_session_url(self) -> str:
        """The URL of the leader lock's and the policy listener's own connections."""
        if not self.database_session_url:
            return self.resolved_database_url
        return dataclasses.replace(
            self, database_url=self.database_session_url
        ).resolved_database_url

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def source_host_rules(self) -> tuple[HostRule, ...]:
        return parse_source_hosts(self.source_hosts)

    @property
    def worker_count(self) -> int:
        """Worker processes ``dsgw serve`` runs: ``workers``, or for 0 one per core when
        quotas are shared through Redis and one otherwise."""
        if self.workers > 0:
            return self.workers
        return max(os.cpu_count() or 1, 1) if self.redis_url else 1

    @property
    def hash_algorithm(self) -> Literal["sha256", "sm3"]:
        """The ledger hash algorithm, typed (validated at load)."""
        return "sm3" if self.ledger_hash_algorithm == "sm3" else "sha256"

    @property
    def issuer(self) -> str:
        return f"dsgw:{self.deployment}"

    @property
    def audience(self) -> str:
        """Audience of data-plane tokens; admin tokens use ``audience + '/admin'``."""
        return f"dsgw:{self.deployment}:data"

    @property
    def admin_audience(self) -> str:
        return f"dsgw:{self.deployment}:admin"

    @property
    def delivery_audience(self) -> str:
        """Buyers' tokens for the product deliveries they bought."""
        return f"dsgw:{self.deployment}:delivery"

    @property
    def account_audience(self) -> str:
        """Merchant tokens for its own surface (applications, tasks): no data access."""
        return f"dsgw:{self.deployment}:account"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def token_endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/oauth/token"

    @property
    def keystore_path(self) -> Path:
        return self.data_dir / "keystore.json"

    @property
    def epoch_path(self) -> Path:
        """File whose mtime announces policy changes to running gateway processes."""
        return self.data_dir / "policy.epoch"


@functools.cache
def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a :class:`ConfigError` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"settings: timezone {name!r} is not an IANA time zone name (e.g. Asia/Shanghai)"
        ) from exc


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` as networks; :class:`ConfigError` naming a bad entry."""
    networks: list[Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"settings: trusted_proxies: {part!r} is not an IP address or network"
            ) from None
    return tuple(networks)
