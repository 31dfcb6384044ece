"""Settings in groups: flat and grouped TOML keys and DSGW_* variables, their precedence,
and loud errors naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.settings import Settings, flat_names, load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dsgw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_flat_name_reads_the_grouped_field() -> None:
    settings = Settings()
    for flat, (group, field) in flat_names().items():
        owner = settings if group is None else getattr(settings, group)
        assert hasattr(owner, field), flat
    assert flat_names()["database_pool_size"] == ("database", "pool_size")
    assert flat_names()["chain"] == ("chain", "kind")
    assert flat_names()["host"] == ("server", "host")
    assert flat_names()["log_format"] == ("logging", "format")


def test_flat_and_grouped_toml(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
[dsgw]
database_pool_size = 4
chain = "none"
host = "0.0.0.0"

[dsgw.database]
max_overflow = 2

[dsgw.alert]
refusal_threshold = 7
""",
    )
    settings = load_settings(path, environ={})
    assert settings.database.pool_size == 4
    assert settings.database.max_overflow == 2
    assert settings.chain.kind == "none"
    assert settings.server.host == "0.0.0.0"
    assert settings.alert.refusal_threshold == 7


def test_chain_as_a_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[dsgw.chain]\nkind = "rpc"\nrpc_url = "http://127.0.0.1:8545"\n')
    settings = load_settings(path, environ={})
    assert (settings.chain.kind, settings.chain.rpc_url) == ("rpc", "http://127.0.0.1:8545")


def test_flat_and_grouped_environment() -> None:
    settings = load_settings(
        None,
        environ={
            "DSGW_DATABASE_POOL_SIZE": "4",
            "DSGW_DATABASE__MAX_OVERFLOW": "3",
            "DSGW_MONITOR__ENABLED": "false",
            "DSGW_SOURCE__HOSTS": "db.example:5432, db2.example",
            "DSGW_WORKDAY_CALENDARS": "a.json" + os.pathsep + "b.json",
            "DSGW_CONFIG_UNRELATED": "ignored",
        },
    )
    assert settings.database.pool_size == 4
    assert settings.database.max_overflow == 3
    assert settings.monitor.enabled is False
    assert settings.source.hosts == ("db.example:5432", "db2.example")
    assert settings.workdays.calendars == ("a.json", "b.json")


def test_precedence(tmp_path: Path) -> None:
    """defaults < TOML < environment < overrides; within one source grouped beats flat."""
    path = _toml(tmp_path, "[dsgw]\nport = 1\ntoken_cache_size = 5\n[dsgw.server]\nport = 2\n")
    assert load_settings(path, environ={}).server.port == 2
    assert load_settings(path, environ={"DSGW_PORT": "3"}).server.port == 3
    env = {"DSGW_PORT": "3", "DSGW_SERVER__PORT": "4"}
    assert load_settings(path, environ=env).server.port == 4
    assert load_settings(path, environ=env, port=5).server.port == 5
    assert load_settings(path, environ=env, server={"port": 6}).server.port == 6
    assert load_settings(path, environ=env).token.cache_size == 5
    assert load_settings(None, environ={}).server.port == 8080


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'database_poolsize' in"):
        load_settings(_toml(tmp_path, "[dsgw]\ndatabase_poolsize = 4\n"), environ={})
    with pytest.raises(ConfigError, match=r"unknown key 'database\.poolsize' in"):
        load_settings(_toml(tmp_path, "[dsgw.database]\npoolsize = 4\n"), environ={})
    with pytest.raises(ConfigError, match="unknown key 'nosuchgroup' in"):
        load_settings(_toml(tmp_path, "[dsgw.nosuchgroup]\nx = 4\n"), environ={})
    with pytest.raises(ConfigError, match="DSGW_DATABASE__POOLSIZE"):
        load_settings(None, environ={"DSGW_DATABASE__POOLSIZE": "4"})
    with pytest.raises(ConfigError, match="unknown setting 'database_poolsize'"):
        load_settings(None, environ={}, database_poolsize=4)
    with pytest.raises(ConfigError, match=r"unknown setting 'database\.poolsize'"):
        Settings().replace(database={"poolsize": 4})


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="database_pool_size"):
        load_settings(_toml(tmp_path, "[dsgw.database]\npool_size = 0\n"), environ={})
    with pytest.raises(ConfigError, match=r"database_pool_size \(database\.pool_size\)"):
        load_settings(None, environ={"DSGW_DATABASE__POOL_SIZE": "many"})
    with pytest.raises(ConfigError, match="alert_refusal_threshold"):
        load_settings(None, environ={"DSGW_ALERT__REFUSAL_THRESHOLD": "0"})
    with pytest.raises(ConfigError, match="port must be an int, got True"):
        load_settings(_toml(tmp_path, "[dsgw]\nport = true\n"), environ={})
    with pytest.raises(ConfigError, match="ledger_hash_algorithm"):
        load_settings(None, environ={"DSGW_LEDGER__HASH_ALGORITHM": "md5"})
    with pytest.raises(ConfigError, match="chain"):
        load_settings(None, environ={"DSGW_CHAIN": "besu"})
    with pytest.raises(ConfigError, match="trace_p_guess"):
        load_settings(None, environ={"DSGW_TRACE_P_GUESS": "inf"})
    with pytest.raises(ConfigError, match="workers = 2 needs redis_url"):
        load_settings(None, environ={"DSGW_SERVER__WORKERS": "2"})
    with pytest.raises(ConfigError, match="alert_webhook_secret"):
        load_settings(None, environ={}, alert={"webhook_url": "https://soc.example.gov.cn"})


def test_replace_takes_flat_and_grouped_names_and_checks() -> None:
    settings = load_settings(None, environ={"DSGW_SRC_A": "pw"})
    changed = settings.replace(chain="none", database_pool_size=3, alert={"scraping_pages": 9})
    assert changed.chain.kind == "none"
    assert changed.database.pool_size == 3
    assert changed.alert.scraping_pages == 9
    assert changed.alert.refusal_threshold == settings.alert.refusal_threshold
    assert changed.source_env_secrets == (("DSGW_SRC_A", "pw"),)
    assert settings.chain.kind == "anvil", "the original is unchanged"
    with pytest.raises(ConfigError, match="token_lifetime_seconds"):
        settings.replace(token_lifetime_seconds=5)


def test_settings_are_frozen_and_hide_secrets() -> None:
    settings = load_settings(
        None,
        environ={"DSGW_KEYSTORE_PASSPHRASE": "hunter2", "DSGW_DATABASE__SESSION_URL": "pg://s3"},
    )
    with pytest.raises(pydantic.ValidationError):
        settings.database.pool_size = 3  # type: ignore[misc]
    assert "hunter2" not in repr(settings) and "s3" not in repr(settings)
    assert settings.keystore.passphrase == "hunter2"


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    pool_size=st.integers(min_value=1, max_value=1000),
    threshold=st.integers(min_value=1, max_value=10_000),
    statement_cache=st.booleans(),
)
def test_every_form_loads_the_same(pool_size: int, threshold: int, statement_cache: bool) -> None:
    flat = load_settings(
        None,
        environ={
            "DSGW_DATABASE_POOL_SIZE": str(pool_size),
            "DSGW_ALERT_REFUSAL_THRESHOLD": str(threshold),
            "DSGW_DATABASE_STATEMENT_CACHE": str(statement_cache).lower(),
        },
    )
    nested = load_settings(
        None,
        environ={
            "DSGW_DATABASE__POOL_SIZE": str(pool_size),
            "DSGW_ALERT__REFUSAL_THRESHOLD": str(threshold),
            "DSGW_DATABASE__STATEMENT_CACHE": str(statement_cache).lower(),
        },
    )
    overridden = load_settings(
        None,
        environ={},
        database={"pool_size": pool_size, "statement_cache": statement_cache},
        alert_refusal_threshold=threshold,
    )
    assert flat == nested == overridden
    assert flat.database.pool_size == pool_size
