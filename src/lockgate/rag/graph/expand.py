"""Query time: entity linking and k-hop expansion into passage scores and citable facts.

1. **Linking**: the question's names (the rule extractor on the question) and its word
   n-grams (1-5 words), normalised, are looked up among the collection's entities that
   the caller may see (:meth:`GraphStore.link`).
2. **Expansion**: relations touching the linked entities (hop 1), then relations touching
   the entities those reached (hop 2, ... up to ``hops``), each read through the ACL of the
   passage it came from. A fact reached from entity ``e`` scores
   ``reach(e) * bonus * (1 + 0.5 * overlap) / hop``: ``reach(e)`` is the best score of the
   path that reached ``e`` (1 for a linked entity), ``bonus`` is 2 when ``e`` is the fact's
   subject (the fact describes ``e``; "Lyon is a city in France" describes Lyon, "Ann was
   born in Lyon" describes Ann) and 1 otherwise, ``overlap`` counts question terms among the
   fact's predicate and far end (stemmed BM25 terms, the linked names' own terms left out).
   A fact is scored at the first hop that reaches it. So the path that follows the
   question's wording beats the many neighbours of a hub entity. At most ``per_hop`` facts
   are read per hop, ``max_facts`` kept.
3. **Passage scores**: each passage gets the best score of the facts extracted from it,
   divided by the best overall and squared (so in [0, 1], sharpened); the retriever adds
   ``weight`` times this to its own fused score (:func:`merge_graph_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.rag.access import Filters
from lockgate.rag.analysis import analyze
from lockgate.rag.graph.extract import RuleExtractor, normalize
from lockgate.rag.graph.store import FactRow, GraphStore

__all__ = ["GraphFact", "GraphResult", "expand", "linking_candidates", "merge_graph_scores"]

_TOKEN_SPLIT = " "


@dataclass(slots=True)
class GraphFact:
    id: int
    subject: str
    predicate: str
    object: str
    doc_id: str
    chunk_id: str
    chunk_pk: int
    evidence: str
    hop: int
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "predicate": self.predicate,
                "object": self.object, "doc_id": self.doc_id, "chunk_id": self.chunk_id,
                "evidence": self.evidence, "hop": self.hop, "score": round(self.score, 6)}

    def text(self) -> str:
        return f"{self.subject} — {self.predicate} — {self.object}"


@dataclass(slots=True)
class GraphResult:
    linked: list[str] = field(default_factory=list)
    facts: list[GraphFact] = field(default_factory=list)
    chunk_scores: dict[int, float] = field(default_factory=dict)


def linking_candidates(question: str, max_n: int = 5) -> list[str]:
    words = normalize(question).split(_TOKEN_SPLIT)
    out: set[str] = {normalize(e.name) for e in RuleExtractor().extract_sync(question).entities}
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            gram = " ".join(words[i:i + n])
            if n == 1 and (len(gram) < 3 or not analyze(gram)):
                continue
            out.add(gram)
    out.discard("")
    return sorted(out)[:2000]


async def expand(store: GraphStore, cid: int, question: str, *,
                 principals: Sequence[str] | None, filters: Filters | None = None,
                 exclude_doc_ids: Sequence[str] | None = None, hops: int = 2,
                 per_hop: int = 500, max_facts: int = 12) -> GraphResult:
    result = GraphResult()
    linked = await store.link(cid, linking_candidates(question), principals=principals,
                              filters=filters, exclude_doc_ids=exclude_doc_ids)
    if not linked:
        return result
    result.linked = [name for _, name in linked]
    # question terms that are not the linked names: what the path should match
    q_terms = set(analyze(question)) - {t for _, name in linked for t in analyze(name)}
    reach: dict[int, float] = {eid: 1.0 for eid, _ in linked}
    """entity -> best path score that reached it (linked entities: 1)."""
    frontier = dict(reach)
    best: dict[int, GraphFact] = {}
    for hop in range(1, hops + 1):
        if not frontier:
            break
        rows: list[FactRow] = await store.facts(
            cid, sorted(frontier), principals=principals, filters=filters,
            exclude_doc_ids=exclude_doc_ids, limit=per_hop)
        nxt: dict[int, float] = {}
        for r in rows:
            for here, far_id, far_name, bonus in (
                    (r.subject_id, r.object_id, r.object, 2.0),
                    (r.object_id, r.subject_id, r.subject, 1.0)):
                if here not in frontier:
                    continue
                overlap = len(q_terms & set(analyze(f"{r.predicate} {far_name}")))
                score = frontier[here] * bonus * (1.0 + 0.5 * overlap) / hop
                old = best.get(r.id)
                if old is not None and old.hop < hop:
                    continue  # scored at an earlier hop; not again from its other end
                if old is None or score > old.score:
                    best[r.id] = GraphFact(r.id, r.subject, r.predicate, r.object, r.doc_id,
                                           r.chunk_id, r.chunk_pk, r.evidence, hop, score)
                if far_id not in reach and score > nxt.get(far_id, 0.0):
                    nxt[far_id] = score
        reach.update(nxt)
        frontier = nxt
    facts = sorted(best.values(), key=lambda f: (-f.score, f.hop, f.id))
    top = facts[0].score if facts else 1.0
    for f in facts:
        s = (f.score / top) ** 2  # sharpened: a hub's many weak neighbours stay low
        if s > result.chunk_scores.get(f.chunk_pk, 0.0):
            result.chunk_scores[f.chunk_pk] = s
    result.facts = facts[:max_facts]
    return result


def merge_graph_scores(fused: dict[int, float], graph: dict[int, float],
                       weight: float) -> dict[int, float]:
    """``fused / max(fused) + weight * graph`` for every passage in either."""
    top = max(fused.values(), default=0.0)
    out = {pk: (v / top if top > 0 else 0.0) for pk, v in fused.items()}
    for pk, g in graph.items():
        out[pk] = out.get(pk, 0.0) + weight * g
    return out
