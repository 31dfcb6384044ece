"""``dsgw demo``: a whole authorized-operation setup on synthetic data, exercised end to end.

Everything goes through the same services and HTTP API a deployment uses; the demo only
chooses the data. Running it again reuses the data directory and issues fresh credentials.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors import synthetic
from gateway.authorization.roles import Role
from gateway.chain.verify import verify_anchor
from gateway.cli.demo_data import (
    DEMO_MERCHANT,
    DEMO_PRODUCT,
    DEMO_SCENARIO,
    REGISTRY,
    VEHICLES,
    demo_credit_code,
    demo_datasets,
    demo_product,
    demo_scenario,
    register_demo_world,
)
from gateway.errors import CatalogError, DsgwError
from gateway.governance.actor import LOCAL_ADMIN
from gateway.identifiers import resident_id_check_char
from gateway.ledger.bundles import verify_bundle
from gateway.runtime import Gateway, initialise
from gateway.settings import Settings

# The demo's data is re-exported: the tests build their deployments from it.
__all__ = [
    "DEMO_MERCHANT",
    "DEMO_SCENARIO",
    "REGISTRY",
    "VEHICLES",
    "demo_credit_code",
    "demo_datasets",
    "demo_scenario",
    "run_demo",
]


@dataclass(slots=True)
class DemoCall:
    title: str
    status: int
    record_id: str
    outcome: str


async def _setup(gateway: Gateway, console: Console) -> dict[str, str]:
    world = await register_demo_world(
        gateway, terms={"fees": "按次计费 0.10 元/次", "security": "等保三级"}
    )
    try:
        bad = demo_scenario(gateway.clock.now()) | {"id": "household-check"}
        bad["grants"] = [
            {
                "dataset": "household-registry",
                "modes": ["verify"],
                "verify_fields": ["person_id", "district"],
            }
        ]
        await gateway.governance.scenarios.create_scenario(LOCAL_ADMIN, bad)
    except CatalogError as exc:
        console.print(
            f"[dim]catalog rule:[/] scenario with household-registry refused: {escape(exc.detail)}"
        )
    operator = await gateway.governance.clients.issue_client(LOCAL_ADMIN, role=Role.OPERATOR)
    assert operator.secret
    return {
        "client_id": world.client_id,
        "client_secret": world.client_secret,
        "operator_id": operator.client.client_id,
        "operator_secret": operator.secret,
    }


async def _walk_resident_ids(
    http: aiohttp.ClientSession,
    url: str,
    auth: dict[str, str],
    sample: dict[str, Any],
    calls: list[DemoCall],
) -> None:
    """Issue 17's attack, briefly: guess the legal representative's resident id (region
    and birth date known, sequence numbers walked) until the verification budget refuses."""
    true_id = str(sample["legal_rep_id"])
    negatives, last = 0, None
    for seq in range(12):
        body17 = f"{true_id[:14]}{seq:03d}"
        guess = body17 + resident_id_check_char(body17)
        if guess == true_id:
            continue
        values = {"credit_code": sample["credit_code"], "legal_rep_id": guess}
        async with http.post(url, json={"values": values}, headers=auth) as resp:
            answer = await resp.json(content_type=None)
            last = (resp.status, resp.headers.get("Dsgw-Record-Id", "-"), answer)
        if last[0] != 200:
            break
        negatives += 1
    assert last is not None
    status, record_id, answer = last
    outcome = (
        f"{negatives} negative answers, then: {answer.get('detail', '')}"
        if status != 200
        else f"{negatives} negative answers, none refused"
    )
    calls.append(
        DemoCall("refused: walking the legal representative's id", status, record_id, outcome)
    )


async def _calls(base: str, creds: dict[str, str], sample: dict[str, Any]) -> list[DemoCall]:
    calls: list[DemoCall] = []
    data_url = f"{base}/v1/scenarios/{DEMO_SCENARIO}/datasets"

    async with aiohttp.ClientSession() as http:

        async def call(title: str, method: str, url: str, summarize: Any, **kw: Any) -> Any:
            async with http.request(method, url, **kw) as resp:
                body = await resp.json(content_type=None)
                calls.append(
                    DemoCall(
                        title,
                        resp.status,
                        resp.headers.get("Dsgw-Record-Id", "-"),
                        summarize(resp.status, body),
                    )
                )
                return body

        def problem(status: int, body: Any) -> str:
            return body.get("detail", "") if status >= 400 else "unexpected success"

        token_body = await call(
            "token (client credentials, scenario:enterprise-credit)",
            "POST",
            f"{base}/oauth/token",
            lambda s, b: f"expires in {b.get('expires_in')} s" if s == 200 else problem(s, b),
            data={"grant_type": "client_credentials", "scope": f"scenario:{DEMO_SCENARIO}"},
            headers={
                "Authorization": aiohttp.encode_basic_auth(
                    creds["client_id"], creds["client_secret"]
                )
            },
        )
        token = token_body["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        await call(
            "verify: credit code + legal representative (true claim)",
            "POST",
            f"{data_url}/enterprises/verify",
            lambda s, b: json.dumps(b, ensure_ascii=False) if s == 200 else problem(s, b),
            headers=auth,
            json={
                "values": {
                    "credit_code": sample["credit_code"],
                    "legal_rep_name": sample["legal_rep_name"],
                }
            },
        )
        await call(
            "verify: same company, wrong legal representative",
            "POST",
            f"{data_url}/enterprises/verify",
            lambda s, b: json.dumps(b, ensure_ascii=False) if s == 200 else problem(s, b),
            headers=auth,
            json={"values": {"credit_code": sample["credit_code"], "legal_rep_name": "王小明"}},
        )
        await call(
            "query: one company, sensitive fields masked",
            "POST",
            f"{data_url}/enterprises/query",
            lambda s, b: (
                (json.dumps(b["rows"][0], ensure_ascii=False) if b.get("rows") else str(b))
                if s == 200
                else problem(s, b)
            ),
            headers=auth,
            json={"filters": {"credit_code": sample["credit_code"]}},
        )
        await call(
            "aggregate: companies and capital by district x industry (k=10)",
            "POST",
            f"{data_url}/enterprises/aggregate",
            lambda s, b: (
                (
                    f"{len(b['groups'])} groups, {b['suppressed_groups']} suppressed as too small"
                    + (
                        f", {b['withheld_groups']} withheld by the overlap audit"
                        if b.get("withheld_groups")
                        else ""
                    )
                )
                if s == 200
                else problem(s, b)
            ),
            headers=auth,
            json={
                "group_by": ["district", "industry"],
                "measures": [{"fn": "count"}, {"fn": "sum", "field": "registered_capital"}],
            },
        )
        await call(
            "refused: vehicles are outside the scenario",
            "POST",
            f"{data_url}/vehicles/query",
            problem,
            headers=auth,
            json={"filters": {"district": "芙蓉区"}},
        )
        await call(
            "refused: legal_rep_id is not a returnable field",
            "POST",
            f"{data_url}/enterprises/query",
            problem,
            headers=auth,
            json={
                "filters": {"credit_code": sample["credit_code"]},
                "fields": ["name", "legal_rep_id"],
            },
        )
        await call(
            "refused: query without a required filter (no bulk export)",
            "POST",
            f"{data_url}/enterprises/query",
            problem,
            headers=auth,
            json={"filters": {"status": "存续"}},
        )
        forged = (
            token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(bytes(64)).decode().rstrip("=")
        )
        await call(
            "refused: token with a forged signature",
            "POST",
            f"{data_url}/enterprises/verify",
            problem,
            headers={"Authorization": f"Bearer {forged}"},
            json={"values": {"credit_code": sample["credit_code"], "name": "x"}},
        )
        await call(
            "refused: token for a scenario never authorized",
            "POST",
            f"{base}/oauth/token",
            problem,
            data={"grant_type": "client_credentials", "scope": "scenario:household-check"},
            headers={
                "Authorization": aiohttp.encode_basic_auth(
                    creds["client_id"], creds["client_secret"]
                )
            },
        )
        # Last, so the demo's earlier records keep their positions in the log.
        await _walk_resident_ids(http, f"{data_url}/enterprises/verify", auth, sample, calls)
    return calls


async def run_demo(
    settings: Settings, *, rows: int, keep_serving: bool, console: Console
) -> list[DemoCall]:
    from gateway.cli.server import running_gateway, wait_for_signal

    console.rule("[bold]dsgw demo")
    report = await initialise(settings)
    registry = settings.data_dir / REGISTRY
    if not registry.exists():
        console.print(f"generating synthetic source data ({rows} enterprises) ...")
        registry.parent.mkdir(parents=True, exist_ok=True)
        synthetic.write_sqlite(
            registry, {"enterprises": rows, "social_insurance": rows * 3}, seed=7
        )
        synthetic.write_csv(settings.data_dir / VEHICLES, "vehicles", rows, seed=7)
    gateway = await Gateway.open(settings)
    try:
        creds = await _setup(gateway, console)
    except DsgwError:
        await gateway.close()
        raise
    sample = next(synthetic.generate("enterprises", 1, seed=7))
    async with running_gateway(settings, gateway) as (_gw, port):
        base = f"http://{settings.server.host}:{port}"
        console.print(f"gateway listening on [bold]{base}[/]")
        calls = await _calls(base, creds, sample)
        table = Table(
            "call", "status", "log record", "outcome", title="merchant calls", show_lines=False
        )
        for c in calls:
            colour = "green" if c.status < 400 else "red"
            table.add_row(c.title, f"[{colour}]{c.status}[/]", c.record_id, c.outcome[:90])
        console.print(table)
        console.print(
            f"call log: {report.database_url.split('///')[-1]} (stream 'calls'); "
            f"see it with: dsgw --data-dir {settings.data_dir} calls"
        )
        await _show_evidence(gateway, calls, console)
        await _trade_a_product(gateway, console)
        if not keep_serving:
            return calls
        _print_next_steps(console, base, creds, sample)
        await wait_for_signal()
        console.print("stopping; queued log records are committed before exit")
    return calls


async def _trade_a_product(gateway: Gateway, console: Console) -> None:
    """The product path: registered by the merchant, checked by the operator, filed by the
    authority, listed and traded on the exchange, settled, and split into revenue."""
    products = gateway.products
    now = gateway.clock.now()
    existing = {p.id: p for p in await products.find(LOCAL_ADMIN)}
    if DEMO_PRODUCT not in existing:
        await products.register(LOCAL_ADMIN, DEMO_MERCHANT, demo_product())
        await products.check_export(LOCAL_ADMIN, DEMO_PRODUCT, approve=True)
        await products.file(LOCAL_ADMIN, DEMO_PRODUCT, "湘数产备-2026-0001")
        await products.list_on_exchange(LOCAL_ADMIN, DEMO_PRODUCT, "HNDE-2026-0001")
    trade_id = f"HNDE-T-{now:%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
    trade = await products.record_trade(
        LOCAL_ADMIN,
        {
            "exchange_trade_id": trade_id,
            "product": DEMO_PRODUCT,
            "buyer_code": demo_credit_code("BK"),
            "buyer_name": "湘江银行股份有限公司",
            "quantity": 3,
            "unit_price": "800.00",
            "traded_at": now.isoformat(),
        },
    )
    period = f"{now:%Y-%m}"
    await products.record_settlement(
        LOCAL_ADMIN,
        {
            "settlement_id": f"SET-{trade_id}",
            "period": period,
            "trades": [trade_id],
            "settled_at": now.isoformat(),
            "amount": str(trade.amount),
        },
    )
    console.print(
        f"product [bold]{DEMO_PRODUCT}[/] checked, filed, listed as HNDE-2026-0001; trade "
        f"{trade_id}: {trade.quantity} reports for {trade.amount} yuan, settled"
    )
    table = Table("role", "party", "trades", "total (yuan)", title=f"revenue {period}")
    for statement in await products.revenue(LOCAL_ADMIN, period):
        table.add_row(
            statement.role, statement.party, str(len(statement.lines)), str(statement.total)
        )
    console.print(table)


async def _show_evidence(gateway: Gateway, calls: list[DemoCall], console: Console) -> None:
    """Sign a checkpoint and verify one call's evidence bundle, as a third party would."""
    head = await gateway.checkpointer.checkpoint("calls")
    if head is not None:
        console.print(
            f"checkpoint signed: {head.origin} size {head.size} root {head.root.hex()[:16]}..."
        )
    record_id = next(c.record_id for c in calls if c.title.startswith("verify"))
    seq = int(record_id.split("/")[1])
    document = await gateway.evidence.bundle("calls", seq)
    anchoring = gateway.anchoring
    if anchoring is not None:
        console.print(f"anchoring on {anchoring.backend.node} ...")
        try:
            await asyncio.wait_for(anchoring.ready.wait(), 60)
            for _ in range(120):
                document = await gateway.evidence.bundle("calls", seq)
                if document["anchor"] is not None:
                    break
                await asyncio.sleep(0.25)
        except TimeoutError:
            pass
        anchor = document["anchor"]
        if anchor is None:
            console.print(
                "[yellow]the chain did not anchor the checkpoint in time; the "
                "gateway keeps retrying in the background[/]"
            )
        else:
            console.print(
                f"checkpoint anchored: {anchor['stream_id'][:12]}... size {anchor['size']} "
                f"in block {anchor['block_number']}, transaction {anchor['tx_hash'][:18]}... "
                f"on registry {anchor['contract']}"
            )
    check = verify_bundle(document, trusted_key=document["checkpoint"]["verifier_key"])
    url = getattr(anchoring.backend, "url", None) if anchoring is not None else None
    if document["anchor"] is not None and check.checkpoint is not None and url:
        check.steps += await verify_anchor(document["anchor"], check.checkpoint, url)
    console.print(f"evidence bundle of {record_id} verified: " + "; ".join(check.steps))
    console.print(
        f"[dim]write it with: dsgw --data-dir {gateway.settings.data_dir} bundle calls {seq} "
        "--out bundle.json, then: dsgw verify bundle.json --key <verifier key> "
        f"{'--rpc ' + url if url else ''}[/]"
    )


def _print_next_steps(
    console: Console, base: str, creds: dict[str, str], sample: dict[str, Any]
) -> None:
    console.rule("try it yourself")
    console.print(
        "[bold]1. get a token as the merchant[/]\n"
        f"TOKEN=$(curl -s -u '{creds['client_id']}:{creds['client_secret']}' "
        f"-d grant_type=client_credentials -d scope=scenario:{DEMO_SCENARIO} "
        f"{base}/oauth/token | python3 -c 'import json,sys; print(json.load(sys.stdin)"
        '["access_token"])\')\n'
        "[bold]2. verify a company[/]\n"
        f"curl -si -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f'-d \'{{"values": {{"credit_code": "{sample["credit_code"]}", '
        f'"legal_rep_name": "{sample["legal_rep_name"]}"}}}}\' '
        f"{base}/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/verify\n"
        "[bold]3. aggregate by industry[/]\n"
        f"curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f'-d \'{{"group_by": ["industry"], "measures": [{{"fn": "count"}}]}}\' '
        f"{base}/v1/scenarios/{DEMO_SCENARIO}/datasets/enterprises/aggregate\n"
        "[bold]4. as the operator: list the newest calls[/]\n"
        f"OPS=$(curl -s -u '{creds['operator_id']}:{creds['operator_secret']}' "
        f"-d grant_type=client_credentials -d scope=admin {base}/oauth/token | python3 -c "
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f"curl -s -H \"Authorization: Bearer $OPS\" '{base}/admin/calls?limit=5'\n"
        f"[bold]API description:[/] {base}/openapi.json\n"
        "Ctrl-C stops the gateway.",
        soft_wrap=True,  # long commands must stay copyable
    )
