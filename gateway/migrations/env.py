"""Alembic environment: runs on the connection dsgw hands it (see gateway.db.engines.migrate)."""

from __future__ import annotations

from alembic import context

from gateway.db.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("dsgw migrations run through `dsgw init` or gateway.db.engines.migrate")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # Given a connection outside a transaction (PostgreSQL, see gateway.db.engines.migrate), each
    # migration commits on its own, so one may build an index CONCURRENTLY outside any
    # transaction; given one inside a transaction (SQLite), all run in that transaction.
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
