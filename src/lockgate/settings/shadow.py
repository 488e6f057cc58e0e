"""``shadow:``: mirror a share of a model's calls to a candidate deployment.

The mirroring itself is :mod:`lockgate.shadow`.
"""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["ShadowConfig", "ShadowSettings"]


class ShadowConfig(Strict):
    """One mirrored model: ``percent`` of its calls also go to ``candidate``."""

    model: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    """A deployment id (as in ``x-lockgate-deployment``), or a public model name
    (its first deployment)."""
    percent: float = Field(ge=0, le=100)
    timeout: float = Field(60.0, gt=0)
    """Seconds for one candidate call (on top of the deployment's own timeouts)."""


class ShadowSettings(Strict):
    """``shadow:`` in lockgate.yaml."""

    routes: list[ShadowConfig] = Field(default_factory=list)
    concurrency: int = Field(4, ge=1, le=256)
    """Candidate calls in flight at once."""
    max_pending: int = Field(1000, ge=1)
    """Queued samples; when full, new samples are dropped (and counted)."""
    drain_timeout: float = Field(10.0, ge=0)
    """Seconds ``aclose`` waits for queued samples before abandoning them."""
