"""Reading settings: defaults < TOML file < ``DSGW_*`` variables < explicit overrides.

This is the only module that reads the environment. Everything else receives a
:class:`Settings` and never looks at globals, so tests build settings explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from gateway.catalog.allowlist import parse_source_hosts
from gateway.catalog.secret_names import SOURCE_SECRET_PREFIX
from gateway.errors import ConfigError
from gateway.settings.model import Settings, parse_networks, time_zone

__all__ = ["check_workers", "load_settings"]

# Settings that no TOML key or DSGW_<NAME> variable sets directly.
_DERIVED = frozenset({"source_env_secrets"})
# Lists in one environment variable are split on the path separator, except host lists,
# whose entries hold colons (host:port).
_LIST_SEPARATORS: dict[str, str] = {"source_hosts": ","}


def _coerce(name: str, type_: Any, raw: object, *, separator: str = os.pathsep) -> object:
    try:
        if type_ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_ is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(str(raw).strip())
        if type_ is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            number = float(str(raw).strip())
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
        if type_ is Path:
            return Path(str(raw)).expanduser()
        if type_ is str:
            if not isinstance(raw, str | int):
                raise ValueError(raw)
            return str(raw)
        if type_ == tuple[str, ...]:
            if isinstance(raw, str):
                parts = raw.split(separator)
                if separator != os.pathsep:  # "a, b": spaces around commas are layout
                    parts = [part.strip() for part in parts]
                return tuple(part for part in parts if part)
            if isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
                return tuple(raw)
            raise ValueError(raw)
    except ValueError as exc:
        kind = getattr(type_, "__name__", "list of strings")
        raise ConfigError(f"settings: {name} must be a {kind}, got {raw!r}") from exc
    raise ConfigError(f"settings: unsupported type for {name}")


def check_workers(settings: Settings) -> None:
    """Refuse worker counts that would make limits wrong (also for ``serve --workers``)."""
    if settings.workers < 0:
        raise ConfigError("settings: workers must be 0 (one per core) or more")
    if settings.workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"settings: workers = {settings.workers} needs redis_url: without it each worker "
            "would keep its own quotas and rate limits, granting each merchant N times its "
            "allowance"
        )


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, an optional TOML file, ``DSGW_*`` variables and overrides.

    Raises :class:`ConfigError` naming the offending key for unknown keys or bad values, so
    a typo in a deployment file is loud instead of silently ignored.
    """
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)} - _DERIVED
    values: dict[str, object] = {}

    config_path = path or (Path(env["DSGW_CONFIG"]) if env.get("DSGW_CONFIG") else None)
    if config_path is not None:
        try:
            document = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"settings: config file {config_path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings: {config_path} is not valid TOML: {exc}") from exc
        table = document.get("dsgw", document)
        for key, raw in table.items():
            if key not in names:
                raise ConfigError(f"settings: unknown key {key!r} in {config_path}")
            values[key] = _coerce(key, hints[key], raw)

    for key in names:
        env_name = "DSGW_" + key.upper()
        if env_name in env:
            values[key] = _coerce(
                env_name,
                hints[key],
                env[env_name],
                separator=_LIST_SEPARATORS.get(key, os.pathsep),
            )
    values["source_env_secrets"] = tuple(
        sorted((k, v) for k, v in env.items() if k.startswith(SOURCE_SECRET_PREFIX))
    )

    for key, raw in overrides.items():
        if key == "source_env_secrets" and isinstance(raw, Mapping):
            values[key] = tuple(sorted((str(k), str(v)) for k, v in raw.items()))
            continue
        if key not in names:
            raise ConfigError(f"settings: unknown setting {key!r}")
        if raw is not None:
            values[key] = _coerce(key, hints[key], raw)

    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.token_lifetime_seconds < 30 or settings.token_lifetime_seconds > 3600:
        raise ConfigError("settings: token_lifetime_seconds must be between 30 and 3600")
    if settings.ledger_hash_algorithm not in ("sha256", "sm3"):
        raise ConfigError("settings: ledger_hash_algorithm must be 'sha256' or 'sm3'")
    if settings.chain not in ("none", "embedded", "anvil", "rpc"):
        raise ConfigError("settings: chain must be none, embedded, anvil or rpc")
    if settings.chain_confirmations < 1:
        raise ConfigError("settings: chain_confirmations must be at least 1")
    if settings.trace_upload_max_bytes < 1024 or settings.trace_max_rows < 1:
        raise ConfigError(
            "settings: trace_upload_max_bytes must be at least 1024 and trace_max_rows at least 1"
        )
    if settings.trace_canary_rate < 0:
        raise ConfigError("settings: trace_canary_rate must be 0 (no canaries) or more")
    if not 0.0 <= settings.trace_p_guess < 1.0:
        raise ConfigError("settings: trace_p_guess must be at least 0 and below 1")
    if not 0.0 < settings.trace_named_threshold < 0.01:
        raise ConfigError("settings: trace_named_threshold must be above 0 and below 0.01")
    if settings.database_pool_size < 1 or settings.database_max_overflow < 0:
        raise ConfigError(
            "settings: database_pool_size must be at least 1 and database_max_overflow 0 or more"
        )
    if settings.database_pool_timeout_seconds <= 0:
        raise ConfigError("settings: database_pool_timeout_seconds must be above 0")
    check_workers(settings)
    time_zone(settings.timezone)  # refuses an unknown time zone now, naming it
    parse_source_hosts(settings.source_hosts)  # refuses a bad entry now, naming it
    parse_networks(settings.trusted_proxies)  # refuses a bad entry now, naming it
    if settings.policy_poll_seconds <= 0 or settings.leader_check_seconds <= 0:
        raise ConfigError("settings: policy_poll_seconds and leader_check_seconds must be above 0")
    for name in ("policy_max_staleness_seconds", "dependency_check_seconds"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"settings: {name} must be above 0")
    if settings.shutdown_drain_seconds < 0 or settings.disk_min_free_mb < 0:
        raise ConfigError("settings: shutdown_drain_seconds and disk_min_free_mb must be 0 or more")
    if settings.aggregate_min_subjects < 2:
        raise ConfigError("settings: aggregate_min_subjects must be at least 2")
    if settings.aggregate_overlap_min != 0 and not 2 <= settings.aggregate_overlap_min <= 30:
        raise ConfigError("settings: aggregate_overlap_min must be 0 (audit off) or from 2 to 30")
    if settings.aggregate_audit_max_rows < 1:
        raise ConfigError("settings: aggregate_audit_max_rows must be at least 1")
    from gateway.errors import ValidationError
    from gateway.privacy.verify_budget import VerifyBudget  # here: it imports the store schema

    try:
        VerifyBudget(settings.verify_negatives_per_subject, settings.verify_window_hours)
    except ValidationError as exc:
        raise ConfigError(
            f"settings: verify_negatives_per_subject / verify_window_hours: {exc.detail}"
        ) from None
    if not 1 <= settings.objection_working_days <= 60:
        raise ConfigError("settings: objection_working_days must be between 1 and 60")
    for name in names:
        if name.startswith(("monitor_", "alert_")) and name != "monitor_enabled":
            value = getattr(settings, name)
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"settings: {name} must be at least 1")
    if settings.log_format not in ("text", "json"):
        raise ConfigError(
            f"settings: log_format must be 'text' or 'json', got {settings.log_format!r}"
        )
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            "settings: log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
            f"got {settings.log_level!r}"
        )
    if settings.alert_webhook_url and not settings.alert_webhook_secret:
        raise ConfigError(
            "settings: alert_webhook_url needs alert_webhook_secret (DSGW_ALERT_WEBHOOK_SECRET) "
            "so the receiver can check each alert's signature"
        )
    return settings
