"""Query time: entity linking and k-hop expansion into passage scores and citable facts.

1. **Linking**: the question's names (the rule extractor on the question) and its word
   n-grams (1-5 words), normalised, are looked up among the collection's entities that
   the caller may see (:meth:`GraphStore.link`). Longest match wins: a linked name that
   lies inside another linked name of the question ("information systems" inside "design
   of information systems") is dropped. A linked entity starts with
   ``prior = specificity * (1 if the question names it, else 0.5)``: ``specificity =
   1 / (1 + ln(mentions))`` falls as more passages mention the entity, so a hub
   ("information", "library") that any question word can link to weighs little next to
   a rare name; "names it" means the extractor finds it as a name in the question or it
   has several words (a lower-case common word the question merely contains is weaker).
2. **Expansion**: relations touching the linked entities (hop 1), then relations touching
   the entities those reached (hop 2, ... up to ``hops``), each read through the ACL of the
   passage it came from, the most strongly reached entities first (in groups of
   :data:`GROUP`, at most :data:`MAX_FRONTIER` per hop) so a hub's hundreds of facts cannot
   crowd out the facts of the entity the question is about. A fact reached from entity
   ``e`` scores ``reach(e) * bonus * (1 + 0.5 * overlap) / hop``: ``reach(e)`` is the best
   score of the path that reached ``e`` (the prior for a linked entity), ``bonus`` is 2
   when ``e`` is the fact's
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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.rag.access import Filters
from lockgate.rag.analysis import analyze
from lockgate.rag.graph.extract import RuleExtractor, normalize
from lockgate.rag.graph.store import FactRow, GraphStore, LinkedEntity

__all__ = ["GraphFact", "GraphResult", "expand", "linking_candidates", "merge_graph_scores"]

_TOKEN_SPLIT = " "
GROUP = 16
"""Frontier entities whose facts are read in one query."""
MAX_FRONTIER = 64
"""Entities expanded per hop (the most strongly reached)."""


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


def question_names(question: str) -> set[str]:
    """The normalised names the rule extractor finds in the question."""
    return {normalize(e.name) for e in RuleExtractor().extract_sync(question).entities}


def linking_candidates(question: str, max_n: int = 5,
                       names: set[str] | None = None) -> list[str]:
    """The question's names (``names`` when the caller has them) and its word n-grams."""
    words = normalize(question).split(_TOKEN_SPLIT)
    out: set[str] = set(question_names(question) if names is None else names)
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
    names = question_names(question)
    linked = longest_matches(await store.link(
        cid, linking_candidates(question, names=names), principals=principals,
        filters=filters, exclude_doc_ids=exclude_doc_ids))
    if not linked:
        return result
    result.linked = [e.name for e in linked]
    # question terms that are not the linked names: what the path should match
    q_terms = set(analyze(question)) - {t for e in linked for t in analyze(e.name)}
    reach: dict[int, float] = {e.id: link_prior(e, names) for e in linked}
    """entity -> best path score that reached it (linked entities: their prior)."""
    frontier = dict(reach)
    best: dict[int, GraphFact] = {}
    for hop in range(1, hops + 1):
        if not frontier:
            break
        rows = await _facts_strongest_first(
            store, cid, frontier, principals=principals, filters=filters,
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


def longest_matches(linked: Sequence[LinkedEntity]) -> list[LinkedEntity]:
    """Drop a linked entity whose name lies inside another linked entity's name."""
    spans = [(e, f" {e.norm} ") for e in linked]
    return [e for e, span in spans
            if not any(other.norm != e.norm and span in f" {other.norm} "
                       for other, _ in spans)]


def link_prior(entity: LinkedEntity, question_names: set[str]) -> float:
    specificity = 1.0 / (1.0 + math.log(max(1, entity.mentions)))
    named = entity.norm in question_names or " " in entity.norm
    return specificity * (1.0 if named else 0.5)


async def _facts_strongest_first(store: GraphStore, cid: int, frontier: dict[int, float], *,
                                 principals: Sequence[str] | None, filters: Filters | None,
                                 exclude_doc_ids: Sequence[str] | None,
                                 limit: int) -> list[FactRow]:
    order = sorted(frontier, key=lambda eid: (-frontier[eid], eid))[:MAX_FRONTIER]
    rows: list[FactRow] = []
    seen: set[int] = set()
    for i in range(0, len(order), GROUP):
        if len(rows) >= limit:
            break
        for r in await store.facts(cid, order[i:i + GROUP], principals=principals,
                                   filters=filters, exclude_doc_ids=exclude_doc_ids,
                                   limit=limit - len(rows)):
            if r.id not in seen:
                seen.add(r.id)
                rows.append(r)
    return rows


def merge_graph_scores(fused: dict[int, float], graph: dict[int, float],
                       weight: float) -> dict[int, float]:
    """``fused / max(fused) + weight * graph`` for every passage in either."""
    top = max(fused.values(), default=0.0)
    out = {pk: (v / top if top > 0 else 0.0) for pk, v in fused.items()}
    for pk, g in graph.items():
        out[pk] = out.get(pk, 0.0) + weight * g
    return out
