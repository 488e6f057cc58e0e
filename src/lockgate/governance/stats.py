"""Plain-int counters of the governance layer, for a Prometheus collector to read."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GovernanceStats"]


@dataclass(slots=True)
class GovernanceStats:
    """Monotonic counters (except ``pending_settles``, a gauge)."""

    admitted: int = 0
    limit_hits: int = 0
    """Calls denied by a rate limit."""
    budget_denials: int = 0
    """Calls denied by a budget."""
    state_errors: int = 0
    """Admissions that found the state backend unreachable."""
    fail_open_admits: int = 0
    """Calls let through without counting because the backend was down and policy is fail_open."""
    settles: int = 0
    releases: int = 0
    settle_errors: int = 0
    """Settles/releases that could not reach the backend (kept for retry)."""
    pending_settles: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
