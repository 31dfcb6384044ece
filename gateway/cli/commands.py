"""The table of ``dsgw``'s commands: where each is defined and its one line of help.

Adding a command: define it (a ``click.command`` or ``click.group``) in the module of its
domain under :mod:`gateway.cli`, and add a line here. ``dsgw --help`` lists this table
without importing any command module; ``tests/test_cli_layout.py`` checks that each entry
loads and that its help is the first paragraph of the command's docstring.
"""

from __future__ import annotations

from gateway.cli.lazy import Lazy

__all__ = ["COMMANDS"]

COMMANDS: dict[str, Lazy] = {
    "agreement": Lazy(
        "gateway.cli.parties:agreement",
        "Authorization agreements between a merchant and a scenario.",
    ),
    "alerts": Lazy(
        "gateway.cli.alerts:alerts",
        "Misuse alerts raised by the monitor and by `dsgw audit` (docs/alerts.md).",
    ),
    "anchors": Lazy(
        "gateway.cli.logs:anchors",
        "The newest anchors: stream, size, root, block, transaction, confirmations, status.",
    ),
    "application": Lazy(
        "gateway.cli.applications:application",
        "Merchants' applications to use data in a scenario (ZW art. 20-21).",
    ),
    "audit": Lazy(
        "gateway.cli.audit:audit",
        "Recompute every stream from the database; report tampered records by position.",
    ),
    "bundle": Lazy(
        "gateway.cli.evidence:bundle",
        "Write the evidence bundle of record STREAM/SEQ, with its anchor once final on chain.",
    ),
    "calls": Lazy("gateway.cli.logs:calls", "Show the newest log records."),
    "chain": Lazy(
        "gateway.cli.chain:chain",
        "The consortium chain: QBFT genesis, anchoring account, AnchorRegistry owner's "
        "verbs (docs/deployment.md).",
    ),
    "checkpoint": Lazy(
        "gateway.cli.logs:checkpoint",
        "Fold the log into its Merkle trees and sign a checkpoint of every stream that grew.",
    ),
    "client": Lazy("gateway.cli.parties:client", "OAuth client credentials."),
    "dataset": Lazy("gateway.cli.catalog:dataset", "Catalog entries."),
    "demo": Lazy(
        "gateway.cli.deployment:demo",
        "Set up a demo deployment, make allowed and refused calls, then keep serving.",
    ),
    "exchange": Lazy(
        "gateway.cli.products:exchange",
        "The exchange's trades and settlements, as it reports them.",
    ),
    "exclusions": Lazy(
        "gateway.cli.workflows:exclusions", "Entities that may not become merchants (CS23 art. 18)."
    ),
    "init": Lazy(
        "gateway.cli.deployment:init",
        "Create the data directory, encrypted keystore and database schema.",
    ),
    "keys": Lazy("gateway.cli.signing_keys:keys", "Keystore keys."),
    "measure": Lazy(
        "gateway.cli.measures:measure",
        "Supervision measures: suspend a dataset's supply, close a merchant's data channel,"
        " suspend a scenario, delist a product; and lift them.",
    ),
    "merchant": Lazy("gateway.cli.parties:merchant", "Data merchants."),
    "monitor": Lazy(
        "gateway.cli.alerts:monitor",
        "The misuse monitor over the calls stream (`dsgw serve` runs it in the background).",
    ),
    "objection": Lazy(
        "gateway.cli.objections:objection",
        "Data-quality objections (ZW art. 11): filed, routed to the source department, "
        "answered within working days, never deemed answered.",
    ),
    "onboarding": Lazy(
        "gateway.cli.workflows:onboarding",
        "Companies applying to become merchants (answered within 5 working days).",
    ),
    "product": Lazy(
        "gateway.cli.products:product",
        "Data products: registration, export check, filing, listing.",
    ),
    "proof": Lazy("gateway.cli.logs:proof", "RFC 9162 proofs from the stored trees."),
    "rating": Lazy(
        "gateway.cli.objections:rating",
        "The operator's yearly evaluation (ZW art. 33): the bureau's rating forms and the "
        "ratings by source departments, district bureaus and merchants.",
    ),
    "reconcile": Lazy(
        "gateway.cli.products:reconcile_command",
        "Compare the exchange's trade ledger with the products stream and the deliveries.",
    ),
    "report": Lazy(
        "gateway.cli.reports:report",
        "Supervision reports: quarterly security, periodic operations.",
    ),
    "revenue": Lazy(
        "gateway.cli.products:revenue",
        "Revenue statements of a settlement period, per party, exact to the cent.",
    ),
    "scenario": Lazy("gateway.cli.scenarios:scenario", "Authorized scenarios."),
    "secrets": Lazy(
        "gateway.cli.secrets:secrets_group",
        "Named secrets (source passwords) in the encrypted keystore.",
    ),
    "serve": Lazy("gateway.cli.deployment:serve", "Run the gateway until interrupted."),
    "status": Lazy(
        "gateway.cli.logs:status",
        "Log sizes, newest checkpoints and the anchoring backlog, from the database.",
    ),
    "synth": Lazy(
        "gateway.cli.deployment:synth",
        "Generate synthetic source data (SQLite registry + vehicles CSV) for development.",
    ),
    "tasks": Lazy(
        "gateway.cli.workflows:tasks", "Pending tasks and their deadlines, soonest first."
    ),
    "token": Lazy("gateway.cli.parties:token", "Access tokens."),
    "trace": Lazy(
        "gateway.cli.trace:trace_command",
        "Trace a leaked FILE (CSV, XLSX or JSON) to the recipients of its rows.",
    ),
    "verify": Lazy(
        "gateway.cli.evidence:verify",
        "Verify an evidence bundle with no database and no gateway (and the chain, --rpc).",
    ),
    "workdays": Lazy(
        "gateway.cli.workdays:workdays",
        "Working-day calendar: the State Council's holiday schedules (docs/workdays.md).",
    ),
}
