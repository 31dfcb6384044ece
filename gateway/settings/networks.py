"""Values parsed out of settings text: trusted proxy networks and the time zone."""

from __future__ import annotations

import functools
import ipaddress
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigError

__all__ = ["Network", "parse_networks", "time_zone"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a :class:`ConfigError` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"settings: timezone {name!r} is not an IANA time zone name (e.g. Asia/Shanghai)"
        ) from exc


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` as networks; :class:`ConfigError` naming a bad entry."""
    networks: list[Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"settings: trusted_proxies: {part!r} is not an IP address or network"
            ) from None
    return tuple(networks)
