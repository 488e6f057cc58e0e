"""Retrieval evaluation (BEIR formats) with pytrec_eval, and refusal-threshold calibration.

* ``load_queries``: BEIR ``queries.jsonl`` (``_id``, ``text``);
* ``load_qrels``: BEIR ``qrels.tsv`` (``query-id corpus-id score``, header line,
  graded scores allowed); only queries with a judgement are evaluated;
* ``compute_metrics``: P@k, R@k, nDCG@10, MRR@10 from pytrec_eval (trec_eval's
  own code): ``P_k``, ``recall_k``, ``ndcg_cut_10``; MRR@10 is trec_eval's
  ``recip_rank`` on the run cut to its top 10;
* ``evaluate``: runs each query through :meth:`RagService.retrieve` (operator
  access, so the ACL does not hide judged documents), chunk hits folded into
  documents by their best chunk;
* ``calibrate``: per query, the confidence with the collection as is
  (answerable) and with the query's judged documents excluded (a stand-in for
  "the gold documents were removed"); the threshold maximising balanced
  accuracy between the two is returned.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lockgate.pipeline.call import Principal
from lockgate.rag.retrieval import Fusion
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, Mode

__all__ = [
    "DEFAULT_KS",
    "Calibration",
    "calibrate",
    "compute_metrics",
    "evaluate",
    "load_qrels",
    "load_queries",
]

DEFAULT_KS = (1, 5, 10, 100)
OPERATOR = Caller(all_access=True)


def load_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from exc
        if not isinstance(rec, dict) or "_id" not in rec or "text" not in rec:
            raise ValueError(f"{path}:{lineno}: a BEIR query needs _id and text")
        out[str(rec["_id"])] = str(rec["text"])
    return out


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not line.strip():
            continue
        if lineno == 1 and not parts[-1].lstrip("-").isdigit():
            continue  # header
        if len(parts) < 3:
            raise ValueError(f"{path}:{lineno}: expected query-id, corpus-id, score")
        qid, did, score = parts[0], parts[1], int(float(parts[2]))
        out.setdefault(qid, {})[did] = score
    return out


def compute_metrics(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """Mean metrics over the judged queries (a judged query missing from the run scores 0)."""
    import pytrec_eval

    judged = {q: r for q, r in qrels.items() if r}
    full_run = {q: dict(run.get(q, {})) or {"__none__": 0.0} for q in judged}
    measures = {f"P.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}",
                "ndcg_cut.10"}
    per_q = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(full_run)
    cut = {
        q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        for q, docs in full_run.items()
    }
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut)
    n = len(judged)

    def mean(key: str, table: dict[str, dict[str, float]]) -> float:
        return round(sum(table[q].get(key, 0.0) for q in judged) / n, 4) if n else 0.0

    out: dict[str, Any] = {"queries": n}
    for k in ks:
        out[f"P@{k}"] = mean(f"P_{k}", per_q)
    for k in ks:
        out[f"R@{k}"] = mean(f"recall_{k}", per_q)
    out["nDCG@10"] = mean("ndcg_cut_10", per_q)
    out["MRR@10"] = mean("recip_rank", rr)
    return out


@dataclass(slots=True)
class EvalRun:
    run: dict[str, dict[str, float]]
    latencies_ms: list[float]
    notes: list[str] = field(default_factory=list)


async def run_queries(
    svc: RagService,
    collection: str,
    queries: dict[str, str],
    *,
    mode: Mode,
    depth: int = 100,
    fusion: Fusion | None = None,
    alpha: float | None = None,
    principal: Principal | None = None,
) -> EvalRun:
    run: dict[str, dict[str, float]] = {}
    lat: list[float] = []
    notes: set[str] = set()
    for qid, text in queries.items():
        t0 = time.perf_counter()
        res = await svc.retrieve(collection, text, OPERATOR, mode=mode, k=depth * 3,
                                 candidates=max(depth * 3, 100), fusion=fusion, alpha=alpha,
                                 principal=principal)
        lat.append((time.perf_counter() - t0) * 1000)
        if res.note:
            notes.add(res.note)
        docs: dict[str, float] = {}
        for h in res.hits:
            if h.doc_id not in docs:
                docs[h.doc_id] = h.score
            if len(docs) >= depth:
                break
        run[qid] = docs
    return EvalRun(run, lat, sorted(notes))


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 2)


async def evaluate(
    svc: RagService,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    mode: Mode = "hybrid",
    fusion: Fusion | None = None,
    alpha: float | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    principal: Principal | None = None,
) -> dict[str, Any]:
    """Metrics for one mode; ``principal`` is whom the query embeddings are charged to."""
    judged = {q: t for q, t in queries.items() if qrels.get(q)}
    er = await run_queries(svc, collection, judged, mode=mode, depth=max(ks), fusion=fusion,
                           alpha=alpha, principal=principal)
    out = compute_metrics({q: qrels[q] for q in judged}, er.run, ks)
    out["mode"] = mode
    if er.notes:
        out["mode"] = "bm25"
        out["mode_note"] = "; ".join(er.notes)
    elif mode == "hybrid":
        out["fusion"] = fusion or svc.settings.fusion
        if (fusion or svc.settings.fusion) == "convex":
            out["alpha"] = svc.settings.alpha if alpha is None else alpha
    out["latency_ms_p50"] = _pct(er.latencies_ms, 50)
    out["latency_ms_p95"] = _pct(er.latencies_ms, 95)
    return out


@dataclass(slots=True)
class Calibration:
    threshold: float
    kind: str
    balanced_accuracy: float
    answerable_mean: float
    unanswerable_mean: float
    queries: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 4),
            "confidence_kind": self.kind,
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "answerable_mean_confidence": round(self.answerable_mean, 4),
            "unanswerable_mean_confidence": round(self.unanswerable_mean, 4),
            "queries": self.queries,
        }


async def calibrate(
    svc: RagService,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    mode: Mode | None = None,
    principal: Principal | None = None,
) -> Calibration:
    pos: list[float] = []
    neg: list[float] = []
    kind = "none"
    for qid, text in queries.items():
        gold = [d for d, s in qrels.get(qid, {}).items() if s > 0]
        if not gold:
            continue
        a = await svc.retrieve(collection, text, OPERATOR, mode=mode, k=5, principal=principal)
        b = await svc.retrieve(collection, text, OPERATOR, mode=mode, k=5, exclude_doc_ids=gold,
                               principal=principal)
        kind = a.confidence_kind
        pos.append(a.confidence or 0.0)
        neg.append(b.confidence or 0.0)
    if not pos:
        raise ValueError("no judged queries to calibrate on")
    best = (0.0, 0.0)
    for t in sorted(set(pos + neg)):
        tpr = sum(1 for v in pos if v >= t) / len(pos)
        tnr = sum(1 for v in neg if v < t) / len(neg)
        bacc = (tpr + tnr) / 2
        if bacc > best[0]:
            best = (bacc, t)
    return Calibration(best[1], kind, best[0], statistics.fmean(pos), statistics.fmean(neg),
                       len(pos))
