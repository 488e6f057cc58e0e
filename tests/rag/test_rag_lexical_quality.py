"""Lexical (BM25) quality on a small fixed corpus, on SQLite (FTS5) and PostgreSQL (postings).

Guards the ranking itself, not just that BM25 returns something:

* a term repeated in the query weighs more (dropping that took CISI nDCG@10 from
  0.391 to 0.325);
* length normalisation and saturation use k1 = 1.2 and b = 0.75 with a real
  ``dl / avgdl`` (PostgreSQL once bound them as integers: k1 1, b 1, integer division);
* every score equals the textbook formula (FTS5's idf) computed here independently,
  and both backends give the same ranking.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from lockgate.rag.analysis import MAX_TERM_REPEAT, analyze, query_term_list
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR

ALL = Caller(all_access=True)

# Ingested in this order (chunk pks ascend with it): where a wrong scorer would tie,
# the pk order puts the wrong document first.
CORPUS = [
    ("banana-short", "zebra banana"),
    ("apple-short", "zebra apple"),
    ("apple-long", "apple apple apple kiwi kiwi lemon lemon mango mango quince"),
    ("banana-long", "banana kiwi lemon mango pear plum"),
    ("melon-long", "melon kiwi lemon pear plum zebra"),
    ("melon-short", "melon kiwi"),
    ("filler-1", "kiwi lemon mango pear plum quince grape olive fig date"),
    ("filler-2", "grape olive fig date kiwi lemon mango pear plum quince"),
]


def reference(query: str) -> list[tuple[str, float]]:
    """BM25 as FTS5 defines it (k1 1.2, b 0.75, idf log((N - n + .5) / (n + .5)) >= 1e-6),
    with the query's terms counted (capped like the product), best first (ties: id order)."""
    docs = {d: Counter(analyze(t)) for d, t in CORPUS}
    n_docs = len(docs)
    avgdl = sum(sum(c.values()) for c in docs.values()) / n_docs
    qtf = Counter(query_term_list(query))
    scores: dict[str, float] = {}
    for d, tc in docs.items():
        dl = sum(tc.values())
        s = 0.0
        for term, count in qtf.items():
            tf = tc.get(term, 0)
            if not tf:
                continue
            df = sum(1 for c in docs.values() if term in c)
            idf = max(math.log((n_docs - df + 0.5) / (df + 0.5)), 1e-6)
            s += count * idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
        if s > 0:
            scores[d] = s
    order = {d: i for i, (d, _) in enumerate(CORPUS)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


async def _ingest(service: RagService) -> None:
    rep = await service.ingest_documents(
        "fruit", [SourceDocument(doc_id=d, title="", text=t) for d, t in CORPUS],
        principal=OPERATOR)
    assert rep.chunks_written == len(CORPUS)


async def _bm25(service: RagService, query: str) -> list[tuple[str, float]]:
    res = await service.retrieve("fruit", query, ALL, mode="bm25", k=len(CORPUS))
    assert res.mode == "bm25"
    return [(h.doc_id, float(h.bm25 or 0.0)) for h in res.hits]


@pytest.mark.parametrize("query", [
    "apple apple banana",
    "banana apple",
    "melon",
    "kiwi melon",
    "zebra zebra zebra zebra zebra zebra melon",
    "quince lemon lemon olive",
])
async def test_bm25_scores_match_the_formula(service: RagService, query: str) -> None:
    await _ingest(service)
    got = await _bm25(service, query)
    want = dict(reference(query))
    assert want  # the query matches something
    assert {d for d, _ in got} == set(want)
    for d, score in got:
        assert score == pytest.approx(want[d], rel=1e-9, abs=1e-9), d
    scores = [s for _, s in got]  # best first (exact ties may differ in the last bit)
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(scores))


async def test_a_term_repeated_in_the_query_weighs_more(service: RagService) -> None:
    await _ingest(service)
    # apple and banana have the same df and the short documents the same length:
    # with distinct terms only they tie (and the banana document, ingested first, leads)
    got = [d for d, _ in await _bm25(service, "apple apple banana")]
    assert got.index("apple-short") < got.index("banana-short")
    got = [d for d, _ in await _bm25(service, "banana banana apple")]
    assert got.index("banana-short") < got.index("apple-short")


async def test_shorter_documents_win_below_the_average_length(service: RagService) -> None:
    await _ingest(service)
    # both below the average length: an integer dl / avgdl (0 for both) would tie them
    # and the longer one, ingested first, would lead
    got = await _bm25(service, "melon")
    assert [d for d, _ in got] == ["melon-short", "melon-long"]
    assert got[0][1] > got[1][1]


async def test_repeats_count_up_to_the_cap(service: RagService) -> None:
    await _ingest(service)
    capped = await _bm25(service, "zebra " * MAX_TERM_REPEAT)
    more = await _bm25(service, "zebra " * (MAX_TERM_REPEAT + 5))
    once = await _bm25(service, "zebra")
    assert capped == more
    assert capped[0][1] == pytest.approx(MAX_TERM_REPEAT * once[0][1], rel=1e-9)


def test_query_term_list() -> None:
    assert query_term_list("okapis eat leaves, okapis") == ["okapi", "okapi", "eat", "leav"]
    assert query_term_list("x " * 10) == ["x"] * MAX_TERM_REPEAT
    assert query_term_list("the of and") == []
