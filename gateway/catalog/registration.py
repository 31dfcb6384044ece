"""Registering datasets in the catalog: who may register under which provider, where a
source may lie, and the record each registration leaves.

The catalog's models are :mod:`gateway.catalog.models`; the rules on where sources may lie
are :mod:`gateway.catalog.sources`. This is the one place a catalog entry is written.

What the catalog requires of a SQL source (docs/catalog.md, "What a source must index"): the
table exists and an index leads with one of the dataset's key fields, because every
verification looks one row up by the key and must not scan the table to find it. The
source's own index list is read when the entry is registered; a CSV source needs nothing,
the connector indexes its key fields in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.authorization.roles import Action
from gateway.catalog.models import Dataset
from gateway.catalog.sources import SourceAccess
from gateway.dataplane.connectors import sql_connector
from gateway.db.schema import DatasetRow
from gateway.errors import CatalogError, ConflictError, ForbiddenError
from gateway.governance.actor import Actor
from gateway.governance.unit_of_work import UnitOfWork

__all__ = ["CatalogService"]


class CatalogService:
    """Adds and replaces catalog entries, each as a governance record."""

    def __init__(self, uow: UnitOfWork, sources: SourceAccess) -> None:
        self._uow = uow
        self._sources = sources

    async def register_dataset(
        self, actor: Actor, data: Mapping[str, Any], *, replace_existing: bool = False
    ) -> Dataset:
        """Add (or with ``replace_existing`` replace) a catalog entry.

        A source department registers only under its own provider name, and replaces only
        its own entries; the authority and the local administrator may register for any
        provider. Whoever registers, the source must lie where the local administrator
        allows (:mod:`gateway.catalog.sources`) and name its password by a secret
        reference it may use. The governance record carries the source as a digest.
        """
        actor.may(Action.REGISTER_DATASET)
        dataset = Dataset.from_dict(data)
        department = actor.source_department()
        if department is not None and dataset.provider.strip() != department:
            raise ForbiddenError(
                f"a client of {department} registers datasets only under its own provider "
                f"name ({department}); the data authority registers for other providers",
                member="provider",
            )
        await self._sources.check_registration(dataset, department=department)
        await self._check_key_index(dataset)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Dataset:
            current_provider = await conn.scalar(
                select(DatasetRow.provider).where(DatasetRow.id == dataset.id)
            )
            if current_provider is not None and not replace_existing:
                raise ConflictError(f"dataset {dataset.id} is already registered")
            if current_provider is not None and department not in (
                None,
                current_provider.strip(),
            ):
                raise ForbiddenError(
                    f"dataset {dataset.id} is provided by another department; a department "
                    "replaces only its own datasets"
                )
            values = {
                "name": dataset.name,
                "provider": dataset.provider,
                "open_attribute": dataset.open_attribute.value,
                "negative_list": dataset.negative_list,
                "definition": dataset.to_dict(),
                "updated_at": now,
            }
            if current_provider is not None:
                await conn.execute(
                    update(DatasetRow).where(DatasetRow.id == dataset.id).values(**values)
                )
            else:
                await conn.execute(
                    insert(DatasetRow).values(id=dataset.id, created_at=now, **values)
                )
            return dataset

        kind = "dataset.updated" if replace_existing else "dataset.registered"
        return await self._uow.change(actor, kind, {"dataset": dataset.record_dict()}, apply)

    async def _check_key_index(self, dataset: Dataset) -> None:
        """Refuse a SQL source whose table is missing or has no index leading with a key
        field; the message names the table, the key and the ``CREATE INDEX`` to run.

        Not checked: CSV sources (indexed in memory) and datasets that can never be granted
        (not open, negative list), which nobody looks anything up in. Raises
        :class:`CatalogError` (422), or :class:`SourceUnavailableError` (503) when the
        source cannot be read now: a key that cannot be checked is not accepted.
        """
        if dataset.source.kind != "sql" or not dataset.grantable:
            return
        connector = sql_connector(dataset, await self._sources.open(dataset), pool_size=1)
        try:
            indexes = await connector.indexes()
            create = connector.create_index_sql(dataset.key_fields)
        finally:
            await connector.close()
        table, key = dataset.source.table, ", ".join(dataset.key_fields)
        if indexes is None:
            raise CatalogError(
                f"dataset {dataset.id}: the source has no table {table}; name an existing "
                "table in the source's table member",
                dataset=dataset.id,
                table=table,
            )
        if not any(columns[0] in dataset.key_fields for columns in indexes):
            raise CatalogError(
                f"dataset {dataset.id}: source table {table} has no index on its key field(s) "
                f"{key}, which every verification looks rows up by; create one in the source "
                f"and register again: {create}",
                dataset=dataset.id,
                table=table,
                columns=list(dataset.key_fields),
                create_index=create,
            )
