"""Metrics from pytrec_eval checked against hand-computed values, and BEIR file parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lockgate.rag.evaluation import compute_metrics, load_qrels, load_queries


def test_metrics_match_hand_computation() -> None:
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d5": 2, "d6": 1}, "q3": {"d9": 1}}
    run = {
        "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7},
        "q2": {"d6": 0.9, "d5": 0.5},
        # q3 retrieved nothing: it still counts, with zeros
    }
    m = compute_metrics(qrels, run, ks=(1, 5))
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg_q2 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert m["queries"] == 3
    assert m["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3, abs=1e-4)
    assert m["P@1"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-4)
    assert m["P@5"] == pytest.approx((2 / 5 + 2 / 5 + 0) / 3, abs=1e-4)
    assert m["R@1"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3, abs=1e-4)
    assert m["R@5"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-4)
    assert m["MRR@10"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-4)


def test_mrr_is_cut_at_ten() -> None:
    qrels = {"q": {"rel": 1}}
    run = {"q": {f"n{i}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.5}}
    assert compute_metrics(qrels, run)["MRR@10"] == 0.0
    run = {"q": {f"n{i}": 1.0 - i / 100 for i in range(3)} | {"rel": 0.5}}
    assert compute_metrics(qrels, run)["MRR@10"] == pytest.approx(0.25)


def test_beir_files(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text(
        '{"_id": "1", "text": "what?"}\n\n{"_id": "2", "text": "x"}\n'
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tA\t2\n1\tB\t1\n")
    assert load_queries(tmp_path / "q.jsonl") == {"1": "what?", "2": "x"}
    assert load_qrels(tmp_path / "qrels.tsv") == {"1": {"A": 2, "B": 1}}
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(ValueError, match="_id"):
        load_queries(tmp_path / "bad.jsonl")


async def test_evaluate_scores_only_the_given_queries(service: object) -> None:
    from lockgate.rag.evaluation import evaluate
    from lockgate.rag.service import RagService
    from lockgate.rag.types import SourceDocument
    from tests.rag.rag_support import OPERATOR

    assert isinstance(service, RagService)
    docs = [SourceDocument(doc_id=str(i), title=f"t{i}", text=f"topic{i} words here")
            for i in range(5)]
    await service.ingest_documents("ev", docs, principal=OPERATOR)
    qrels = {"a": {"1": 1}, "b": {"2": 1}, "c": {"3": 1}}
    m = await evaluate(service, "ev", {"a": "topic1", "b": "topic2"}, qrels, mode="bm25")
    assert m["queries"] == 2 and m["nDCG@10"] == 1.0 and m["MRR@10"] == 1.0
