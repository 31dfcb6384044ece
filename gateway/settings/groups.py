"""The groups of the gateway's own machinery: store, server, cluster, keys, sources, chain.

Each field keeps the default and the meaning it had as a flat setting; its flat name (what
``[dsgw]`` and ``DSGW_*`` use) is ``flat_prefix`` + field unless ``flat_names`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gateway.catalog.allowlist import parse_source_hosts
from gateway.errors import ConfigError
from gateway.settings.group import Group, above_zero, at_least
from gateway.settings.networks import parse_networks

__all__ = [
    "ChainSettings",
    "ClusterSettings",
    "DatabaseSettings",
    "HealthSettings",
    "KeystoreSettings",
    "LedgerSettings",
    "LoggingSettings",
    "SecretHashSettings",
    "ServerSettings",
    "SourceSettings",
    "TokenSettings",
    "WorkdaysSettings",
]


def _split(value: Any, separator: str) -> Any:
    """One string holding a list: split on ``separator``; "a, b": spaces around commas are
    layout, whereas path lists keep theirs."""
    if not isinstance(value, str):
        return value
    parts = value.split(separator)
    if separator != os.pathsep:
        parts = [part.strip() for part in parts]
    return tuple(part for part in parts if part)


class DatabaseSettings(Group):
    """The gateway's own store."""

    flat_prefix: ClassVar[str] = "database_"

    # SQLAlchemy URL of the gateway's own store; empty means SQLite in the data directory.
    url: str = ""
    # PostgreSQL connections per process: pool_size kept open, max_overflow more under load,
    # and how long a caller waits for one before the call is refused with 503.
    # statement_cache = false behind a transaction-mode pooler (PgBouncer): docs/postgresql.md.
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_seconds: float = 5.0
    statement_cache: bool = True
    # PostgreSQL reached directly (not through a transaction-mode pooler) for what needs a
    # session of its own: the leader lock and the policy listener of `dsgw serve`. Empty:
    # database_url, which then must not be such a pooler (docs/postgresql.md).
    session_url: str = Field(default="", repr=False)

    @model_validator(mode="after")
    def _check(self) -> DatabaseSettings:
        if self.pool_size < 1 or self.max_overflow < 0:
            raise ConfigError(
                "settings: database_pool_size must be at least 1 and database_max_overflow "
                "0 or more"
            )
        above_zero(self, "pool_timeout_seconds")
        return self


class ServerSettings(Group):
    """The HTTP server of ``dsgw serve`` and its processes."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Public base URL of this gateway; token `aud` for client assertions is derived from it.
    public_url: str = ""
    max_body_bytes: int = 64 * 1024
    # Load balancers whose X-Forwarded-For is believed (comma-separated addresses or CIDR
    # networks); empty: the connection's peer is the client.
    trusted_proxies: str = ""
    # Worker processes of `dsgw serve` on this machine; 0: one per core when redis_url is
    # set (quotas must be shared to be right), else one.
    workers: int = 0
    # On SIGTERM: how long in-flight calls may take to finish before the server closes
    # what they use (store, Redis, call-log writer). `dsgw serve --workers` kills a worker
    # that has not stopped 10 s after this.
    shutdown_drain_seconds: float = 20.0
    # Unauthenticated onboarding applications accepted per client address and hour.
    onboarding_per_hour: int = 10

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.workers < 0:
            raise ConfigError("settings: workers must be 0 (one per core) or more")
        if self.shutdown_drain_seconds < 0:
            raise ConfigError("settings: shutdown_drain_seconds must be 0 or more")
        parse_networks(self.trusted_proxies)  # refuses a bad entry now, naming it
        return self


class ClusterSettings(Group):
    """What several gateway processes share and how they keep in step."""

    # Redis shared by every gateway process for quotas and rate limits (redis://host:6379/0);
    # empty: each process keeps its own, which is exact only for a single process.
    redis_url: str = ""
    # Every process re-checks policy this often even when no change was pushed to it: the
    # bound on how long a revocation made on another machine can go unseen.
    policy_poll_seconds: float = 2.0
    # How often processes campaign for leadership and the leader checks it still leads.
    leader_check_seconds: float = 1.0
    # While the store does not answer, how long a process keeps deciding calls on its last
    # policy snapshot after it stopped being sure the snapshot is current (its policy
    # listener was lost); past it, calls are refused with 503 (docs/security.md).
    policy_max_staleness_seconds: float = 30.0

    @model_validator(mode="after")
    def _check(self) -> ClusterSettings:
        if self.policy_poll_seconds <= 0 or self.leader_check_seconds <= 0:
            raise ConfigError(
                "settings: policy_poll_seconds and leader_check_seconds must be above 0"
            )
        above_zero(self, "policy_max_staleness_seconds")
        return self


class HealthSettings(Group):
    """Readiness and the dependency checks behind it."""

    # Readiness fails, and dsgw_dependency_up{dependency="disk"} is 0, when the file
    # system of the data directory or of a SQLite store has less free space than this.
    disk_min_free_mb: int = 100
    # How often a server checks its dependencies (store, Redis, disk, keystore) even when
    # no call or probe does, so their outages are logged and shown in metrics.
    dependency_check_seconds: float = 5.0

    @model_validator(mode="after")
    def _check(self) -> HealthSettings:
        if self.disk_min_free_mb < 0:
            raise ConfigError("settings: disk_min_free_mb must be 0 or more")
        above_zero(self, "dependency_check_seconds")
        return self


class KeystoreSettings(Group):
    """How the keystore in the data directory is unlocked."""

    flat_prefix: ClassVar[str] = "keystore_"

    passphrase: str = Field(default="", repr=False)
    passphrase_file: str = ""


class TokenSettings(Group):
    """Access tokens the gateway issues and checks."""

    flat_prefix: ClassVar[str] = "token_"

    lifetime_seconds: int = 900
    # Clock skew tolerated on exp/nbf/iat. Small: tokens are short-lived.
    leeway_seconds: int = 30
    cache_size: int = 100_000

    @model_validator(mode="after")
    def _check(self) -> TokenSettings:
        if not 30 <= self.lifetime_seconds <= 3600:
            raise ConfigError("settings: token_lifetime_seconds must be between 30 and 3600")
        return self


class SecretHashSettings(Group):
    """argon2id cost for client secrets (RFC 9106 second recommended option by default)."""

    flat_prefix: ClassVar[str] = "secret_hash_"

    time_cost: int = 3
    memory_kib: int = 65_536


class LedgerSettings(Group):
    """The tamper-evident call log: its hash, its writer's batches and its checkpoints."""

    flat_prefix: ClassVar[str] = "ledger_"
    flat_names: ClassVar[Mapping[str, str]] = {
        "log_batch_max": "log_batch_max",
        "checkpoint_every_records": "checkpoint_every_records",
        "checkpoint_every_seconds": "checkpoint_every_seconds",
    }

    hash_algorithm: Literal["sha256", "sm3"] = "sha256"
    # Group commit: how many call records one transaction may carry at most.
    log_batch_max: int = 512
    # Sign a checkpoint every N records or T seconds, whichever comes first.
    checkpoint_every_records: int = 10_000
    checkpoint_every_seconds: int = 5


class SourceSettings(Group):
    """Where source rows may live and the credentials datasets may name."""

    flat_prefix: ClassVar[str] = "source_"
    # Host lists split on commas: their entries hold colons (host:port).
    list_separators: ClassVar[Mapping[str, str]] = {
        "directories": os.pathsep,
        "hosts": ",",
    }

    pool_size: int = 4
    # Where source rows may live (docs/security.md, "Where source data and its credentials
    # live"): directories for file sources (CSV, SQLite; relative ones are inside data_dir)
    # and hosts, host:port or URL prefixes (postgresql://host:port/db) for database sources.
    # Whatever else a dataset names is refused, the gateway's own store and the data
    # directory outside its sources/ folder whatever these say.
    directories: tuple[str, ...] = ("sources",)
    hosts: tuple[str, ...] = ()
    # Source passwords a dataset may name as ``env:DSGW_SRC_...``: every DSGW_SRC_*
    # variable, taken from the environment here and nowhere else (never from a file).
    env_secrets: tuple[tuple[str, str], ...] = Field(default=(), repr=False)

    @field_validator("directories", "hosts", mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: Any) -> Any:
        return _split(value, cls.list_separators[info.field_name])

    @field_validator("env_secrets", mode="before")
    @classmethod
    def _sorted_secrets(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return tuple(sorted((str(k), str(v)) for k, v in value.items()))
        return value

    @model_validator(mode="after")
    def _check(self) -> SourceSettings:
        parse_source_hosts(self.hosts)  # refuses a bad entry now, naming it
        return self


class ChainSettings(Group):
    """Anchoring of checkpoints on a chain."""

    flat_prefix: ClassVar[str] = "chain_"
    flat_names: ClassVar[Mapping[str, str]] = {"kind": "chain"}

    # Anchoring: "none", "embedded" (in-process py-evm, ephemeral), "anvil" (a local node
    # started with persistent state in the data directory) or "rpc" (chain_rpc_url).
    kind: Literal["none", "embedded", "anvil", "rpc"] = "anvil"
    rpc_url: str = ""
    # Registry address on an rpc chain; dev chains deploy one on first use.
    contract: str = ""
    confirmations: int = 1

    @model_validator(mode="after")
    def _check(self) -> ChainSettings:
        at_least(self, 1, "confirmations")
        return self


class WorkdaysSettings(Group):
    """Working-day schedules and the deadlines counted in working days."""

    flat_names: ClassVar[Mapping[str, str]] = {"calendars": "workday_calendars"}
    list_separators: ClassVar[Mapping[str, str]] = {"calendars": os.pathsep}

    # Working-day schedules (JSON, docs/workdays.md) for years or regions beyond the shipped
    # State Council schedules; in DSGW_WORKDAY_CALENDARS separated by the path separator.
    calendars: tuple[str, ...] = ()
    # A source department answers a data-quality objection within this many working days
    # (ZW art. 11 asks for prompt handling; docs/workflows.md). Never deemed answered.
    objection_working_days: int = 10

    @field_validator("calendars", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        return _split(value, os.pathsep)

    @model_validator(mode="after")
    def _check(self) -> WorkdaysSettings:
        if not 1 <= self.objection_working_days <= 60:
            raise ConfigError("settings: objection_working_days must be between 1 and 60")
        return self


class LoggingSettings(Group):
    """Log output on stderr (docs/observability.md)."""

    flat_names: ClassVar[Mapping[str, str]] = {"format": "log_format", "level": "log_level"}

    # "text" lines or "json" objects, at this level; secrets and personal data are masked
    # in both. access_log adds one "dsgw.access" record per HTTP request (method, path
    # without query, status, duration).
    format: Literal["text", "json"] = "text"
    level: str = "INFO"
    access_log: bool = False

    @model_validator(mode="after")
    def _check(self) -> LoggingSettings:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                "settings: log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                f"got {self.level!r}"
            )
        return self
