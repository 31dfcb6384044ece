"""The command line, run as a user runs it: separate processes on a real data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
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
    # The product path: listed, traded, settled and split into revenue.
    assert "enterprise-vitality" in out and "revenue" in out and "city budget" in out
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


def test_authorization_workflow_from_the_command_line(
    demo_dir: tuple[Path, str], tmp_path: Path
) -> None:
    from gateway.cli.demo import demo_credit_code

    data_dir, _ = demo_dir
    code = demo_credit_code("CL")
    excluded = demo_credit_code("BX")
    onboarding = {
        "merchant_id": "cli-merchant",
        "name": "命令行数据有限公司",
        "credit_code": code,
        "licence": {
            "legal_representative": "赵",
            "registered_address": "长沙",
            "business_scope": "数据服务",
        },
        "contacts": [{"name": "钱", "phone": "13800138000"}],
    }
    (tmp_path / "onb.json").write_text(json.dumps(onboarding, ensure_ascii=False))
    (tmp_path / "exclusions.csv").write_text(
        "credit_code,name,category,source,listed_on\n"
        f"{excluded},失信公司,dishonest-debtor,失信被执行人名单,2026-01-01\n"
    )
    dsgw(data_dir, "exclusions", "import", str(tmp_path / "exclusions.csv"))
    hits = json.loads(dsgw(data_dir, "exclusions", "check", excluded, "--json").stdout)
    assert [h["category"] for h in hits] == ["dishonest-debtor"]

    dsgw(data_dir, "onboarding", "submit", str(tmp_path / "onb.json"))
    listed = json.loads(dsgw(data_dir, "onboarding", "list", "--json").stdout)
    (pending,) = [a for a in listed if a["merchant_id"] == "cli-merchant"]
    no_reason = dsgw(data_dir, "onboarding", "reject", pending["id"], check=False)
    assert no_reason.returncode == 2 and "reasons" in no_reason.stderr
    assert "Traceback" not in no_reason.stderr
    approved = dsgw(data_dir, "onboarding", "approve", pending["id"])
    assert "merchant cli-merchant registered" in approved.stdout

    application = {
        "scenario": "enterprise-credit",
        "requirements": [
            {"dataset": "enterprises", "modes": ["verify"], "fields": ["credit_code", "name"]}
        ],
        "purpose": "贷前核验",
        "period_start": "2026-12-01",
        "period_end": "2027-11-30",
        "safeguards": "专线接入",
    }
    (tmp_path / "app.json").write_text(json.dumps(application, ensure_ascii=False))
    for _ in range(2):
        dsgw(
            data_dir,
            "application",
            "submit",
            str(tmp_path / "app.json"),
            "--merchant",
            "cli-merchant",
        )
    first, second = [
        a["id"]
        for a in json.loads(dsgw(data_dir, "application", "list", "--json").stdout)
        if a["merchant_id"] == "cli-merchant"
    ]
    both = dsgw(data_dir, "application", "check", first, "--approve", "--reject", check=False)
    assert both.returncode == 2
    for app_id in (first, second):
        dsgw(data_dir, "application", "check", app_id, "--approve")
    tasks = json.loads(
        dsgw(
            data_dir, "tasks", "--role", "source", "--department", "市场监督管理局", "--json"
        ).stdout
    )
    assert {t["subject"] for t in tasks} >= {first, second}
    dsgw(
        data_dir,
        "application",
        "review",
        first,
        "--department",
        "市场监督管理局",
        "--reject",
        "--reason",
        "用途与场景不符",
    )
    shown = json.loads(dsgw(data_dir, "application", "show", first).stdout)
    assert shown["status"] == "rejected"
    assert shown["reasons"] == ["市场监督管理局: 用途与场景不符"]
    dsgw(data_dir, "application", "review", second, "--department", "市场监督管理局", "--approve")
    agreed = dsgw(
        data_dir,
        "application",
        "agree",
        second,
        "--shares",
        "40,35,25",
        "--fees",
        "每千次 20 元",
        "--termination",
        "违规即终止",
    )
    assert "agreement" in agreed.stdout and "2027-11-30" in agreed.stdout
    authority = json.loads(dsgw(data_dir, "tasks", "--role", "authority", "--json").stdout)
    assert second not in {t["subject"] for t in authority}


def test_products_trades_revenue_and_reconcile_from_the_command_line(
    demo_dir: tuple[Path, str], tmp_path: Path
) -> None:
    from gateway.cli.demo import demo_credit_code

    data_dir, _ = demo_dir
    buyer = demo_credit_code("BY")
    product = {
        "id": "cli-score",
        "name": "命令行评分",
        "scenario": "enterprise-credit",
        "delivery": "report",
        "inputs": [{"dataset": "enterprises", "fields": ["credit_code", "status"]}],
        "outputs": [{"name": "n", "derivation": "count", "from": ["enterprises.status"]}],
        "unit_price": "12.34",
        "unit": "report",
    }
    (tmp_path / "product.json").write_text(json.dumps(product, ensure_ascii=False))
    dsgw(
        data_dir,
        "product",
        "register",
        str(tmp_path / "product.json"),
        "--merchant",
        "xingchen-credit",
    )
    early = dsgw(
        data_dir, "product", "list-on-exchange", "cli-score", "--listing", "L-9", check=False
    )
    assert early.returncode == 4 and "must be filed" in early.stderr
    dsgw(data_dir, "product", "check", "cli-score", "--approve")
    dsgw(data_dir, "product", "file", "cli-score", "--number", "备-9")
    dsgw(data_dir, "product", "list-on-exchange", "cli-score", "--listing", "L-9")
    trades = [
        {
            "exchange_trade_id": f"X-{i}",
            "product": "cli-score",
            "buyer_code": buyer,
            "buyer_name": "买方",
            "quantity": 3,
            "unit_price": "12.34",
            "traded_at": "2026-11-02T09:00:00+08:00",
        }
        for i in range(2)
    ]
    (tmp_path / "trades.json").write_text(json.dumps(trades, ensure_ascii=False))
    dsgw(data_dir, "exchange", "trade", str(tmp_path / "trades.json"))
    settlement = {
        "settlement_id": "SET-1",
        "period": "2026-09",  # the demo settles its own trades in the current month
        "trades": ["X-0", "X-1"],
        "settled_at": "2026-11-30T18:00:00+08:00",
        "amount": "74.04",
    }
    (tmp_path / "settle.json").write_text(json.dumps(settlement))
    dsgw(data_dir, "exchange", "settle", str(tmp_path / "settle.json"))
    revenue = json.loads(dsgw(data_dir, "revenue", "--period", "2026-09", "--json").stdout)
    totals = [Decimal(s["total"]) for s in revenue["statements"]]
    assert sum(totals) == Decimal("74.04") and len(totals) == 3

    ledger = tmp_path / "exchange.csv"
    ledger.write_text(
        "exchange_trade_id,product,buyer_code,quantity,unit_price,amount,traded_at\n"
        f"X-0,L-9,{buyer},3,12.34,37.02,2026-11-02T09:00:00+08:00\n"
        f"X-1,L-9,{buyer},3,12.34,37.00,2026-11-02T09:00:00+08:00\n"
    )
    result = dsgw(
        data_dir,
        "reconcile",
        str(ledger),
        "--json",
        "--bundles",
        str(tmp_path / "bundles"),
        check=False,
    )
    assert result.returncode == 7, result.stderr
    report = json.loads(result.stdout)
    kinds = {
        (d["kind"], d["trade_id"])
        for d in report["discrepancies"]
        if d["trade_id"].startswith("X-")  # the demo's own trades are not in this ledger
    }
    # Nothing anchors while no gateway runs, so the records are reported unanchored too.
    assert ("terms-differ", "X-1") in kinds
    assert {k for k, _ in kinds} == {"terms-differ", "amount-arithmetic", "unanchored"}
    assert {d["kind"] for d in report["discrepancies"] if d["trade_id"].startswith("HNDE-")} <= {
        "missing-at-exchange",
        "unanchored",
    }
    # A finding about the exchange's own row (its arithmetic) has no gateway record.
    bundle_files = {d["bundle"] for d in report["discrepancies"] if d["record_id"]}
    assert all(Path(b).exists() for b in bundle_files)


def test_serve_refuses_worker_counts_that_would_break_limits(tmp_path: Path) -> None:
    """Several workers without Redis would each grant the whole quota; port 0 would give
    each worker its own port. Both are refused before anything starts."""
    data_dir = tmp_path / "data"
    no_redis = dsgw(data_dir, "serve", "--port", "18080", "--workers", "2", check=False)
    assert no_redis.returncode == 1 and "needs redis_url" in no_redis.stderr
    assert not (data_dir / "keystore.json").exists()  # refused before init
    env_redis = dict(os.environ, DSGW_REDIS_URL="redis://127.0.0.1:6379/15")
    result = subprocess.run(
        [*DSGW, "--data-dir", str(data_dir), "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env_redis,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "fixed port" in result.stderr
    assert "Traceback" not in no_redis.stderr + result.stderr
