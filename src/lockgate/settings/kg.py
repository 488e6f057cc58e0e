"""``knowledge_graph:``: entities and relations of RAG passages, used at query time.

Example::

    knowledge_graph:
      enabled: true
      extractor_model: local-chat   # extraction through the pipeline; unset = offline rules
      hops: 2                       # k-hop expansion from the entities a question names
      weight: 1.0                   # graph score added to the fused BM25/dense score
      max_facts: 12                 # facts returned (and cited as [G1]...) per question
"""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["KnowledgeGraphSettings"]


class KnowledgeGraphSettings(Strict):
    enabled: bool = False
    extractor_model: str | None = None
    hops: int = Field(2, ge=1, le=4)
    weight: float = Field(1.0, ge=0, le=10)
    max_facts: int = Field(12, ge=1, le=100)
