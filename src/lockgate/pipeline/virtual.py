"""Virtual deployments: public models answered by a lockgate feature instead of a provider.

A feature registers one under a name prefix with the router, e.g. RAG as ``rag/``
(``model: "rag/handbook"``). The pipeline routes such a model like any other —
authentication, the key's allowed models, task routing, the kill switch, metrics
and the audit row apply — and then hands the whole :class:`~lockgate.pipeline.call.Call`
to the feature, which makes its own model calls back through the pipeline (those are
governed one by one: limits, budgets, guards, their own audit rows with their usage).

So the outer call is *not* charged: no limits or budget reservation, no response
cache, no output contract, no shadow mirror, and its audit row carries zero tokens
and zero cost (the inner calls carry them; summing both would count them twice).

The pipeline defines this protocol; features implement it. The pipeline never
imports a feature.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from lockgate.providers.base import Completion, StreamChunk

if TYPE_CHECKING:
    from lockgate.pipeline.call import Call, Principal

__all__ = ["VirtualDeployment"]


class VirtualDeployment(Protocol):
    """A family of public models (``<prefix><name>``) served by a feature."""

    prefix: str
    """e.g. ``"rag/"``; the router sends every model starting with it here."""

    def grantable(self, model: str) -> bool:
        """May a key's ``allowed_models`` name ``model``? (``family/*`` or a valid name,
        whether or not it exists yet.)"""
        ...

    def known(self, model: str) -> bool:
        """Is ``model`` seen to exist (cheap, no I/O)? Only known names become metric
        labels, so a client cannot grow ``/metrics`` with made-up names. Default: False."""
        ...

    def deployment_id(self, model: str) -> str:
        """What ``x-lockgate-deployment`` and the audit row name for ``model``."""
        ...

    async def models(self, principal: Principal) -> list[str]:
        """The public models of this family that exist now (for ``/v1/models``)."""
        ...

    async def chat(self, call: Call) -> Completion:
        """A ``chat.completion`` for ``call`` (``call.model`` starts with ``prefix``).

        Raises :class:`~lockgate.errors.GatewayError` subclasses for client errors
        (unknown name: 404, unusable input: 400).
        """
        ...

    async def chat_stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        """Open the answer as ``chat.completion.chunk`` dicts.

        Awaiting it does the work that can fail with a client error (lookup,
        retrieval, admission of the inner calls), so those errors raise here,
        before any byte is sent; later failures raise from the iterator.
        """
        ...
