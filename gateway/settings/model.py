"""The settings object: every setting of a deployment in groups of related knobs.

Built by :func:`gateway.settings.loading.load_settings`; a :class:`Settings` that exists
has passed its checks (each group checks its own knobs, :class:`Settings` what spans
groups). Each knob is read as ``settings.<group>.<field>`` (``settings.database.pool_size``);
its flat name (``database_pool_size``) is what TOML ``[dsgw]`` keys, ``DSGW_*`` variables,
``load_settings(**overrides)`` and :meth:`Settings.replace` accept as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pydantic
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.catalog.allowlist import HostRule, parse_source_hosts
from gateway.errors import ConfigError
from gateway.settings.group import Group
from gateway.settings.groups import (
    ChainSettings,
    ClusterSettings,
    DatabaseSettings,
    HealthSettings,
    KeystoreSettings,
    LedgerSettings,
    LoggingSettings,
    SecretHashSettings,
    ServerSettings,
    SourceSettings,
    TokenSettings,
    WorkdaysSettings,
)
from gateway.settings.networks import Network, parse_networks, time_zone
from gateway.settings.oversight_groups import (
    AggregateSettings,
    AlertSettings,
    MonitorSettings,
    TraceSettings,
    VerifySettings,
)

__all__ = ["Settings", "check_workers", "config_error", "flat_names"]


def check_workers(settings: Settings) -> None:
    """Refuse worker counts that would make limits wrong (also for ``serve --workers``)."""
    workers = settings.server.workers
    if workers < 0:
        raise ConfigError("settings: workers must be 0 (one per core) or more")
    if workers > 1 and not settings.cluster.redis_url:
        raise ConfigError(
            f"settings: workers = {workers} needs redis_url: without it each worker "
            "would keep its own quotas and rate limits, granting each merchant N times its "
            "allowance"
        )


def _async_url(url: str, data_dir: Path) -> str:
    """The async SQLAlchemy URL for ``url`` (drivers filled in for known dialects)."""
    url = url or f"sqlite+aiosqlite:///{data_dir / 'dsgw.sqlite3'}"
    if url.startswith("sqlite:///"):
        url = "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    elif url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    """Every knob of a deployment, with safe defaults for the embedded single-node shape.

    ``Settings(...)`` takes only what it is given (grouped: ``database={"pool_size": 4}``);
    the TOML file and the environment are read by :func:`load_settings` alone.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="DSGW_",
        env_nested_delimiter="__",
        coerce_numbers_to_str=True,
        allow_inf_nan=False,
    )

    # Resolved once: an absolute path with symlinks resolved, so every process and every
    # use (the SQLite URL, the keystore, the chain directory and its lock) names the same
    # directory however it was given (relative, via a symlink).
    data_dir: Path = Path("dsgw-data")
    # The deployment's name: token issuer/audience and the ledger's checkpoint origin use it.
    deployment: str = "dsgw.local"
    # The deployment's time zone (IANA name): date-only periods are whole days in it, and
    # deadlines, daily quotas, reports and monitoring hours count its days (docs/workdays.md).
    timezone: str = "Asia/Shanghai"
    # The groups; built when a Settings is (the verify group's check imports the store).
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    keystore: KeystoreSettings = Field(default_factory=KeystoreSettings)
    token: TokenSettings = Field(default_factory=TokenSettings)
    secret_hash: SecretHashSettings = Field(default_factory=SecretHashSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    workdays: WorkdaysSettings = Field(default_factory=WorkdaysSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    aggregate: AggregateSettings = Field(default_factory=AggregateSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alert: AlertSettings = Field(default_factory=AlertSettings)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise config_error(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what the caller passes: files and ``DSGW_*`` are :func:`load_settings`'s."""
        return (init_settings,)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _resolve_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        check_workers(self)
        time_zone(self.timezone)  # refuses an unknown time zone now, naming it
        return self

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (flat names, or a group name with a mapping or a group),
        checked like a loaded one; :class:`ConfigError` for an unknown name or bad value."""
        values = self.model_dump(round_trip=True)
        merge_into(values, grouped(changes, origin="setting"))
        return Settings(**values)

    @property
    def zone(self) -> ZoneInfo:
        """The ``timezone`` setting as a zone; :class:`ConfigError` for an unknown name."""
        return time_zone(self.timezone)

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL to connect with (drivers filled in for known dialects)."""
        return _async_url(self.database.url, self.data_dir)

    @property
    def resolved_session_url(self) -> str:
        """The URL of the leader lock's and the policy listener's own connections."""
        return _async_url(self.database.session_url or self.database.url, self.data_dir)

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.server.trusted_proxies)

    @property
    def source_host_rules(self) -> tuple[HostRule, ...]:
        return parse_source_hosts(self.source.hosts)

    @property
    def source_env_secrets(self) -> tuple[tuple[str, str], ...]:
        """Every ``DSGW_SRC_*`` variable, for datasets naming ``env:DSGW_SRC_...``."""
        return self.source.env_secrets

    @property
    def worker_count(self) -> int:
        """Worker processes ``dsgw serve`` runs: ``workers``, or for 0 one per core when
        quotas are shared through Redis and one otherwise."""
        if self.server.workers > 0:
            return self.server.workers
        return max(os.cpu_count() or 1, 1) if self.cluster.redis_url else 1

    @property
    def hash_algorithm(self) -> Literal["sha256", "sm3"]:
        """The ledger hash algorithm, typed (validated at load)."""
        return self.ledger.hash_algorithm

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
        return self.server.public_url or f"http://{self.server.host}:{self.server.port}"

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


# -- flat names ---------------------------------------------------------------------------

_TOP_LEVEL = ("data_dir", "deployment", "timezone")


def groups() -> dict[str, type[Group]]:
    """Group name → its model, in the order of :class:`Settings`."""
    found: dict[str, type[Group]] = {}
    for name, info in Settings.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Group):
            found[name] = info.annotation
    return found


def flat_names() -> dict[str, tuple[str | None, str]]:
    """Every flat name → (group, field); ``None`` for the top-level knobs."""
    table: dict[str, tuple[str | None, str]] = {name: (None, name) for name in _TOP_LEVEL}
    for group, model in groups().items():
        for flat, field in model.flat_fields().items():
            table[flat] = (group, field)
    return table


def grouped(values: Mapping[str, Any], *, origin: str, where: str = "") -> dict[str, Any]:
    """Flat or grouped ``values`` as the nested mapping :class:`Settings` takes.

    A group name with a mapping or a group model is the grouped form; any other name must be
    a flat name. ``None`` values are left out (the setting keeps what it had). ``origin``
    ("key", "setting") and ``where`` (" in FILE") word the error for an unknown name.
    """
    table = flat_names()
    models = groups()
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in models and isinstance(value, Mapping | BaseModel):
            items = value.model_dump() if isinstance(value, BaseModel) else value
            for field, item in items.items():
                if field not in models[key].model_fields:
                    raise ConfigError(f"settings: unknown {origin} '{key}.{field}'{where}")
                if item is not None:
                    nested.setdefault(key, {})[field] = item
            continue
        if key not in table:
            raise ConfigError(f"settings: unknown {origin} {key!r}{where}")
        group, field = table[key]
        if group is None:
            nested[field] = value
        else:
            nested.setdefault(group, {})[field] = value
    return nested


def merge_into(base: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Lay ``changes`` (nested as :func:`grouped` makes them) over ``base`` in place."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key].update(value)
        else:
            base[key] = value


def config_error(exc: pydantic.ValidationError) -> ConfigError:
    """The first problem of ``exc`` as a :class:`ConfigError` naming the flat setting."""
    by_place = {(g, f): flat for flat, (g, f) in flat_names().items()}
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    if len(loc) >= 2 and (loc[0], loc[1]) in by_place:
        name = f"{by_place[(loc[0], loc[1])]} ({loc[0]}.{loc[1]})"
    elif loc and (None, loc[0]) in by_place:
        name = loc[0]
    else:
        name = ".".join(loc) or "settings"
    return ConfigError(f"settings: {name}: {error['msg']}, got {error.get('input')!r}")
