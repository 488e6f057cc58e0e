"""Governance settings: limits, budgets, breakers and the process-wide choices.

``LimitsConfig`` and ``BudgetConfig`` attach to a key, a team or a model;
``BreakerConfig`` to a deployment (or globally); ``GovernanceConfig`` holds the
process-wide choices (failure policy, default reservation size). Money is
given in currency units (floats); governance keeps it as integer micro-units
(:mod:`lockgate.governance.money`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = [
    "BreakerConfig",
    "BudgetConfig",
    "FailurePolicy",
    "GovernanceConfig",
    "LimitsConfig",
]

FailurePolicy = Literal["fail_closed", "fail_open"]


class LimitsConfig(Strict):
    """Rate limits of one key, team or model. ``None`` means no limit.

    Tokens are prompt + completion tokens. Minute limits are GCRA with a burst
    of the full limit; day limits are rolling 24 h (not calendar days: calendar
    windows are what budgets are for).
    """

    rpm: int | None = Field(None, ge=0, description="requests per minute")
    tpm: int | None = Field(None, ge=0, description="tokens per minute")
    rpd: int | None = Field(None, ge=0, description="requests per rolling day")
    tpd: int | None = Field(None, ge=0, description="tokens per rolling day")

    def is_empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.rpd is None and self.tpd is None


class BudgetConfig(Strict):
    """Spending ceilings of one key, team or model over calendar UTC windows.

    ``daily`` resets at 00:00 UTC, ``monthly`` at 00:00 UTC on the 1st.
    Money in currency units (the pricing's currency), tokens as counts.
    """

    daily: float | None = Field(None, ge=0)
    monthly: float | None = Field(None, ge=0)
    daily_tokens: int | None = Field(None, ge=0)
    monthly_tokens: int | None = Field(None, ge=0)

    def is_empty(self) -> bool:
        return (
            self.daily is None
            and self.monthly is None
            and self.daily_tokens is None
            and self.monthly_tokens is None
        )


class BreakerConfig(Strict):
    """Per-deployment circuit breaker, shared by every gateway through the state backend."""

    window_seconds: float = Field(30.0, gt=0, description="error-rate sliding window")
    buckets: int = Field(10, ge=1, le=120, description="window resolution")
    min_requests: int = Field(10, ge=1, description="no opening below this many calls in window")
    failure_rate: float = Field(0.5, gt=0, le=1, description="open at this failure share")
    open_seconds: float = Field(30.0, gt=0, description="how long an opened breaker rejects")
    half_open_probes: int = Field(1, ge=1, description="probe calls at a time, all gateways")
    half_open_successes: int = Field(1, ge=1, description="probe successes needed to close")
    probe_timeout_seconds: float = Field(
        120.0, gt=0, description="a probe slot whose holder vanished frees itself after this"
    )
    rate_limited_cooldown: float = Field(
        5.0, ge=0, description="cooldown after an upstream 429 without Retry-After"
    )
    auth_cooldown: float = Field(300.0, ge=0, description="cooldown after upstream 401/403/402")
    max_cooldown: float = Field(3600.0, gt=0, description="cap on any cooldown (Retry-After)")
    local_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="trust a 'closed' state seen this recently without asking the backend",
    )


class GovernanceConfig(Strict):
    """Process-wide governance choices."""

    limits_on_state_error: FailurePolicy = "fail_closed"
    """What rate limits do when the state backend (Redis) is unreachable."""
    budgets_on_state_error: FailurePolicy = "fail_closed"
    """What budgets do when the state backend (Redis) is unreachable."""
    default_max_tokens: int = Field(1024, ge=1)
    """Completion tokens reserved when a request gives no ``max_tokens``; a governed call
    without one is sent upstream with ``max_tokens`` set to this, so it cannot cost more."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The field that carries ``default_max_tokens`` upstream. ``max_tokens`` is what
    OpenAI-compatible servers know; OpenAI's reasoning models accept only
    ``max_completion_tokens``."""
    media_tokens: int = Field(1536, ge=0)
    """Prompt tokens reserved per image/audio/file part for models without an offline
    tokenizer (text is bounded by its UTF-8 bytes; media has no such bound)."""
    reservation_ttl_seconds: float = Field(900.0, gt=0)
    """A reservation not settled by then is dropped (its gateway died). Exceed the longest call."""
    version_key: str | None = "keys"
    """Version counter read with every admission (see ``Ticket.version``); None to skip."""
    max_pending_settles: int = Field(10_000, ge=0)
    """Settles that failed (state unreachable) kept in memory and retried later."""
