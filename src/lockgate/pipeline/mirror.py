"""The pipeline's side of shadow traffic: what ``Controls.mirror`` must offer.

After a successful chat call that reached an upstream (cache hits are not
mirrored) and was not itself pinned to a deployment (shadow samples are pinned,
so they are never mirrored again), the pipeline calls::

    controls.mirror.maybe_mirror(call, facts, body, answer, cost)

For a stream the call happens after the stream ended, with the answer assembled from
its chunks (``answer.body`` is a ``chat.completion``); the stream is never slowed by
its shadow. Only streams of a model for which ``mirrors(model)`` is True are
assembled, so ``mirrors`` must be as cheap as ``maybe_mirror``.

with the call as the pipeline ran it (model after routing), its facts (deployment,
upstream seconds), the body it sent upstream, the answer the client gets and the
recorded cost. It must be synchronous, O(1) and must not block (sample,
queue, return); the pipeline still catches and logs anything it raises, so a
mirror can never change the primary answer. The implementation
(:class:`lockgate.shadow.ShadowMirror`) lives above the pipeline and sends its
samples back through it; the pipeline never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lockgate.pipeline.call import Call
    from lockgate.pipeline.facts import CallFacts
    from lockgate.providers.base import Completion

__all__ = ["Mirror"]


class Mirror(Protocol):
    def mirrors(self, model: str) -> bool:
        """Might a call of ``model`` be sampled (a route with a percentage above 0)? O(1)."""
        ...

    def maybe_mirror(
        self, call: Call, facts: CallFacts, body: dict[str, Any], answer: Completion,
        cost: float,
    ) -> None:
        """Maybe sample this call for its shadow route. O(1), never blocks."""
        ...

    async def aclose(self) -> None:
        """Stop sampling and finish (or abandon) the queued samples; the owner calls it."""
        ...
