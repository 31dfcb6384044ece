"""Where source rows may live, decided by the local administrator, checked twice.

A catalog entry names its source; :class:`SourceRules` decides whether the gateway may
open it. The rules are the allow-list in settings (``source_directories`` for files,
``source_hosts`` for database servers) and, whatever that list says, a refusal of the
gateway's own store, keystore and data directory (outside its ``sources/`` folder): a
dataset over the store would hand merchants the staff's client ids and secret hashes.

:meth:`SourceRules.place` runs at registration (refusal: 403 ``source-not-allowed`` or
400 for a malformed location) and again whenever a connector is opened, so an entry stored
before the allow-list was narrowed cannot escape it. Paths are compared after resolving
symlinks and ``..``, and the connector opens the resolved path, not the written one.

:class:`SourceAccess` joins the rules with the secrets (:mod:`gateway.catalog.secrets`):
what a registration must pass, and what a connector needs to open a source.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from gateway.catalog.allowlist import HostRule, normalise_host
from gateway.catalog.models import Dataset, SourceSpec
from gateway.catalog.secret_names import SOURCE_SECRET_PREFIX
from gateway.catalog.secrets import SourceSecrets
from gateway.errors import (
    ForbiddenError,
    SourceNotAllowedError,
    SourceUnavailableError,
    ValidationError,
)
from gateway.settings import Settings

__all__ = ["FilePlace", "OpenedSource", "ServerPlace", "SourceAccess", "SourceRules"]

log = logging.getLogger(__name__)

# Query parameters a database source URL may carry: none of them changes which server or
# database is reached, or carries a secret (libpq's host, hostaddr, port, dbname, service
# and passfile would; so would pyodbc's odbc_connect).
ALLOWED_QUERY = frozenset({"sslmode", "connect_timeout", "application_name", "charset"})
# Seconds a host-name lookup may take when comparing a source with the gateway's store.
_RESOLVE_TIMEOUT = 3.0
_LOOPBACK = "loopback"

_DIRS_SETTING = "source_directories (DSGW_SOURCE_DIRECTORIES)"
_HOSTS_SETTING = "source_hosts (DSGW_SOURCE_HOSTS)"
_HOW_SECRET = (
    'remove it from the URL and name a secret reference in the source\'s "credentials" '
    'member instead: "keystore:NAME" (the local administrator puts it with `dsgw secrets '
    f'set NAME --provider PROVIDER`) or "env:{SOURCE_SECRET_PREFIX}NAME" (docs/catalog.md)'
)


@dataclass(frozen=True, slots=True)
class FilePlace:
    """A source file (CSV or SQLite), its path resolved."""

    path: Path


@dataclass(frozen=True, slots=True)
class ServerPlace:
    """A database server's database, reached through ``url`` (which holds no password)."""

    url: URL


@dataclass(frozen=True, slots=True)
class OpenedSource:
    """What a connector needs: the allowed place and, for a server, its password."""

    place: FilePlace | ServerPlace
    password: str | None = None


@dataclass(frozen=True, slots=True)
class _Store:
    """The gateway's own database on a server (its main and session URLs)."""

    backend: str
    host: str
    database: str


def _within(path: Path, directory: Path) -> bool:
    return path == directory or path.is_relative_to(directory)


def _sqlite_file(url: URL) -> str | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


def _own_store(url_text: str) -> tuple[Path | None, _Store | None]:
    """The gateway store named by one of its URLs: a file or a server database."""
    url = make_url(url_text)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = _sqlite_file(url)
        return (Path(database).resolve() if database else None), None
    query_host = url.query.get("host")
    host = url.host or (query_host if isinstance(query_host, str) else "")
    if not host or not url.database:
        return None, None
    return None, _Store(backend, host, url.database)


class SourceRules:
    """The allow-list and the fixed refusals, built once per process from settings."""

    def __init__(
        self,
        *,
        data_dir: Path,
        directories: Iterable[Path],
        hosts: Iterable[HostRule],
        protected_files: Iterable[Path] = (),
        stores: Iterable[_Store] = (),
    ) -> None:
        self._data_dir = data_dir
        self._data_root = data_dir.resolve()
        self._sources_root = (data_dir / "sources").resolve()
        self._directories = tuple(
            (d if d.is_absolute() else data_dir / d).resolve() for d in directories
        )
        self._hosts = tuple(hosts)
        self._protected = frozenset(p.resolve() for p in protected_files)
        self._stores = tuple(stores)

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceRules:
        protected: list[Path] = [
            settings.keystore_path,
            settings.keystore_path.with_name(settings.keystore_path.name + ".lock"),
            settings.data_dir / "keystore.pass",
        ]
        if settings.keystore.passphrase_file:
            protected.append(Path(settings.keystore.passphrase_file))
        stores: list[_Store] = []
        urls = {settings.resolved_database_url, settings.resolved_session_url}
        for url in sorted(urls):
            store_file, store = _own_store(url)
            if store_file is not None:
                protected += [
                    store_file.with_name(store_file.name + suffix)
                    for suffix in ("", "-wal", "-shm", "-journal")
                ]
            if store is not None:
                stores.append(store)
        return cls(
            data_dir=settings.data_dir,
            directories=(Path(d).expanduser() for d in settings.source.directories),
            hosts=settings.source_host_rules,
            protected_files=protected,
            stores=stores,
        )

    # -- files --------------------------------------------------------------------------

    def _file(self, written: str, what: str) -> FilePlace:
        try:
            candidate = Path(written).expanduser()
            if not candidate.is_absolute():
                candidate = self._data_dir / candidate
            path = candidate.resolve()
        except (OSError, RuntimeError, ValueError):  # a loop, NUL, an unknown ~user, ...
            raise ValidationError(f"{what} cannot be resolved to a file") from None
        if path in self._protected:
            raise SourceNotAllowedError(
                f"{what} is one of the gateway's own files (its store, keystore or "
                "passphrase), which are never a source"
            )
        if _within(path, self._data_root) and not _within(path, self._sources_root):
            raise SourceNotAllowedError(
                f"{what} is inside the gateway's data directory but outside its sources/ "
                "folder; only sources/ may hold source files there"
            )
        if not any(_within(path, d) for d in self._directories):
            raise SourceNotAllowedError(
                f"{what} resolves outside every directory allowed for source files; the "
                f"local administrator allows directories with the setting {_DIRS_SETTING}"
            )
        return FilePlace(path)

    # -- servers ------------------------------------------------------------------------

    async def _server(self, url: URL) -> ServerPlace:
        backend = url.get_backend_name()
        if url.password is not None or "password" in url.query:
            raise ValidationError(
                f"source url carries a password: a catalog entry never holds credentials; "
                f"{_HOW_SECRET}",
                member="url",
            )
        extra = sorted(set(url.query) - ALLOWED_QUERY)
        if extra:
            raise ValidationError(
                f"source url: query parameter(s) {', '.join(extra)} are not accepted (they "
                "could name another server or a secret); allowed: "
                + ", ".join(sorted(ALLOWED_QUERY)),
                member="url",
            )
        if not url.host:
            raise ValidationError(
                "source url names no host: a database source is reached over the network "
                "at a host the local administrator allows (sockets are not sources)",
                member="url",
            )
        if not url.database:
            raise ValidationError("source url names no database", member="url")
        try:
            is_async = url.get_dialect().is_async
        except (NoSuchModuleError, ImportError):
            raise ValidationError(
                f"source url: no installed driver for {url.drivername!r}", member="url"
            ) from None
        if is_async:
            raise ValidationError(
                f"source url: {url.drivername!r} is an async driver; SQL sources need a sync "
                "one (e.g. postgresql+psycopg://)",
                member="url",
            )
        if await self._is_store(backend, url.host, url.database):
            raise SourceNotAllowedError(
                "source url names the gateway's own store (same server and database), "
                "which is never a source"
            )
        if not any(r.allows(backend, url.host, url.port, url.database) for r in self._hosts):
            raise SourceNotAllowedError(
                "source url: its server is not among the hosts allowed for database "
                f"sources; the local administrator allows hosts with the setting {_HOSTS_SETTING}"
            )
        return ServerPlace(url)

    async def _is_store(self, backend: str, host: str, database: str) -> bool:
        """Same kind of server, same database name, and a host sharing an address with
        the store's, whatever the port (a pooler in front of the store is the store)."""
        candidates = [s for s in self._stores if s.backend == backend and s.database == database]
        if not candidates:
            return False
        addresses = await _addresses(host)
        for store in candidates:
            if addresses & await _addresses(store.host):
                return True
        return False

    # -- both ---------------------------------------------------------------------------

    async def place(self, source: SourceSpec) -> FilePlace | ServerPlace:
        """The allowed place of ``source``, resolved.

        Raises :class:`SourceNotAllowedError` for a place outside the allow-list or one of
        the gateway's own, :class:`ValidationError` for a malformed or credential-carrying
        location.
        """
        if source.kind == "csv":
            return self._file(source.path, "source path")
        if source.kind != "sql":
            raise ValidationError(f"source kind {source.kind!r} is not known")
        try:
            url = make_url(source.url)
        except (ArgumentError, ValueError):
            raise ValidationError(
                "source url is not a database URL (e.g. sqlite:///sources/registry.sqlite3 "
                "or postgresql+psycopg://reader@db.example:5432/registry)",
                member="url",
            ) from None
        if url.get_backend_name() != "sqlite":
            return await self._server(url)
        if url.query:
            raise ValidationError("source url: a SQLite source takes no query", member="url")
        database = _sqlite_file(url)
        if database is None:
            raise ValidationError(
                "source url: a SQLite source names its database file by path "
                "(sqlite:///sources/NAME.sqlite3), not in memory or as a file: URI",
                member="url",
            )
        if source.credentials is not None:
            raise ValidationError(
                "source credentials: a SQLite file takes no password", member="credentials"
            )
        return self._file(database, "source url's database file")


async def _addresses(host: str) -> frozenset[str]:
    """The names one host goes by: its normal form and every address it resolves to, all
    loopback addresses counted as one (each reaches the local server)."""
    name = normalise_host(host)
    try:
        return frozenset({_normal_address(name)})
    except ValueError:
        pass  # a name, not an address: resolve it
    found: set[str] = {name}
    if name == "localhost":
        found.add(_LOOPBACK)
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                name, None, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError, ValueError):  # ValueError: NUL, a bad IDNA label
        return frozenset(found)  # compared by name only: a host that does not resolve
    for info in infos:
        try:
            found.add(_normal_address(str(info[4][0])))
        except ValueError:
            continue
    return frozenset(found)


def _normal_address(text: str) -> str:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if address.is_loopback:
        return _LOOPBACK
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


class SourceAccess:
    """The rules and the secrets: what registration checks and what connectors open."""

    def __init__(self, rules: SourceRules, secrets: SourceSecrets) -> None:
        self.rules = rules
        self.secrets = secrets

    async def check_registration(self, dataset: Dataset, *, department: str | None) -> None:
        """Refuse a dataset whose source may not be opened or whose credentials the
        registrant may not name (``department``: the registering source department's,
        None for the authority and the local administrator)."""
        await self.rules.place(dataset.source)
        if dataset.source.credentials is not None:
            self.secrets.check(
                dataset.source.credentials, provider=dataset.provider, department=department
            )

    async def open(self, dataset: Dataset) -> OpenedSource:
        """Check ``dataset``'s source again, now, and resolve its credentials.

        A source the rules now refuse is unavailable (503, the cause logged for the local
        administrator): the caller did nothing wrong and cannot change the allow-list.
        """
        try:
            place = await self.rules.place(dataset.source)
        except (ValidationError, ForbiddenError) as exc:
            log.warning("source of dataset %s refused when opened: %s", dataset.id, exc.detail)
            raise SourceUnavailableError(
                f"dataset {dataset.id}: its source is not allowed by this gateway's settings; "
                "the gateway's log says why"
            ) from None
        ref = dataset.source.credentials
        if ref is None:
            return OpenedSource(place)
        password = self.secrets.resolve(ref, provider=dataset.provider, dataset_id=dataset.id)
        return OpenedSource(place, password)
