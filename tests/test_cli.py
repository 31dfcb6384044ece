"""The command line, run as a user runs it: separate processes on a real data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DSGW = [sys.executable, "-m", "gateway.cli"]


def dsgw(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSGW_")}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [*DSGW, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dsgw {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    result = dsgw(data_dir, "demo", "--no-serve", "--port", "0", "--rows", "300")
    return data_dir, result.stdout


def test_demo_shows_allowed_and_refused_calls(demo_dir: tuple[Path, str]) -> None:
    data_dir, out = demo_dir
    assert "200" in out and "403" in out and "401" in out
    assert "household-registry" in out  # the not-open dataset refused at grant time
    assert (data_dir / "keystore.json").exists()
    assert (data_dir / "keystore.pass").stat().st_mode & 0o077 == 0
    assert b"BEGIN" not in (data_dir / "keystore.json").read_bytes()


def test_demo_runs_again_on_the_same_directory(demo_dir: tuple[Path, str]) -> None:
    data_dir, _ = demo_dir
    again = dsgw(data_dir, "demo", "--no-serve", "--port", "0")
    assert "200" in again.stdout


def test_admin_verbs_and_calls_listing(demo_dir: tuple[Path, str]) -> None:
    data_dir, _ = demo_dir
    listed = json.loads(dsgw(data_dir, "calls", "--json", "--limit", "50").stdout)
    decisions = {e["record"]["decision"] for e in listed}
    assert decisions == {"allow", "deny"}
    scenarios = json.loads(dsgw(data_dir, "scenario", "list", "--json").stdout)
    assert [s["status"] for s in scenarios if s["id"] == "enterprise-credit"] == ["published"]
    dsgw(data_dir, "merchant", "suspend", "xingchen-credit", "--reason", "test")
    merchants = json.loads(dsgw(data_dir, "merchant", "list", "--json").stdout)
    assert merchants[0]["status"] == "suspended"
    dsgw(data_dir, "merchant", "reinstate", "xingchen-credit")
    governance = json.loads(dsgw(data_dir, "calls", "--stream", "governance", "--json").stdout)
    assert governance[0]["record"]["kind"] == "merchant.active"
    issued = json.loads(
        dsgw(data_dir, "client", "issue", "--merchant", "xingchen-credit", "--json").stdout
    )
    assert issued["client_secret"].startswith("dsgw_cs_")
    keys = json.loads(dsgw(data_dir, "keys", "list", "--json").stdout)
    assert {k["purpose"] for k in keys} >= {"token-signing", "checkpoint", "mark"}


def test_checkpoint_and_proofs(demo_dir: tuple[Path, str]) -> None:
    from gateway.ledger.merkle import InclusionProof, verify_inclusion

    data_dir, _ = demo_dir
    heads = {h["stream"]: h for h in json.loads(dsgw(data_dir, "checkpoint", "--json").stdout)}
    assert {"calls", "governance"} <= set(heads)
    calls = json.loads(dsgw(data_dir, "calls", "--json", "--limit", "1").stdout)[0]
    index = int(calls["record_id"].split("/")[1])
    proof = json.loads(dsgw(data_dir, "proof", "inclusion", "calls", str(index)).stdout)
    assert verify_inclusion(
        "sha256",
        bytes.fromhex(calls["leaf_hash"]),
        InclusionProof.from_dict(proof),
        bytes.fromhex(heads["calls"]["root"]),
    )
    consistency = dsgw(data_dir, "proof", "consistency", "calls", "1", str(heads["calls"]["size"]))
    assert json.loads(consistency.stdout)["second"] == heads["calls"]["size"]
    bad = dsgw(data_dir, "proof", "inclusion", "calls", "999999", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_audit_clean_then_tampered(tmp_path: Path) -> None:
    import sqlite3

    data_dir = tmp_path / "data"
    dsgw(data_dir, "demo", "--no-serve", "--port", "0", "--rows", "200")
    dsgw(data_dir, "checkpoint")
    clean = dsgw(data_dir, "audit", "--json")
    assert json.loads(clean.stdout)["findings"] == []
    with sqlite3.connect(data_dir / "dsgw.sqlite3") as db:
        db.execute(
            "UPDATE log_entries SET payload = replace(payload, 'deny', 'allow') "
            "WHERE stream = 'calls' AND seq = 6"
        )
    tampered = dsgw(data_dir, "audit", check=False)
    assert tampered.returncode == 5
    assert "calls/6" in tampered.stdout and "edited" in tampered.stdout


def test_bundle_and_offline_verify(demo_dir: tuple[Path, str], tmp_path: Path) -> None:
    data_dir, _ = demo_dir
    out = tmp_path / "bundle.json"
    dsgw(data_dir, "bundle", "calls", "1", "--out", str(out))
    key = json.loads(out.read_text())["checkpoint"]["verifier_key"]
    ok = subprocess.run(
        [*DSGW, "verify", str(out), "--key", key], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0 and "verified" in ok.stdout
    document = json.loads(out.read_text())
    document["record"] = document["record"].replace("verify", "query", 1)
    out.write_text(json.dumps(document))
    bad = subprocess.run(
        [*DSGW, "verify", str(out), "--key", key], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 6 and "NOT VERIFIED" in bad.stderr


def test_errors_have_exit_codes_and_messages(demo_dir: tuple[Path, str]) -> None:
    data_dir, _ = demo_dir
    too_long = dsgw(
        data_dir,
        "agreement",
        "grant",
        "--merchant",
        "xingchen-credit",
        "--scenario",
        "enterprise-credit",
        "--start",
        "2026-01-01",
        "--end",
        "2029-06-01",
        "--shares",
        "40,30,30",
        check=False,
    )
    assert too_long.returncode == 2 and "at most 3 years" in too_long.stderr
    missing = dsgw(data_dir, "merchant", "suspend", "nobody", check=False)
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    assert "Traceback" not in too_long.stderr + missing.stderr


def test_serve_refuses_without_keystore_passphrase(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dsgw(data_dir, "init")
    (data_dir / "keystore.pass").write_text("wrong")
    result = dsgw(data_dir, "dataset", "list", check=False)
    assert result.returncode != 0 and "passphrase" in result.stderr
    assert "Traceback" not in result.stderr
