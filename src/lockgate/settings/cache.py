"""``cache:``: the exact-match response cache."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["CacheSettings"]


class CacheSettings(Strict):
    """Exact-match response cache (non-stream chat and embeddings), keyed per team."""

    enabled: bool = False
    ttl_seconds: float = Field(300.0, gt=0)
    backend: Literal["auto", "memory", "redis"] = "auto"
    """``auto``: the shared state backend (Redis when ``redis_url`` is set, else memory);
    ``memory``: this process only; ``redis``: Redis or nothing -- it needs ``redis_url``,
    and a start with Redis unreachable fails with a one-line error."""
