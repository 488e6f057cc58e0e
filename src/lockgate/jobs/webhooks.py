"""Signed webhooks for job callbacks, with the SSRF guard and stable delivery ids.

The signature scheme (:func:`sign`, :func:`verify`) is shared with alerts
(:mod:`lockgate.alerts.webhooks`).

Each POST carries the JSON body, ``X-Lockgate-Event``, ``X-Lockgate-Delivery`` (a
delivery id, the same on every retry: receivers deduplicate on it; job webhooks are
sent at least once) and, when a secret is configured, ``X-Lockgate-Signature:
t=<unix>,v1=<hex>`` where ``hex = HMAC-SHA256(secret, f"{t}.{body}")`` (the Stripe
scheme: the timestamp is signed too, so receivers can refuse replays). Attempts are
retried with exponential backoff on connection errors, timeouts, 408, 429 and 5xx;
redirects are never followed (a 3xx is a failure).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.alerts.webhooks import SIGNATURE_HEADER, sign, verify
from lockgate.jobs.model import WebhookOutcome, backoff_delay
from lockgate.jobs.ssrf import AddressPolicy, literal_refusal
from lockgate.lazy import lazy_module

if TYPE_CHECKING:
    import aiohttp
else:  # ~14 MB resident: loaded on first use, not by every gateway worker at start
    aiohttp = lazy_module("aiohttp")

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Attempt",
    "WebhookSender",
    "sign",
    "verify",
]

EVENT_HEADER = "X-Lockgate-Event"
DELIVERY_HEADER = "X-Lockgate-Delivery"
"""Stable across retries of one delivery: receivers deduplicate on it."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST's outcome."""

    ok: bool
    status: str
    """``200``, ``HTTP 500``, ``ClientConnectorError: ...``."""
    retryable: bool

    def verdict(self, n: int, attempts: int, *, backoff_base: float, backoff_cap: float
                ) -> tuple[WebhookOutcome, str, float]:
        """What an outbox records after the ``n``-th of at most ``attempts`` tries:
        (``delivered`` | ``retry`` | ``dead``, the status text, when to retry or 0)."""
        if self.ok:
            return "delivered", f"delivered {self.status} (attempt {n})", 0.0
        if self.retryable and n < attempts:
            delay = backoff_delay(n, base=backoff_base, cap=backoff_cap)
            return "retry", f"retrying: {self.status} (attempt {n})", time.time() + delay
        why = "not retried" if not self.retryable else f"after {n} attempts"
        return "dead", f"failed {self.status} (attempt {n}, {why}, dead-lettered)", 0.0


@dataclass
class WebhookSender:
    """Signs (when it has a ``secret``) and POSTs webhooks; never follows redirects.

    With a ``policy`` (the SSRF guard) every destination is checked: IP literals before
    the request, names at each connection by :class:`~lockgate.jobs.ssrf.GuardedResolver`.
    """

    secret: str | None
    attempts: int = 5
    timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    policy: AddressPolicy | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def signed(self) -> bool:
        return bool(self.secret)

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None
            if self.policy is not None and not self.policy.allow_private:
                from lockgate.jobs.ssrf_resolver import GuardedResolver

                connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy))
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), connector=connector
            )
        return self._session

    def headers(self, event: str, body: bytes, delivery_id: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", EVENT_HEADER: event}
        if delivery_id:
            headers[DELIVERY_HEADER] = delivery_id
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
        return headers

    async def attempt(
        self, url: str, event: str, body: bytes, delivery_id: str | None = None
    ) -> Attempt:
        """One POST: ok on 2xx; retryable on connection errors, timeouts, 408, 429, 5xx."""
        if self.policy is not None:
            refused = literal_refusal(self.policy, url)
            if refused is not None:
                return Attempt(False, f"refused: {refused} address", retryable=False)
        try:
            session = await self._client()
            async with session.post(
                url, data=body, headers=self.headers(event, body, delivery_id),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Attempt(True, str(resp.status), retryable=False)
                if 300 <= resp.status < 400:
                    return Attempt(
                        False, f"HTTP {resp.status} (redirects are not followed)", False
                    )
                retry = resp.status >= 500 or resp.status in (408, 429)
                return Attempt(False, f"HTTP {resp.status}", retryable=retry)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            text = f"{type(exc).__name__}: {exc}"[:200]
            return Attempt(False, text, retryable="refused:" not in text)

    async def send(self, url: str, event: str, payload: dict[str, Any]) -> str:
        """POST until a 2xx or attempts run out; returns e.g. ``delivered 200 (attempt 2)``.

        In-process retries (queue alerts). Job webhooks go through the queue's outbox
        instead (:class:`lockgate.jobs.outbox.OutboxDeliverer`), which survives restarts.
        """
        body = orjson.dumps(payload)
        last = ""
        for attempt in range(1, self.attempts + 1):
            result = await self.attempt(url, event, body)
            if result.ok:
                return f"delivered {result.status} (attempt {attempt})"
            last = result.status
            if not result.retryable:
                return f"failed {last} (attempt {attempt}, not retried)"
            if attempt < self.attempts:
                await asyncio.sleep(
                    backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
                )
        return f"failed {last} (after {self.attempts} attempts)"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
