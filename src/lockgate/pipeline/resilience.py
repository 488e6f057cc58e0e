"""Resilient call: retries with backoff (honouring Retry-After), fallback across
deployments, and the mapping of provider failures to client errors.

Streams fall back only before their first chunk: :func:`open_stream` primes the
upstream stream (waits for its first chunk) inside the retry/fallback loop, so
once a byte has gone to the client the deployment is fixed.

With a :class:`~lockgate.governance.CircuitBreaker`, a deployment whose breaker
is open (shared by every gateway) is skipped for the next one; outcomes are
recorded in the background (upstream 429/401/402 put the deployment into a
cooldown). When every deployment is skipped the call fails with 503
``circuit_open`` and a Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from lockgate.errors import (
    BadRequest,
    GatewayError,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from lockgate.governance import CircuitBreaker, Permit
from lockgate.observability.tracing import STAGE, span
from lockgate.pipeline.routing import Target
from lockgate.providers.base import ProviderError, StreamChunk

T = TypeVar("T")

RETRYABLE = frozenset(
    {"rate_limited", "server_error", "connection", "timeout_connect", "timeout_first_token",
     "bad_response"}
)
"""Failures worth another attempt (same or next deployment)."""

FALLBACK_ONLY = frozenset({"auth", "payment", "not_found", "timeout_total", "timeout_idle"})
"""Failures that will not heal on retry at the same deployment but may at another."""

MAX_BACKOFF_S = 8.0
BASE_BACKOFF_S = 0.1


def to_gateway_error(exc: ProviderError, deployment: str) -> GatewayError:
    """Map a provider failure to what the client sees (``upstream_kind`` keeps its kind)."""
    err = _client_error(exc, deployment)
    err.upstream_kind = exc.kind
    return err


def _client_error(exc: ProviderError, deployment: str) -> GatewayError:
    kind = exc.kind
    if kind == "rate_limited":
        retry_after = exc.retry_after if exc.retry_after is not None else 1.0
        return RateLimited(
            f"Upstream {deployment} is rate limiting: {exc.message}",
            code="upstream_rate_limited",
            headers={"retry-after": str(max(1, math.ceil(retry_after)))},
        )
    if exc.is_timeout:
        return UpstreamTimeout(f"Upstream {deployment} timed out ({kind}): {exc.message}")
    if kind == "bad_request":
        return BadRequest(f"Upstream {deployment} rejected the request: {exc.message}",
                          code="upstream_bad_request")
    if kind in ("auth", "payment", "not_found"):
        return UpstreamFailed(
            f"Upstream {deployment} refused lockgate's call ({kind}, HTTP "
            f"{exc.upstream_status}): {exc.message}",
            code=f"upstream_{kind}",
        )
    if kind == "stream_cut":
        return UpstreamFailed(f"Upstream {deployment} cut the stream: {exc.message}",
                              code="upstream_stream_cut")
    return UpstreamFailed(f"Upstream {deployment} failed ({kind}): {exc.message}")


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; Retry-After wins when larger (capped)."""
    delay = random.uniform(0, min(MAX_BACKOFF_S, BASE_BACKOFF_S * (2**attempt)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_BACKOFF_S)


@dataclass(slots=True)
class Attempts:
    """What happened while calling; read by accounting."""

    deployment: Target | None = None
    upstream_seconds: float = 0.0
    tries: int = 0
    permit: Permit | None = None
    """The breaker permit of the deployment that answered (streams record a late cut on it)."""
    skipped: int = 0
    """Deployments skipped because their breaker was open."""


_BACKGROUND: set[asyncio.Task[object]] = set()


def in_background(coro: Awaitable[object]) -> None:
    """Run ``coro`` off the request path (breaker records, settles); keep a reference."""

    async def wrap() -> object:
        return await coro

    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(wrap())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def record_failure(breaker: CircuitBreaker | None, permit: Permit | None,
                   exc: ProviderError) -> None:
    if breaker is not None and permit is not None:
        in_background(breaker.record_error(permit, exc.kind, exc.retry_after))


async def call_with_fallback(
    plan: list[Target],
    run: Callable[[Target], Awaitable[T]],
    attempts: Attempts,
    *,
    deadline: float | None = None,
    on_error: Callable[[Target, ProviderError], None] | None = None,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Run ``run(target)`` over the plan with retries; raise the mapped last error."""
    last: tuple[ProviderError, Target] | None = None
    wait: float | None = None
    for target in plan:
        retries = target.deployment.max_retries
        for attempt in range(retries + 1):
            permit: Permit | None = None
            if breaker is not None:
                permit = breaker.closed_permit(target.id) or await breaker.acquire(target.id)
                if not permit.allowed:
                    attempts.skipped += 1
                    wait = permit.retry_after if wait is None else min(wait, permit.retry_after)
                    break
            attempts.tries += 1
            attempts.deployment = target
            attempts.permit = permit
            t0 = time.perf_counter()
            try:
                with span(STAGE.UPSTREAM, deployment=target.id, attempt=attempts.tries):
                    result = await run(target)
            except ProviderError as exc:
                last = (exc, target)
                record_failure(breaker, permit, exc)
                if on_error is not None:
                    on_error(target, exc)
                if exc.kind not in RETRYABLE or attempt == retries:
                    if exc.kind == "bad_request":
                        raise to_gateway_error(exc, target.id) from None
                    break
                delay = backoff_delay(attempt, exc.retry_after)
                if deadline is not None and time.monotonic() + delay > deadline:
                    break
                await asyncio.sleep(delay)
                continue
            finally:
                attempts.upstream_seconds += time.perf_counter() - t0
            if breaker is not None and permit is not None:
                if breaker.records_now:  # no I/O: cheaper than a task (~5 us)
                    breaker.record_now(permit, ok=True)
                else:
                    in_background(breaker.record(permit, ok=True))
            return result
    if last is None:
        seconds = max(1, math.ceil(wait or 1.0))
        names = ", ".join(t.id for t in plan)
        raise Unavailable(
            f"Every deployment is paused by its circuit breaker ({names}); "
            f"retry in {seconds}s.",
            code="circuit_open",
            headers={"retry-after": str(seconds)},
        )
    error, failed = last
    raise to_gateway_error(error, failed.id)


class PrimedStream:
    """An upstream stream whose first chunk has already arrived."""

    def __init__(self, first: StreamChunk, rest: AsyncIterator[StreamChunk]) -> None:
        self._first: StreamChunk | None = first
        self._rest = rest

    def __aiter__(self) -> PrimedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()


async def prime_stream(target: Target, body: dict[str, object]) -> PrimedStream:
    """Open the upstream stream and wait for its first chunk (fallback point)."""
    stream = target.provider.chat_stream(body)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        raise ProviderError("stream_cut", "upstream stream ended before any chunk") from None
    except BaseException:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
        raise
    return PrimedStream(first, stream)
