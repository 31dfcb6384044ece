"""Pushing alerts to the supervisor's systems: a signed JSON POST per new alert, raised
severity and handling step.

Deliveries run in their own task from state kept on the alert row (``webhook_status``,
``webhook_attempts``, ``webhook_next_at``), so a slow or dead receiver never holds up the
monitor, a restart resumes pending deliveries, and two processes never post the same
attempt (each attempt is claimed by compare-and-set). Failed attempts are retried with
exponential backoff up to ``alert_webhook_max_attempts``, then marked ``failed``.

The receiver checks ``Dsgw-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw body under
the shared secret (:func:`verify_signature`); the body carries ``sent_at`` so a replayed
delivery can be told by its age. The secret is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.clock import Clock
from gateway.dependencies import DependencyHealth
from gateway.errors import ConfigError
from gateway.monitoring.models import Alert
from gateway.monitoring.store import AlertStore
from gateway.tasks import Supervised

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "check_webhook_url", "sign", "verify_signature"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Dsgw-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The ``Dsgw-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> str:
    """``url`` if alerts may be sent there: https, or plain http to this host only (alerts
    name merchants and carry evidence, so they do not cross a network in clear)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"settings: alert_webhook_url must be an https URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            "settings: alert_webhook_url must use https (plain http only to a loopback "
            f"address), got {url!r}"
        )
    if parts.username or parts.password:
        raise ConfigError("settings: alert_webhook_url must not carry credentials")
    return url


def payload(alert: Alert, *, deployment: str, sent_at: dt.datetime) -> dict[str, Any]:
    """The JSON document posted for ``alert``'s current state."""
    document = alert.to_dict()
    document.pop("webhook", None)
    return {
        "event": f"alert.{alert.status.value}",
        "deployment": deployment,
        "sent_at": sent_at.isoformat(),
        "alert": document,
    }


class WebhookSender:
    def __init__(
        self,
        store: AlertStore,
        clock: Clock,
        *,
        url: str,
        secret: str,
        deployment: str,
        timeout: float = 5.0,
        max_attempts: int = 8,
        backoff: dt.timedelta = dt.timedelta(seconds=10),
        max_backoff: dt.timedelta = dt.timedelta(hours=1),
        health: DependencyHealth | None = None,
    ) -> None:
        if not secret:
            raise ConfigError("settings: alert_webhook_url needs alert_webhook_secret")
        self._store = store
        self._clock = clock
        self.url = check_webhook_url(url)
        self._secret = secret.encode("utf-8")
        self._deployment = deployment
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._task = Supervised("dsgw-alert-webhook", log=log)
        self._wake = asyncio.Event()
        # A store outage is logged there once, not once per pass.
        self._health = health or DependencyHealth()

    def __repr__(self) -> str:
        return f"WebhookSender(url={self.url!r})"  # never the secret

    def wake(self) -> None:
        """Deliver now rather than at the next interval (new alerts were raised)."""
        self._wake.set()

    def _delay(self, attempts: int) -> dt.timedelta:
        delay: dt.timedelta = self._backoff * (1 << min(max(attempts - 1, 0), 20))
        return min(delay, self._max_backoff)

    async def _post(self, body: bytes, alert: Alert) -> str:
        """POST once; the outcome as text for the log ('' when delivered)."""
        import aiohttp  # loaded when an alert is first pushed, not with the monitor

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "dsgw-alerts",
            "Dsgw-Event": f"alert.{alert.status.value}",
            "Dsgw-Alert-Id": str(alert.id),
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__

    async def deliver_due(self) -> int:
        """One pass over the due deliveries; returns how many were delivered."""
        delivered = 0
        now = self._clock.now()
        for alert in await self._store.due_deliveries(now):
            lease_until = now + dt.timedelta(seconds=self._timeout * 2 + 1)
            if not await self._store.claim_delivery(alert, lease_until):
                continue  # another process took this attempt
            attempts = alert.webhook_attempts + 1
            sent_at = self._clock.now()
            body = json.dumps(
                payload(alert, deployment=self._deployment, sent_at=sent_at),
                ensure_ascii=False,
                sort_keys=True,
            ).encode("utf-8")
            failure = await self._post(body, alert)
            if not failure:
                delivered += 1
                status, next_at = "delivered", None
            elif attempts >= self._max_attempts:
                log.warning(
                    "alert webhook: giving up on alert %d after %d attempts (%s)",
                    alert.id,
                    attempts,
                    failure,
                )
                status, next_at = "failed", None
            else:
                log.info(
                    "alert webhook: alert %d attempt %d failed (%s)", alert.id, attempts, failure
                )
                status, next_at = "pending", self._clock.now() + self._delay(attempts)
            await self._store.finish_delivery(
                alert.id, attempts, lease_until, status=status, next_at=next_at
            )
        return delivered

    def start(self, interval: float = 1.0) -> None:
        if not self._task.running:
            self._wake = asyncio.Event()
            self._task.start(lambda: self._run(interval))

    async def _run(self, interval: float) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:  # the sender outlives a store hiccup; the next pass retries
                if not self._health.absorb(exc):
                    log.warning("alert webhook: pass failed, will retry: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()

    async def close(self) -> None:
        await self._task.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
