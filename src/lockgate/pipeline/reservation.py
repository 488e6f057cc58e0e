"""How many prompt tokens a call reserves: exact where a deployment has its tokenizer.

A call may reach any deployment of its plan (fallbacks), so the reservation is
the largest count over them: the provider's own count where it has one
(:class:`~lockgate.providers.base.PromptCounter`: llama.cpp, embedded), else the
byte bound of :func:`~lockgate.governance.prompt_tokens_bound`. When every
deployment counts exactly, the reservation is exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from lockgate.governance import prompt_tokens_bound
from lockgate.pipeline.routing import Target

__all__ = ["PromptCount", "count_prompt"]

log = logging.getLogger(__name__)


class PromptCount(int):
    """An int (the tokens to reserve) that remembers whether every count was exact."""

    exact: bool

    def __new__(cls, value: int, exact: bool) -> PromptCount:
        obj = super().__new__(cls, value)
        obj.exact = exact
        return obj


async def count_prompt(
    plan: Sequence[Target], body: dict[str, Any], *, media_tokens: int
) -> PromptCount:
    """Largest prompt count of ``body`` over the deployments of ``plan``."""
    best = 0
    exact = True
    bound: int | None = None
    seen: set[int] = set()
    for target in plan:
        provider = target.provider
        if id(provider) in seen:
            continue
        seen.add(id(provider))
        counter = getattr(provider, "count_prompt_tokens", None)
        n: int | None = None
        if counter is not None:
            try:
                n = await counter(body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counting never fails a call: fall back to the bound
                log.warning("prompt count failed on %s (%s): reserving the byte bound",
                            target.id, exc)
                n = None
        if n is None:
            if bound is None:
                bound = prompt_tokens_bound(body, media_tokens=media_tokens)
            n = bound
            exact = False
        best = max(best, n)
    return PromptCount(best, exact)
