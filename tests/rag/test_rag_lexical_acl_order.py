"""BM25 with an ACL returns exactly the best readable chunks: the all-access ranking
filtered to what the caller may read, cut at k (both backends; on PostgreSQL the ACL is
checked in rank order after scoring from the postings index alone)."""

from __future__ import annotations

import random

import pytest

from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR


@pytest.mark.parametrize("window", [1000, 1])
async def test_acl_filtered_bm25_is_the_filtered_full_ranking(
    service: RagService, window: int
) -> None:
    """``window`` 1: the first ranked window (k rows; SQLite and PostgreSQL) is too narrow for
    selective callers, so the widening path runs too."""
    service.store.lexical.first_window = window
    service.store.lexical.pg_first_window = window
    rng = random.Random(5)
    vocab = [f"v{i}" for i in range(120)]
    docs = []
    for i in range(400):
        acl = rng.choice([("public",), ("group:a",), ("group:b",), ("user:x",), ("group:c",)])
        docs.append(SourceDocument(doc_id=f"d{i}", text=" ".join(rng.choices(vocab, k=30)),
                                   principals=acl))
    await service.store.create_collection("lex", None)
    await service.ingest_documents("lex", docs, principal=OPERATOR)
    acl_of = {d.doc_id: set(d.principals) for d in docs}
    for caller in (Caller(groups=("a",)), Caller(user_id="x", groups=("b", "c")), Caller()):
        allowed = set(caller.principals())
        for _ in range(10):
            q = " ".join(rng.sample(vocab[:40], 3))
            full = await service.retrieve("lex", q, Caller(all_access=True), mode="bm25",
                                          k=400, candidates=400)
            mine = await service.retrieve("lex", q, caller, mode="bm25", k=15, candidates=15)
            want = [h for h in full.hits if acl_of[h.doc_id] & allowed][:15]
            assert [h.doc_id for h in mine.hits] == [h.doc_id for h in want]
            assert [round(h.score, 9) for h in mine.hits] == [round(h.score, 9) for h in want]
