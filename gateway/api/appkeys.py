"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.telemetry import Telemetry
from gateway.ledger.records import CallRecord
from gateway.runtime import Gateway
from gateway.settings import Network

__all__ = ["GATEWAY", "MAX_BODY", "OPENAPI", "RECORD", "TELEMETRY", "TRUSTED_PROXIES"]

GATEWAY = web.AppKey("gateway", Gateway)
MAX_BODY = web.AppKey("max_body", int)
OPENAPI = web.AppKey("openapi", dict[str, Any])
RECORD = web.RequestKey("record", CallRecord)
TELEMETRY = web.AppKey("telemetry", Telemetry)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])
