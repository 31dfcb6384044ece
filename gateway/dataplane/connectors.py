"""Connectors of the data plane: one per dataset source, opened through the source allow-list."""

from __future__ import annotations

from sqlalchemy.engine import URL

from connectors.base import Connector
from connectors.csv_file import CsvConnector
from connectors.sql import SqlConnector
from gateway.catalog.models import Dataset
from gateway.catalog.sources import FilePlace, OpenedSource, SourceAccess
from gateway.errors import ConfigError

__all__ = ["ConnectorRegistry", "sql_connector"]


def sql_connector(dataset: Dataset, opened: OpenedSource, *, pool_size: int) -> SqlConnector:
    """The connector of a ``sql`` dataset's opened source: a SQLite file by its resolved
    path, a server by its URL with the resolved password."""
    place = opened.place
    if isinstance(place, FilePlace):
        url = URL.create("sqlite", database=str(place.path))
    else:
        url = place.url.set(password=opened.password)
    fields = {spec.name: spec.type for spec in dataset.fields}
    return SqlConnector(url, dataset.source.table, fields, pool_size=pool_size)


class ConnectorRegistry:
    """One connector per dataset source, opened on first use and reused.

    Every opening goes through :class:`SourceAccess`: the source's place is checked against
    the allow-list again (an entry stored before the list changed cannot escape it) and its
    credentials are resolved; the connector gets the resolved path or the URL with the
    password, which never leaves this process."""

    def __init__(self, sources: SourceAccess, *, pool_size: int = 4) -> None:
        self._sources = sources
        self._pool_size = pool_size
        self._connectors: dict[str, tuple[Dataset, Connector]] = {}
        self._retired: list[Connector] = []

    async def get(self, dataset: Dataset) -> Connector:
        cached = self._connectors.get(dataset.id)
        if cached is not None and cached[0] == dataset:
            return cached[1]
        opened = await self._sources.open(dataset)
        place = opened.place
        connector: Connector
        if dataset.source.kind == "sql":
            connector = sql_connector(dataset, opened, pool_size=self._pool_size)
        elif isinstance(place, FilePlace):
            fields = {spec.name: spec.type for spec in dataset.fields}
            connector = CsvConnector(place.path, fields, index_fields=dataset.key_fields)
        else:
            raise ConfigError(f"dataset {dataset.id}: unknown source kind {dataset.source.kind}")
        # A changed definition replaces the connector; the old one is closed by close().
        cached = self._connectors.get(dataset.id)
        if cached is not None:
            if cached[0] == dataset:  # another call opened it meanwhile: keep that one
                await connector.close()
                return cached[1]
            self._retired.append(cached[1])
        self._connectors[dataset.id] = (dataset, connector)
        return connector

    async def close(self) -> None:
        for _dataset, connector in self._connectors.values():
            await connector.close()
        for connector in self._retired:
            await connector.close()
        self._connectors.clear()
        self._retired.clear()
