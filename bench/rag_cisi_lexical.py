"""CISI BM25 on both lexical backends: nDCG@10 and whether SQLite and PostgreSQL agree.

    .venv/bin/python bench/rag_cisi_lexical.py [--data DIR] [--backends sqlite,postgres]

Ingests the 1,460 CISI documents (title + abstract, as bench/rag_cisi.py converts
them) through ``RagService.ingest_documents`` without an embeddings model, runs the
76 judged queries in ``bm25`` mode (lockgate.rag.evaluation, pytrec_eval metrics) on
each backend (SQLite FTS5 in a temporary file, PostgreSQL in a fresh database that
is dropped afterwards), and compares the two backends' top-10 lists query by query.
No model is involved, so this is the quick check of lexical quality (the full
bm25/dense/hybrid table: bench/rag_cisi.py). ``--max-repeat`` changes how often a
repeated query term counts (1 = each distinct term once, as before this fix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.rag.rag_support import OPERATOR, FakePipeline  # noqa: E402

from bench.rag_cisi import convert  # noqa: E402
from lockgate.rag.evaluation import (  # noqa: E402
    compute_metrics,
    load_qrels,
    load_queries,
    run_queries,
)
from lockgate.rag.loaders import load_file  # noqa: E402
from lockgate.rag.repository import RagStore  # noqa: E402
from lockgate.rag.service import RagService, RagSettings  # noqa: E402
from lockgate.store.engine import create_engine  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def one_backend(backend: str, beir: Path, prune_min: int | None = None
                      ) -> dict[str, Any]:
    import asyncpg

    dbname = None
    tmp = tempfile.TemporaryDirectory()
    if backend == "sqlite":
        url = f"sqlite:///{tmp.name}/cisi.db"
    else:
        dbname = "lgragpg_cisi_" + uuid.uuid4().hex[:8]
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{dbname}"')
        await admin.close()
        url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    try:
        engine = create_engine(url)
        svc = RagService(await RagStore.migrated(engine), FakePipeline(),
                         RagSettings(embed_model=None))
        if prune_min is not None:
            svc.store.lexical.prune_min_postings = prune_min
        docs = load_file(beir / "corpus.jsonl", beir)
        t0 = time.perf_counter()
        await svc.ingest_documents("cisi", docs, principal=OPERATOR)
        ingest_s = time.perf_counter() - t0
        queries = load_queries(beir / "queries.jsonl")
        qrels = load_qrels(beir / "qrels.tsv")
        er = await run_queries(svc, "cisi", queries, mode="bm25")
        metrics = compute_metrics({q: qrels[q] for q in queries if q in qrels}, er.run,
                                  (10, 100))
        await svc.aclose()
        await engine.dispose()
        top10 = {q: list(d)[:10] for q, d in er.run.items()}
        out = {"backend": backend, "ingest_s": round(ingest_s, 1),
               "nDCG@10": round(metrics["nDCG@10"], 4), "R@100": round(metrics["R@100"], 4),
               "top10": top10}
        if svc.store.lexical.outcomes:  # PostgreSQL: how the top-k searches ran
            out["bm25_paths"] = dict(svc.store.lexical.outcomes)
        return out
    finally:
        tmp.cleanup()
        if dbname:
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await admin.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cisi")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lockgate-rag-cisi-lexical"))
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--max-repeat", type=int, default=None,
                    help="count a repeated query term at most this often (1 = distinct "
                         "terms only; default: lockgate.rag.analysis.MAX_TERM_REPEAT)")
    ap.add_argument("--prune-min-postings", type=int, default=None,
                    help="PostgreSQL: try BM25 pruning from this many left-out postings "
                         "(0: on every query; default: LexicalIndex.prune_min_postings)")
    args = ap.parse_args()
    if args.max_repeat is not None:
        import functools

        import lockgate.rag.retrieval as retrieval
        from lockgate.rag.analysis import query_term_list

        retrieval.query_term_list = functools.partial(  # type: ignore[attr-defined,assignment]
            query_term_list, max_repeat=args.max_repeat)
    beir = args.out / "beir"
    convert(args.data, beir)
    results = [await one_backend(b, beir, args.prune_min_postings)
               for b in args.backends.split(",")]
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "top10"}), flush=True)
    if len(results) == 2:
        a, b = results[0]["top10"], results[1]["top10"]
        same = sum(a[q] == b.get(q) for q in a)
        print(json.dumps({"identical_top10_queries": f"{same}/{len(a)}"}))


if __name__ == "__main__":
    asyncio.run(main())
