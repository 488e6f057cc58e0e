"""The one path every model call takes. See :class:`Pipeline`.

This is the surface features (RAG, jobs, events, shadow, agents) use: they build a
:class:`Call`, hand it to :class:`Pipeline`, and read the answer types below. They
never import a provider module.
"""

from lockgate.pipeline.call import Call, EndUser, Principal, UsageRecord
from lockgate.pipeline.contract_repair import contract_for
from lockgate.pipeline.facts import CallFacts, Result, StreamResult
from lockgate.pipeline.pipeline import Controls, Pipeline
from lockgate.pipeline.quotas import scopes_for
from lockgate.pipeline.virtual import VirtualDeployment
from lockgate.providers.base import Completion, StreamChunk, Usage

__all__ = [
    "Call",
    "CallFacts",
    "Completion",
    "Controls",
    "EndUser",
    "Pipeline",
    "Principal",
    "Result",
    "StreamChunk",
    "StreamResult",
    "Usage",
    "UsageRecord",
    "VirtualDeployment",
    "contract_for",
    "scopes_for",
]
