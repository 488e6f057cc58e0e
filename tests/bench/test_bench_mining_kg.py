"""The mining and knowledge-graph benches' parts at toy size (they must not rot)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.kg_rag_bench import build
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
    docs, qs = build(60, 30)
    ids = {d.doc_id: d for d in docs}
    board = ("group:board",)
    for q in qs:
        assert q.first in ids and q.second in ids
        assert q.answer in ids[q.second].text  # the second page holds the answer
        company = q.second if q.second.startswith("company/") else q.first
        assert q.hidden == (ids[company].principals == board)
    assert any(q.hidden for q in qs) and not all(q.hidden for q in qs)
