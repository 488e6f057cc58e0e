"""Circuit breaker per deployment, shared by every gateway through the state backend.

Closed: calls flow and their outcomes fill a bucketed sliding window; when at
least ``min_requests`` calls are in the window and the failure share reaches
``failure_rate``, the breaker opens for ``open_seconds``. Open: calls are
refused until then. Half-open: at most ``half_open_probes`` calls at a time
(across all gateways) go through as probes; ``half_open_successes`` probe
successes close it, one probe failure reopens it. Upstream 429/401/402/403/404
put the deployment into a cooldown (open for a given time) instead.

To keep the hot path cheap, a ``closed`` state seen within
``local_cache_seconds`` is trusted without asking the backend; every
:meth:`CircuitBreaker.record` refreshes it. The breaker fails open: if the
backend is unreachable, calls are allowed and :attr:`CircuitBreaker.state_errors`
counts it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from lockgate.settings.governance import BreakerConfig
from lockgate.state.base import (
    BreakerParams,
    BreakerStateName,
    BreakerView,
    StateBackend,
    StateUnavailable,
)

__all__ = ["STATE_CODES", "CircuitBreaker", "Permit", "breaker_params"]

STATE_CODES: dict[BreakerStateName, int] = {"closed": 0, "half_open": 1, "open": 2}
"""Gauge values for a Prometheus ``breaker_state`` metric."""

_COOLDOWN_KINDS = frozenset({"auth", "payment", "not_found"})
_CLIENT_FAULT_KINDS = frozenset({"bad_request"})


def breaker_params(config: BreakerConfig) -> BreakerParams:
    """The state backend's breaker parameters for the ``breaker:`` config section."""
    return BreakerParams(
        window=config.window_seconds,
        buckets=config.buckets,
        min_requests=config.min_requests,
        failure_rate=config.failure_rate,
        open_seconds=config.open_seconds,
        half_open_probes=config.half_open_probes,
        half_open_successes=config.half_open_successes,
        probe_ttl=config.probe_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class Permit:
    """Whether a call may go to ``deployment`` now; pass it back to ``CircuitBreaker.record``."""

    deployment: str
    allowed: bool
    state: BreakerStateName
    probe_id: str | None = None
    retry_after: float = 0.0


class CircuitBreaker:
    """Shared circuit breakers for all deployments (one instance per process)."""

    def __init__(
        self,
        state: StateBackend,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.config = config or BreakerConfig()
        self.params = breaker_params(self.config)
        self.clock = clock
        self._seen: dict[str, tuple[BreakerStateName, float]] = {}
        self._closed: dict[str, Permit] = {}  # one reusable permit per closed deployment
        # the in-process state records without a coroutine (MemoryState.breaker_record_now)
        self._record_now: Callable[..., BreakerView] | None = (
            getattr(state, "breaker_record_now", None) if state.in_process else None)
        # plain-int counters for metrics
        self.rejected = 0
        """Calls refused because a breaker was open (or probe slots were full)."""
        self.opened = 0
        """Transitions to open observed by this process (its own records/cooldowns)."""
        self.probes = 0
        self.state_errors = 0
        """Breaker operations that could not reach the backend (calls were allowed)."""

    # -- views for metrics ---------------------------------------------------

    def last_state(self, deployment: str) -> BreakerStateName:
        seen = self._seen.get(deployment)
        return seen[0] if seen else "closed"

    def state_codes(self) -> dict[str, int]:
        """Last known state per deployment as 0 closed / 1 half-open / 2 open."""
        return {dep: STATE_CODES[s] for dep, (s, _) in self._seen.items()}

    async def view(self, deployment: str) -> BreakerView:
        """The breaker as stored now (one round-trip)."""
        return await self.state.breaker_view(deployment, self.params, now=self.clock())

    def _note(self, deployment: str, view: BreakerView, now: float) -> None:
        before = self.last_state(deployment)
        if view.state == "open" and before != "open":
            self.opened += 1
        self._seen[deployment] = (view.state, now)

    # -- the call path -------------------------------------------------------

    def closed_permit(self, deployment: str) -> Permit | None:
        """The permit for a deployment this process saw closed less than
        ``local_cache_seconds`` ago (no state round trip), else None: then :meth:`acquire`."""
        seen = self._seen.get(deployment)
        if (seen is None or seen[0] != "closed"
                or self.clock() - seen[1] >= self.config.local_cache_seconds):
            return None
        permit = self._closed.get(deployment)
        if permit is None:
            permit = self._closed[deployment] = Permit(deployment, True, "closed")
        return permit

    async def acquire(self, deployment: str) -> Permit:
        """May a call go to ``deployment``? Refusals carry ``retry_after`` seconds."""
        permit = self.closed_permit(deployment)
        if permit is not None:
            return permit
        now = self.clock()
        probe_id = uuid.uuid4().hex
        try:
            view = await self.state.breaker_acquire(
                deployment, self.params, now=now, probe_id=probe_id
            )
        except StateUnavailable:
            self.state_errors += 1
            return Permit(deployment, True, "closed")
        self._note(deployment, view, now)
        if not view.allowed:
            self.rejected += 1
            return Permit(deployment, False, view.state, retry_after=view.retry_after)
        if view.probe:
            self.probes += 1
            return Permit(deployment, True, view.state, probe_id=probe_id)
        return Permit(deployment, True, view.state)

    async def record(self, permit: Permit, ok: bool) -> BreakerView | None:
        """Report a call's outcome (True: the deployment answered properly)."""
        now = self.clock()
        try:
            view = await self.state.breaker_record(
                permit.deployment, self.params, ok=ok, now=now, probe_id=permit.probe_id
            )
        except StateUnavailable:
            self.state_errors += 1
            return None
        self._note(permit.deployment, view, now)
        return view

    @property
    def records_now(self) -> bool:
        """True when :meth:`record_now` may be used (the state does no I/O)."""
        return self._record_now is not None

    def record_now(self, permit: Permit, ok: bool) -> BreakerView:
        """:meth:`record` on the in-process state, without a coroutine (see
        :attr:`records_now`)."""
        record = self._record_now
        if record is None:
            raise RuntimeError("record_now needs an in-process state (see records_now)")
        now = self.clock()
        view = record(permit.deployment, self.params, ok=ok, now=now, probe_id=permit.probe_id)
        self._note(permit.deployment, view, now)
        return view

    async def record_error(
        self, permit: Permit, kind: str, retry_after: float | None = None
    ) -> BreakerView | None:
        """Report a failed call by the provider's error kind.

        ``rate_limited`` cools the deployment down for ``retry_after`` (or the
        configured default); ``auth``/``payment``/``not_found`` for
        ``auth_cooldown``; ``bad_request`` is the client's fault and counts as a
        healthy answer; everything else (5xx, timeouts, connection errors, cut
        streams, bad bodies) is a failure in the error-rate window.
        """
        cfg = self.config
        if kind == "rate_limited":
            seconds = retry_after if retry_after is not None else cfg.rate_limited_cooldown
            return await self.cooldown(permit.deployment, seconds)
        if kind in _COOLDOWN_KINDS:
            return await self.cooldown(permit.deployment, cfg.auth_cooldown)
        return await self.record(permit, ok=kind in _CLIENT_FAULT_KINDS)

    async def cooldown(self, deployment: str, seconds: float) -> BreakerView | None:
        """Open ``deployment`` for ``seconds`` (capped at ``max_cooldown``) on every gateway."""
        seconds = max(0.0, min(seconds, self.config.max_cooldown))
        if seconds <= 0:
            return None
        now = self.clock()
        try:
            view = await self.state.breaker_cooldown(
                deployment, self.params, seconds=seconds, now=now
            )
        except StateUnavailable:
            self.state_errors += 1
            return None
        self._note(deployment, view, now)
        return view
