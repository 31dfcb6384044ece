"""Setting a deployment up and running it: ``init``, ``serve``, ``demo``, ``synth``.

``serve`` and ``demo`` import the HTTP server and the chain only when they run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.common import console, run, settings_of, with_changes

__all__ = ["demo", "init", "serve", "synth"]


@click.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the data directory, encrypted keystore and database schema."""
    from gateway.runtime import initialise

    settings = settings_of(ctx)
    report = run(initialise(settings))
    console.print(f"data directory: {report.data_dir}")
    console.print(f"database:       {report.database_url}")
    console.print(
        f"keystore:       {settings.keystore_path}"
        + (" (created)" if report.created_keystore else " (kept)")
    )
    if report.created_passphrase_file:
        console.print(
            f"[yellow]keystore passphrase written to {report.created_passphrase_file} "
            "(mode 0600). In production, supply DSGW_KEYSTORE_PASSPHRASE from your secret "
            "store and delete this file.[/]"
        )


@click.command()
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8080).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes (default: one per core when redis_url is set, else 1).",
)
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway until interrupted."""
    from gateway.cli.server import WorkerPool, serve_forever
    from gateway.runtime import initialise
    from gateway.settings import check_workers

    settings = with_changes(settings_of(ctx), host=host, port=port, workers=workers)
    check_workers(settings)
    pool = WorkerPool(settings, settings.worker_count) if settings.worker_count > 1 else None
    run(initialise(settings))
    if pool is None:
        run(serve_forever(settings))
    else:
        sys.exit(pool.run())


@click.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--rows", type=int, default=2000, show_default=True, help="Synthetic enterprises to generate."
)
@click.option(
    "--serve/--no-serve", default=True, show_default=True, help="Keep serving after the demo calls."
)
@click.pass_context
def demo(ctx: click.Context, port: int, rows: int, serve: bool) -> None:
    """Set up a demo deployment, make allowed and refused calls, then keep serving."""
    from gateway.cli.demo import run_demo

    settings = with_changes(settings_of(ctx), port=port)
    run(run_demo(settings, rows=rows, keep_serving=serve, console=console))


@click.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--rows", type=int, default=10_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out: Path, rows: int, seed: int) -> None:
    """Generate synthetic source data (SQLite registry + vehicles CSV) for development."""
    from connectors import synthetic

    out.mkdir(parents=True, exist_ok=True)
    synthetic.write_sqlite(
        out / "registry.sqlite3", {"enterprises": rows, "social_insurance": rows * 3}, seed=seed
    )
    synthetic.write_csv(out / "vehicles.csv", "vehicles", rows, seed=seed)
    console.print(f"wrote {out / 'registry.sqlite3'} and {out / 'vehicles.csv'}")
