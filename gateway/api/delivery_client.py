"""The HTTP client that calls a product's service for a delivery (aiohttp).

Implements :class:`gateway.products.delivery.ProductServiceClient`, so the delivery rules
need no HTTP library; every failure comes back as :class:`SourceUnavailableError`, upon
which the delivery gives the buyer's unit back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.errors import SourceUnavailableError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["MAX_ANSWER_BYTES", "DeliveryClient"]

MAX_ANSWER_BYTES = 1024 * 1024


class DeliveryClient:
    """One aiohttp session, opened on the first delivery and closed with the gateway
    (aiohttp's client loads then too: a CLI command that opens the gateway never pays it)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ask(self, endpoint: str, payload: bytes) -> dict[str, Any]:
        """POST ``payload`` to ``endpoint``; its JSON object answer, at most
        :data:`MAX_ANSWER_BYTES`."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            async with self._session.post(
                endpoint, data=payload, headers={"Content-Type": "application/json"}
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status != 200 or len(raw) > MAX_ANSWER_BYTES:
                    raise SourceUnavailableError(
                        f"the product's service answered {resp.status}; the unit was given back"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailableError(
                f"the product's service is unreachable ({type(exc).__name__}); the unit was "
                "given back"
            ) from exc
        try:
            answer = json.loads(raw)
        except ValueError:
            raise SourceUnavailableError(
                "the product's service did not answer JSON; the unit was given back"
            ) from None
        if not isinstance(answer, dict):
            raise SourceUnavailableError("the product's service did not answer an object")
        return answer
