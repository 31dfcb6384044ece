"""Reading settings: defaults < TOML file < ``DSGW_*`` variables < explicit overrides.

This is the only module that reads the environment. Everything else receives a
:class:`Settings` and never looks at globals, so tests build settings explicitly.

Both sources take the flat names deployments have always written (``[dsgw] pool_size``...
``database_pool_size = 10``, ``DSGW_DATABASE_POOL_SIZE``) and the grouped ones
(``[dsgw.database] pool_size = 10``, ``DSGW_DATABASE__POOL_SIZE``); where one source gives
both for the same knob, the grouped one wins.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from gateway.catalog.secret_names import SOURCE_SECRET_PREFIX
from gateway.errors import ConfigError
from gateway.settings.model import Settings, check_workers, flat_names, grouped, groups, merge_into

__all__ = ["EnvironSource", "TomlSource", "check_workers", "load_settings"]

_ENV_PREFIX = "DSGW_"
_NESTED = "__"


class _Source(PydanticBaseSettingsSource):
    """A source that hands over its whole nested mapping at once."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the mapping itself


class TomlSource(_Source):
    """The ``[dsgw]`` table of a TOML file (or the whole file when it has none)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def __call__(self) -> dict[str, Any]:
        try:
            document = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"settings: config file {self.path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings: {self.path} is not valid TOML: {exc}") from exc
        table = document.get("dsgw", document)
        flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        values = grouped(flat, origin="key", where=f" in {self.path}")
        merge_into(values, grouped(nested, origin="key", where=f" in {self.path}"))
        return values


class EnvironSource(_Source):
    """``DSGW_<FLAT_NAME>`` and ``DSGW_<GROUP>__<FIELD>`` variables; ``DSGW_SRC_*`` as the
    source secrets. Other ``DSGW_*`` names are left alone (``DSGW_CONFIG``...), except a
    ``DSGW_<GROUP>__`` name whose field the group does not have: a typo, refused."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def __call__(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for name in flat_names():
            variable = _ENV_PREFIX + name.upper()
            if variable in self.environ:
                flat[name] = self.environ[variable]
        values = grouped(flat, origin="setting")
        models = groups()
        for variable, raw in self.environ.items():
            group, sep, field = variable.removeprefix(_ENV_PREFIX).lower().partition(_NESTED)
            if not variable.startswith(_ENV_PREFIX) or not sep or group not in models:
                continue
            if field not in models[group].model_fields:
                raise ConfigError(f"settings: unknown setting {variable} (no {group}.{field})")
            values.setdefault(group, {})[field] = raw
        secrets = sorted(
            (k, v) for k, v in self.environ.items() if k.startswith(SOURCE_SECRET_PREFIX)
        )
        values.setdefault("source", {})["env_secrets"] = tuple(secrets)
        return values


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, an optional TOML file, ``DSGW_*`` variables and overrides.

    ``overrides`` take flat names (``database_pool_size=4``) or a group name with a mapping
    (``database={"pool_size": 4}``). Raises :class:`ConfigError` naming the offending key for
    unknown keys or bad values, so a typo in a deployment file is loud instead of silently
    ignored.
    """
    env = os.environ if environ is None else environ
    config_path = path or (Path(env["DSGW_CONFIG"]) if env.get("DSGW_CONFIG") else None)
    sources: list[PydanticBaseSettingsSource] = []
    if config_path is not None:
        sources.append(TomlSource(Settings, config_path))
    sources.append(EnvironSource(Settings, env))
    sources.append(InitSettingsSource(Settings, grouped(overrides, origin="setting")))
    values: dict[str, Any] = {}
    for source in sources:  # lowest precedence first
        merge_into(values, source())
    return Settings(**values)
