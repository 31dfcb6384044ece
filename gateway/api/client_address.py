"""The caller's address behind a load balancer.

Behind the deployment's load balancer every connection comes from the balancer, so
``request.remote`` alone would make every client one address: the per-address onboarding
limit would throttle all companies together and the ``invalid-tokens`` alert could not tell
an attacker from everyone else. ``X-Forwarded-For`` names the real client, but anyone can
send that header: it is believed only when the connection comes from a proxy the operator
listed in ``trusted_proxies``, and then read from the right, skipping trusted hops, so a
client cannot put a forged address in front of the one its proxy appended.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from gateway.settings import Network

__all__ = ["client_address"]


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: web.Request, networks: tuple[Network, ...]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy, then the
    right-most untrusted address in ``X-Forwarded-For``."""
    peer = request.remote
    if not networks or peer is None or not _trusted(peer, networks):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
    ]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain: trust nothing in it
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer
