"""Logs and metrics for a gateway of several worker processes: JSON and text log lines,
redaction of secrets and personal data, the access log, and counters summed over real
worker processes through prometheus_client's multiprocess mode."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from connectors import synthetic
from gateway.api.app import create_app
from gateway.api.telemetry import (
    MULTIPROC_ENV,
    multiprocess_exposition,
    prepare_multiprocess_dir,
    worker_exited,
)
from gateway.authorization.roles import Role
from gateway.cli.demo import DEMO_MERCHANT, DEMO_SCENARIO, demo_credit_code
from gateway.cli.main import cli
from gateway.clock import FixedClock
from gateway.errors import ConfigError
from gateway.identifiers import (
    is_valid_resident_id,
    is_valid_uscc,
    resident_id_check_char,
    uscc_check_char,
)
from gateway.logs import QUIET_LOGGERS, WORKER_ENV, configure_logging, redact
from gateway.runtime import Gateway
from gateway.settings import Settings, load_settings
from tests.support.world import build_world

REPO = Path(__file__).resolve().parent.parent
VERIFY = {
    "values": {
        "credit_code": next(synthetic.generate("enterprises", 1, seed=7))["credit_code"],
        "name": "x",
    }
}


# -- logging fixtures -----------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger; put it back as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    access = logging.getLogger("dsgw.access").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    logging.getLogger("dsgw.access").setLevel(access)


def _settings(**overrides: Any) -> Settings:
    return load_settings(None, environ={}, **overrides)


def _capture(log_format: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(_settings(log_format=log_format), stream=stream)
    return stream


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class Unserializable:
    def __str__(self) -> str:
        return "unserializable-object"


# -- JSON and text formats ------------------------------------------------------------------


def test_json_lines_parse_and_carry_the_fields(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = _capture("json")
    log = logging.getLogger("gateway.test.json")
    monkeypatch.delenv(WORKER_ENV, raising=False)
    log.info(
        "anchored %s@%d",
        "calls",
        42,
        extra={"stream": "calls", "sizes": [1, 2], "obj": Unserializable(), "time": "x"},
    )
    monkeypatch.setenv(WORKER_ENV, "3")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("it failed\non two lines")
    lines = _json_lines(stream)  # one object per line, even for a multi-line message
    assert len(lines) == 2
    first, second = lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "INFO" and first["logger"] == "gateway.test.json"
    assert first["message"] == "anchored calls@42"
    assert first["pid"] == os.getpid() and "worker" not in first and "exc" not in first
    assert first["stream"] == "calls" and first["sizes"] == [1, 2]
    assert first["obj"] == "unserializable-object"  # not JSON: its str()
    assert first["extra_time"] == "x" and first["time"] != "x"  # core fields win
    assert second["level"] == "ERROR" and second["worker"] == "3"
    assert second["message"] == "it failed\non two lines"
    assert "Traceback" in second["exc"] and "ZeroDivisionError" in second["exc"]


def test_text_lines_and_levels(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    stream = io.StringIO()
    configure_logging(_settings(log_level="warning"), stream=stream)
    log = logging.getLogger("gateway.test.text")
    log.info("not shown at WARNING")
    log.warning("checkpoint of %s failed", "calls")
    monkeypatch.setenv(WORKER_ENV, "1")
    log.error("again")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING gateway\.test\.text: "
        r"checkpoint of calls failed",
        lines[0],
    )
    assert lines[1].endswith(" ERROR [worker 1] gateway.test.text: again")
    # Third-party loggers stay quiet at INFO; a second call replaces the first handler.
    configure_logging(_settings(log_level="DEBUG"), stream=stream)
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    assert logging.getLogger("sqlalchemy").level == logging.WARNING
    ours = [h for h in logging.getLogger().handlers if h.__class__.__name__ == "_StderrHandler"]
    assert len(ours) == 1


def test_log_format_and_level_are_checked() -> None:
    with pytest.raises(ConfigError, match="log_format"):
        load_settings(None, environ={"DSGW_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(None, environ={"DSGW_LOG_LEVEL": "LOUD"})
    assert load_settings(None, environ={"DSGW_LOG_FORMAT": "json"}).logging.format == "json"
    result = CliRunner().invoke(cli, ["status"], env={"DSGW_LOG_FORMAT": "xml"})
    assert result.exit_code == 1 and "log_format" in result.output


# -- redaction ------------------------------------------------------------------------------


def _resident_id() -> str:
    body = "43010219900101123"
    return body + resident_id_check_char(body)


def _all_digit_credit_code() -> str:
    """A credit code of digits only, which has the shape of an identity number."""
    for n in range(10_000):
        body = f"{91430100000000000 + n:017d}"
        code = body + uscc_check_char(body)
        if code.isdigit() and not is_valid_resident_id(code):
            return code
    raise AssertionError("no all-digit credit code found")


HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
JWT = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJjbGllbnQtMSJ9.c2lnbmF0dXJlLWJ5dGVz"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIN8E5x+secretkeybytes\n"
    "-----END PRIVATE KEY-----"
)


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    secret: str  # must not appear
    shown: str  # must appear: the masked form, or what is kept


CASES = [
    Case("bearer", "Bearer s3cr3t-opaque-token_value", "s3cr3t-opaque", "Bearer ***"),
    Case("jwt", f"token {JWT} refused", "eyJzdWIi", "token *** refused"),
    Case("authorization", "Authorization: Basic Y2xpZW50OnNlY3JldA==", "Y2xpZW50", "***"),
    Case(
        "postgres-password",
        "postgresql://dsgw:hunter2@db.internal:5432/dsgw",
        "hunter2",
        "postgresql://dsgw:***@db.internal:5432/dsgw",
    ),
    Case("redis-password", "redis://:r3dis-pw@cache:6379/0", "r3dis-pw", "redis://:***@cache"),
    Case("hex-key-0x", f"key 0x{HEX}", HEX, "key 0x***"),
    Case("hex-key-bare", f"key {HEX}.", HEX, "key ***."),
    Case("hex-key-after-a-hash-word", f"key {HEX} hash", HEX, "key *** hash"),
    Case("pem", f"loaded {PEM} ok", "secretkeybytes", "-----BEGIN PRIVATE KEY-----***"),
    Case("password-pair", "password=hunter2&user=x", "hunter2", "password=***"),
    Case("resident-id", f"身份证号{_resident_id()}，", _resident_id(), "430**************"),
    Case("mobile", "call 13812345678 now", "13812345678", "138****5678"),
    Case("mobile-prefixed", "tel +86 13912345678", "13912345678", "+86 139****5678"),
    Case("email", "from zhang.san@example.com", "zhang.san", "z***@example.com"),
]


def _emit(how: str, text: str) -> None:
    log = logging.getLogger("gateway.test.redact")
    if how == "message":
        log.warning("seen: " + text.replace("%", "%%"))
    elif how == "args":
        log.warning("seen: %s", text)
    else:
        log.warning("seen", extra={"detail": text, "nested": {"items": [text]}})


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("how", ["message", "args", "extra"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_secrets_and_personal_data_are_masked(
    restore_logging: None, case: Case, how: str, log_format: str
) -> None:
    stream = _capture(log_format)
    _emit(how, case.text)
    out = stream.getvalue()
    assert case.secret not in out, out
    if log_format == "json":
        (line,) = _json_lines(stream)
        shown = line["detail"] if how == "extra" else line["message"]
        assert case.shown in shown, shown
        if how == "extra":
            assert case.shown in line["nested"]["items"][0]
    elif how != "extra":  # the text format writes the message only
        assert case.shown in out, out


def test_credit_codes_and_secret_named_extras(restore_logging: None) -> None:
    stream = _capture("json")
    letters = demo_credit_code("XC")
    digits = _all_digit_credit_code()
    assert is_valid_uscc(letters) and is_valid_uscc(digits)
    log = logging.getLogger("gateway.test.redact")
    log.warning(
        "merchant %s and %s",
        letters,
        digits,
        extra={"credit_code": digits, "client_secret": "plain", "phone": 13812345678},
    )
    (line,) = _json_lines(stream)
    assert line["message"] == f"merchant {letters} and {digits}"  # companies, left alone
    assert line["credit_code"] == digits
    assert line["client_secret"] == "***"  # named a secret: replaced whatever it looks like
    assert line["phone"] == "138****5678"  # a number that is a mobile number
    # Masking is idempotent, so a record redacted twice reads the same.
    masked = redact(f"a {_resident_id()} b 13812345678 zhang@example.com {JWT}")
    assert redact(masked) == masked


# -- access log -----------------------------------------------------------------------------


@dataclass
class Served:
    gateway: Gateway
    client: TestClient  # type: ignore[type-arg]
    merchant: tuple[str, str]
    staff: dict[Role, tuple[str, str]]

    async def token(self, scope: str, creds: tuple[str, str]) -> str:
        from aiohttp import encode_basic_auth

        resp = await self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            headers={"Authorization": encode_basic_auth(*creds)},
        )
        assert resp.status == 200
        return str((await resp.json())["access_token"])


@pytest.fixture
async def serve_sqlite(tmp_path: Path, source_dir: Path, clock: FixedClock) -> AsyncIterator[Any]:
    """Start a gateway on SQLite with the given settings; closes them all afterwards."""
    opened: list[Served] = []

    async def start(**overrides: Any) -> Served:
        data_dir = tmp_path / f"data{len(opened)}"
        data_dir.mkdir()
        (data_dir / "sources").symlink_to(source_dir / "sources")
        settings = load_settings(
            None,
            environ={},
            data_dir=data_dir,
            keystore_passphrase="test passphrase",
            secret_hash_time_cost=1,
            secret_hash_memory_kib=8192,
            port=0,
            chain="none",
            **overrides,
        )
        gateway, creds = await build_world(settings, clock)
        client = TestClient(TestServer(create_app(gateway), host="127.0.0.1"))
        await client.start_server()
        served = Served(gateway, client, creds["merchant"], creds["staff"])
        opened.append(served)
        return served

    yield start
    for served in opened:
        await served.client.close()
        await served.gateway.close()


async def test_access_log_names_the_path_never_the_query(
    restore_logging: None, serve_sqlite: Any
) -> None:
    stream = _capture("json")
    served = await serve_sqlite(access_log=True)
    resp = await served.client.get("/healthz?email=zhang@example.com&phone=13812345678")
    assert resp.status == 200
    token = await served.token(f"scenario:{DEMO_SCENARIO}", served.merchant)
    resp = await served.client.post(
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify?who=13812345678",
        json=VERIFY,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    assert (await served.client.get("/no/such/route?q=1")).status == 404
    out = stream.getvalue()
    assert "?" not in out and "example.com" not in out and "13812345678" not in out
    assert token not in out
    access = [line for line in _json_lines(stream) if line["logger"] == "dsgw.access"]
    by_route = {line["route"]: line for line in access}
    health = by_route["/healthz"]
    assert health["method"] == "GET" and health["status"] == 200
    assert isinstance(health["duration_ms"], float) and "merchant" not in health
    assert health["message"].startswith("GET /healthz 200 ")
    data = by_route[f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify"]
    assert data["status"] == 200 and data["method"] == "POST"
    assert data["merchant"] == DEMO_MERCHANT and data["scenario"] == DEMO_SCENARIO
    assert by_route["/oauth/token"]["status"] == 200
    assert by_route["/no/such/route"]["status"] == 404


async def test_access_log_is_off_by_default(restore_logging: None, serve_sqlite: Any) -> None:
    stream = _capture("json")
    served = await serve_sqlite()
    assert (await served.client.get("/healthz")).status == 200
    assert not [line for line in _json_lines(stream) if line["logger"] == "dsgw.access"]


# -- metrics across worker processes --------------------------------------------------------

# A worker: records calls in the shared directory, as a gateway worker process does.
WORKER = textwrap.dedent(
    """
    import os, sys
    from gateway.api.telemetry import Telemetry

    allowed = int(sys.argv[1])
    telemetry = Telemetry(known_scenario={"enterprise-credit"}.__contains__)
    assert telemetry.multiprocess_dir is not None
    for _ in range(allowed):
        telemetry.observe_call("data", "enterprise-credit", "allow", 200, 0.003)
    telemetry.observe_call("data", "enterprise-credit", "deny", 403, 0.2)
    telemetry.observe_batch(allowed + 1)
    print(os.getpid())
    """
)


def _run_workers(directory: Path, *allowed: int) -> list[int]:
    """Start one worker process per count, all at once, and wait for them; their pids."""
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in allowed
    ]
    pids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        pids.append(int(out.strip()))
    return pids


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _allowed(samples: dict[Any, float]) -> float:
    return _value(
        samples,
        "dsgw_requests_total",
        kind="data",
        scenario="enterprise-credit",
        decision="allow",
        status="2xx",
    )


def test_counters_are_summed_over_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    prepare_multiprocess_dir(directory)
    first, second = _run_workers(directory, 5, 7)
    assert first != second
    samples = _samples(multiprocess_exposition(directory).decode())
    assert _allowed(samples) == 12
    assert _value(samples, "dsgw_request_duration_seconds_count", kind="data") == 14
    assert _value(samples, "dsgw_request_duration_seconds_bucket", kind="data", le="0.005") == 12
    assert _value(samples, "dsgw_log_commit_batch_records_count") == 2
    assert _value(samples, "dsgw_log_commit_batch_records_sum") == 14
    assert _value(samples, "dsgw_worker_processes") == 2  # livesum: no pid label

    # The master reaps the first worker: its counts stay, its share of the live gauge goes.
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    worker_exited(first)
    samples = _samples(multiprocess_exposition(directory).decode())
    assert _allowed(samples) == 12
    assert _value(samples, "dsgw_request_duration_seconds_count", kind="data") == 14
    assert _value(samples, "dsgw_worker_processes") == 1
    # A worker started in its place adds to the totals.
    _run_workers(directory, 3)
    assert _allowed(_samples(multiprocess_exposition(directory).decode())) == 15


async def test_metrics_endpoint_reports_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_sqlite: Any
) -> None:
    directory = tmp_path / "metrics"
    prepare_multiprocess_dir(directory)
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    served = await serve_sqlite()  # this process is one worker...
    (other,) = _run_workers(directory, 4)  # ...and another worker has served four calls
    token = await served.token(f"scenario:{DEMO_SCENARIO}", served.merchant)
    resp = await served.client.post(
        f"/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify",
        json=VERIFY,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200
    staff = await served.token("admin", served.staff[Role.OPERATOR])
    resp = await served.client.get("/metrics", headers={"Authorization": f"Bearer {staff}"})
    assert resp.status == 200
    text = await resp.text()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # the figures read at scrape time appear once
    samples = _samples(text)
    assert _allowed(samples) == 5
    assert _value(samples, "dsgw_log_records", stream="calls") >= 3
    assert _value(samples, "dsgw_worker_processes") == 2
    assert not any(label == "pid" for _, labels in samples for label, _ in labels)
    worker_exited(other)
    resp = await served.client.get("/metrics", headers={"Authorization": f"Bearer {staff}"})
    samples = _samples(await resp.text())
    assert _allowed(samples) == 5 and _value(samples, "dsgw_worker_processes") == 1


def test_worker_exited_is_a_no_op_with_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    worker_exited(os.getpid())  # nothing to do, nothing raised


def test_prepare_multiprocess_dir_is_careful(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "metrics"
    prepare_multiprocess_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    # A previous run's files are removed, and the mode is tightened.
    (fresh / "counter_123.db").write_bytes(b"x")
    (fresh / "gauge_livesum_123.db").write_bytes(b"x")
    fresh.chmod(0o755)
    prepare_multiprocess_dir(fresh)
    assert list(fresh.iterdir()) == [] and stat.S_IMODE(fresh.stat().st_mode) == 0o700
    # A directory holding anything else is refused and left as it was.
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    (home / "counter_1.db").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"notes\.txt"):
        prepare_multiprocess_dir(home)
    assert (home / "notes.txt").exists() and (home / "counter_1.db").exists()
    link = tmp_path / "link"
    link.symlink_to(fresh)
    with pytest.raises(ConfigError, match="symbolic link"):
        prepare_multiprocess_dir(link)
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ConfigError):
        prepare_multiprocess_dir(afile)


def test_transaction_hashes_and_roots_stay_readable() -> None:
    """Anchors are looked up by their transaction hash: the log names them, so they are
    not taken for private keys."""
    for text in (f"anchoring calls@21 in tx 0x{HEX}, nonce 3", f"root={HEX}", f"tx_hash: {HEX}"):
        assert redact(text) == text
