"""PostgreSQL BM25, before and after in one run: the round-one query vs today's.

    .venv/bin/python bench/rag_pg_lexical.py --db lgrag_scale_text_100000 [--queries 100]

Needs a database made by ``bench/rag_scale.py --backends postgres --reuse`` (its
collection ``scale``). Both queries run on the same tables, alternating, for the same
caller (a user in 4 groups) and the same three-term questions:

* ``join`` (round one): every posting joined to its chunk (for the length) and its
  document (for the ACL) before grouping;
* ``scan`` (lockgate.rag.lexical today): postings scored from the covering index
  ``ix_rag_postings_scan`` alone, ranked, then the ACL probed in rank order until k pass.

It checks that both return the same chunks in the same order with the same scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.rag_scale import CALLER, pct, queries  # noqa: E402
from lockgate.rag import bm25  # noqa: E402
from lockgate.rag.access import readable_where  # noqa: E402
from lockgate.rag.analysis import query_terms  # noqa: E402
from lockgate.rag.repository import RagStore  # noqa: E402
from lockgate.store.engine import create_engine  # noqa: E402

JOIN_SQL = (
    "WITH q AS (SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:ws AS float8[]))"
    " AS q(term, w))"
    " SELECT p.chunk_pk, SUM(q.w * p.tf * (:k1 + 1) / (p.tf + :k1 * (1 - :b + :b * c.n_terms"
    " / :avgdl))) AS s FROM rag_postings p JOIN q ON q.term = p.term"
    " JOIN rag_chunks c ON c.id = p.chunk_pk JOIN rag_documents d ON d.id = c.doc_pk"
    " WHERE p.collection_id = :c AND {where}"
    " GROUP BY p.chunk_pk ORDER BY s DESC, p.chunk_pk LIMIT :k"
)


async def run(db: str, nq: int, k: int, vacuum: bool) -> dict[str, Any]:
    from sqlalchemy import text

    engine = create_engine(f"postgresql://postgres@127.0.0.1:5432/{db}")
    store = RagStore(engine)
    coll = await store.get_collection("scale")
    assert coll is not None, "no collection 'scale': run bench/rag_scale.py --reuse first"
    version = await store.version(coll.id)
    principals = CALLER.principals()
    lat: dict[str, list[float]] = {"join": [], "scan": []}
    same = 0
    qs = queries("text", nq, seed=11)
    if vacuum:  # what autovacuum does after a bulk load: statistics and the visibility map
        import asyncpg

        c = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}")
        try:
            await c.execute("VACUUM ANALYZE rag_postings")
            await c.execute("VACUUM ANALYZE rag_documents")
        finally:
            await c.close()
    for q in qs:
        terms = query_terms(q)
        got: dict[str, list[tuple[int, float]]] = {}
        for variant in ("join", "scan"):
            t = time.perf_counter()
            if variant == "scan":
                got[variant] = await store.lexical_search(
                    coll.id, terms, principals=principals, filters=None,
                    exclude_doc_ids=None, k=k, version=version)
            else:
                params: dict[str, Any] = {}
                where, binds = readable_where(False, principals, None, None, params)
                async with engine.connect() as conn:
                    n, avgdl = await store.lexical.stats(conn, coll.id, version)
                    dfs = await store.lexical.document_frequencies(conn, coll.id, terms)
                    params.update(bm25.pg_score_params(bm25.query_weights(terms, n, dfs), avgdl))
                    params.update({"c": coll.id, "k": k})
                    rows = (await conn.execute(
                        text(JOIN_SQL.format(where=where)).bindparams(*binds), params)).all()
                got[variant] = [(int(r[0]), float(r[1])) for r in rows]
            lat[variant].append((time.perf_counter() - t) * 1000)
        a, b = got["join"], got["scan"]
        same += [p for p, _ in a] == [p for p, _ in b] and all(
            abs(x[1] - y[1]) < 1e-9 for x, y in zip(a, b, strict=True))
    await engine.dispose()
    out: dict[str, Any] = {"db": db, "queries": nq, "k": k, "identical_results": same}
    for v, xs in lat.items():
        out[v] = {"p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95),
                  "mean_ms": round(statistics.fmean(xs), 2)}
    out["speedup_p50"] = round(out["join"]["p50_ms"] / max(out["scan"]["p50_ms"], 1e-9), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=100, help="candidates (retrieval asks for 100)")
    ap.add_argument("--vacuum", action="store_true", help="VACUUM ANALYZE first")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.db, a.queries, a.k, a.vacuum))))


if __name__ == "__main__":
    main()
