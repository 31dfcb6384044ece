"""source credentials out of the catalog

Before this revision a SQL source's URL could carry its password
(``postgresql://reader:PASSWORD@host/db``), stored in ``datasets.definition`` and shown to
every staff role. Registration now refuses such URLs (a dataset names a secret reference
instead, docs/catalog.md); this revision removes the password from every stored URL (from
its user part and from a ``password`` query parameter) so the catalog holds none.

Such a dataset then reaches its database without a password: the local administrator puts
the password in the keystore (``dsgw secrets set NAME --provider PROVIDER``) and registers
the entry again with ``"credentials": "keystore:NAME"``. The password was also recorded in
the governance log, which cannot be rewritten: change it at the source.

No schema change; the downgrade cannot bring passwords back and leaves the rows as they are.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_datasets = sa.table(
    "datasets",
    sa.column("id", sa.String()),
    sa.column(
        "definition",
        sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
    ),
)


def _without_password(url: str) -> str | None:
    """``url`` without its password, or None when it carries none."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.password is None and "password" not in parsed.query:
        return None
    query = parsed.difference_update_query(["password"])
    cleaned = URL.create(
        query.drivername,
        username=query.username,
        host=query.host,
        port=query.port,
        database=query.database,
        query=query.query,
    )
    return cleaned.render_as_string(hide_password=False)


def upgrade() -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.select(_datasets.c.id, _datasets.c.definition)).all():
        definition: Any = row.definition
        source = definition.get("source") if isinstance(definition, dict) else None
        if not isinstance(source, dict) or not isinstance(source.get("url"), str):
            continue
        cleaned = _without_password(source["url"])
        if cleaned is None:
            continue
        updated = {**definition, "source": {**source, "url": cleaned}}
        bind.execute(
            sa.update(_datasets).where(_datasets.c.id == row.id).values(definition=updated)
        )


def downgrade() -> None:
    pass  # a removed password cannot be restored, nor is it wanted back
