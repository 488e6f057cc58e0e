"""The mining and knowledge-graph benches' parts at toy size (they must not rot)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bench.kg_rag_bench import CISI_DIR, build_cisi, build_registry
from bench.mining_bench import REFERENCE, plain_dfg, run_backend, synth

from lockgate.mining import mine


def test_synthetic_log_and_plain_dfg_agree() -> None:
    log = synth(5000)
    assert len(log) == 5000
    r = mine(log, reference=REFERENCE)
    plain = plain_dfg(log)
    assert sum(plain.values()) == sum(e["count"] for e in r.edges)
    assert r.conformance is not None and 0 < r.conformance.fitting_share < 1


def test_mining_bench_on_sqlite(tmp_path: Path) -> None:
    row = asyncio.run(run_backend(f"sqlite:///{tmp_path / 'm.db'}", synth(3000)))
    assert row["events"] == 3000 and row["total_s"] > 0


def test_kg_corpus_questions_point_at_real_pages() -> None:
    docs, qs = build_registry(60, 30)
    ids = {d.doc_id: d for d in docs}
    board = ("group:board",)
    for q in qs:
        (second,) = q.seconds
        assert q.first in ids and second in ids
        assert q.answer in ids[second].text  # the second page holds the answer
        company = second if second.startswith("company/") else q.first
        assert q.hidden == (ids[company].principals == board)
    assert any(q.hidden for q in qs) and not all(q.hidden for q in qs)


def test_kg_cisi_questions_bridge_through_a_shared_author() -> None:
    if not (CISI_DIR / "CISI.ALL").exists():  # the public corpus lives beside the repo
        pytest.skip(f"CISI corpus not at {CISI_DIR} (../shared/data/cisi of the checkout)")
    docs, qs = build_cisi(40)
    ids = {d.doc_id: d for d in docs}
    assert len(docs) == 1460 and len(qs) == 40
    for q in qs:
        authors = q.answer.split(", ")
        assert any(f"{a} wrote" in ids[q.first].text for a in authors)
        for other in q.seconds:  # every answer page is by one of the question page's authors
            assert other != q.first and any(f"{a} wrote" in ids[other].text for a in authors)
        assert ids[q.first].title in q.text
