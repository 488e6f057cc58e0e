"""What happened to a call: the pipeline's answer besides the model's own.

The pipeline never writes onto the caller's :class:`~lockgate.pipeline.call.Call` (it
works on a private copy). It returns a :class:`Result` (a ``Completion`` plus
:class:`CallFacts`), a :class:`StreamResult` (the chunks plus the facts, which keep
filling in while the stream runs), or raises a ``GatewayError`` whose ``facts`` are
set. Adapters turn the facts into response headers (``lockgate.api.openai.facts_headers``);
features read what they need (deployment, usage) and ignore the rest.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lockgate.providers.base import Completion, StreamChunk

__all__ = ["CallFacts", "Result", "StreamResult"]


@dataclass(slots=True)
class CallFacts:
    request_id: str
    model: str
    """The model that answered (after task routing or a kill-switch fallback)."""
    started: float
    """``time.perf_counter()`` when the call began (the adapter's clock when it set it)."""
    requested_model: str | None = None
    """The model the caller named, when routing changed it."""
    deployment: str | None = None
    """Deployment id that answered (``cache`` for a cache hit, ``rag/<c>`` for RAG)."""
    upstream_seconds: float = 0.0
    cache: str | None = None
    """``hit``, ``miss`` or ``bypass`` when a response cache is configured."""
    kill_switch: str | None = None
    """``model`` or ``team`` when a kill switch sent the call to its fallback model."""
    contract_repaired: bool = False
    rate_limits: dict[str, str] = field(default_factory=dict)
    """OpenAI's ``x-ratelimit-*`` values for the binding limits (the governance layer
    spells them, because its 429 errors carry the same values)."""
    pii_entities: tuple[str, ...] = ()
    """PII types the input guard found (and redacted, blocked or flagged)."""
    injection: str | None = None
    """The injection guard's verdict when it flagged the input."""

    def overhead_ms(self) -> float:
        """Time spent in lockgate so far, excluding waiting on the upstream."""
        elapsed = time.perf_counter() - self.started
        return max(0.0, (elapsed - self.upstream_seconds) * 1000.0)


@dataclass(slots=True)
class Result(Completion):
    """A finished answer (``body``, ``usage``, ``raw``) and what happened on the way."""

    facts: CallFacts | None = None


class StreamResult:
    """The chunks of a streamed answer; ``facts`` fill in while it runs."""

    __slots__ = ("_chunks", "facts")

    def __init__(self, chunks: AsyncIterator[StreamChunk], facts: CallFacts) -> None:
        self._chunks = chunks
        self.facts = facts

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._chunks

    async def __anext__(self) -> StreamChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
