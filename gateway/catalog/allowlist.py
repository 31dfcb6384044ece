"""The hosts a dataset's database source may be on: the ``source_hosts`` setting, parsed.

Kept apart from :mod:`gateway.catalog.sources` (which applies the whole allow-list) and free
of heavy imports, so that :mod:`gateway.settings` can refuse a bad entry when it loads.

An entry is a host (``db.hr.example``, ``10.0.0.5``, ``::1``), a host and port
(``db.hr.example:5432``, ``[::1]:5432``) or a URL prefix naming the kind of server and
optionally its port and database (``postgresql://db.hr.example:5432/hr``). Hosts are
compared as written, without DNS: the local administrator writes them as the sources name
them. IP addresses are compared in their normal form (``::0001`` is ``::1``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import ConfigError

__all__ = ["DEFAULT_PORTS", "HostRule", "normalise_host", "parse_source_hosts"]

#: The port a server listens on when a URL names none, per SQLAlchemy backend or scheme.
DEFAULT_PORTS: dict[str, int] = {
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "mssql": 1433,
    "oracle": 1521,
    "http": 80,
    "https": 443,
}


def normalise_host(host: str) -> str:
    """Lower-case names; IP addresses in their normal form (brackets removed)."""
    bare = host.strip().strip("[]").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.rstrip(".")


def backend_of(scheme: str) -> str:
    """``postgresql+psycopg`` -> ``postgresql``: the driver does not change the server."""
    return scheme.split("+", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class HostRule:
    """One ``source_hosts`` entry; :meth:`parse` refuses what it cannot mean exactly."""

    text: str
    host: str
    port: int | None = None
    # The server kind (SQLAlchemy backend name) when the entry is a URL prefix.
    backend: str | None = None
    # The database (path without its leading slash) when the URL prefix names one.
    database: str | None = None

    @classmethod
    def parse(cls, text: str) -> HostRule:
        entry = text.strip()
        what = f"settings: source_hosts: {entry!r}"
        if not entry:
            raise ConfigError(f"{what} is empty")
        try:
            return cls(text=entry, host=str(ipaddress.ip_address(entry)))
        except ValueError:
            pass  # not a bare address: a host name, host:port or a URL prefix
        is_url = "://" in entry
        try:
            parts = urllib.parse.urlsplit(entry if is_url else "//" + entry)
            port = parts.port
        except ValueError:
            raise ConfigError(f"{what} has an invalid port") from None
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"{what} must not carry a user or password")
        if parts.query or parts.fragment:
            raise ConfigError(f"{what} must not carry a query or fragment")
        if not parts.hostname:
            raise ConfigError(f"{what} names no host")
        if not is_url and parts.path:
            raise ConfigError(
                f"{what} is neither host, host:port nor a URL such as postgresql://host:5432/db"
            )
        database = (parts.path.lstrip("/") or None) if is_url else None
        if database is not None and "/" in database:
            raise ConfigError(f"{what}: a database prefix is one name, not a path")
        return cls(
            text=entry,
            host=normalise_host(parts.hostname),
            port=port,
            backend=backend_of(parts.scheme) if is_url else None,
            database=database,
        )

    def allows(self, backend: str, host: str, port: int | None, database: str) -> bool:
        """Whether a ``backend`` server at ``host``:``port`` serving ``database`` is inside
        this entry. A URL without a port means the backend's default one."""
        if self.backend is not None and self.backend != backend:
            return False
        if self.host != normalise_host(host):
            return False
        if self.port is not None and self.port != (port or DEFAULT_PORTS.get(backend)):
            return False
        return self.database is None or self.database == database


def parse_source_hosts(entries: Iterable[str]) -> tuple[HostRule, ...]:
    """Every entry parsed; :class:`ConfigError` naming the first bad one."""
    return tuple(HostRule.parse(entry) for entry in entries)
