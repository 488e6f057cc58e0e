"""Signed webhooks: job completion callbacks, alerts (and, through them, every feature).

Each POST carries the JSON body and ``X-Lockgate-Signature: t=<unix>,v1=<hex>``
where ``hex = HMAC-SHA256(secret, f"{t}.{body}")`` (the Stripe scheme: the
timestamp is signed too, so receivers can refuse replays). Deliveries are
retried with exponential backoff on connection errors, timeouts, 429 and 5xx;
the outcome is returned as a short status string the caller records.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.lazy import lazy_module

if TYPE_CHECKING:
    import aiohttp
else:  # ~14 MB resident: loaded on first use, not by every gateway worker at start
    aiohttp = lazy_module("aiohttp")

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "backoff_delay", "sign", "verify"]

SIGNATURE_HEADER = "X-Lockgate-Signature"


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Equal-jitter exponential backoff after the ``attempt``-th failed delivery (1-based)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(ceiling / 2 + random.random() * ceiling / 2)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """Check a signature header (receivers use this; so do the tests)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, ts), header)


@dataclass
class WebhookSender:
    secret: str
    attempts: int = 5
    timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    _session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def send(self, url: str, event: str, payload: dict[str, Any]) -> str:
        """POST until a 2xx or attempts run out; returns e.g. ``delivered 200 (attempt 2)``."""
        body = orjson.dumps(payload)
        last = ""
        for attempt in range(1, self.attempts + 1):
            headers = {
                "Content-Type": "application/json",
                "X-Lockgate-Event": event,
                SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            }
            try:
                session = await self._client()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return f"delivered {resp.status} (attempt {attempt})"
                    last = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in (408, 429):
                        return f"failed {last} (attempt {attempt}, not retried)"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"[:200]
            if attempt < self.attempts:
                await asyncio.sleep(
                    backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
                )
        return f"failed {last} (after {self.attempts} attempts)"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
