"""RAG at scale: ingest chunks/s and hybrid/BM25/dense p50/p95 up to 1,000,000 chunks.

    .venv/bin/python bench/rag_scale.py --sizes 10000,100000 --backends sqlite,postgres
    .venv/bin/python bench/rag_scale.py --sizes 1000000 --backends sqlite --reuse
    .venv/bin/python bench/rag_scale.py --sizes 100000 --backends postgres \
        --pg-db lgragpg_100k --no-ingest --bm25-ab   # pruned vs exhaustive PostgreSQL BM25

What it measures: the store, the lexical index, the ACL, the dense index (HNSW graph
above ``--ann-min-rows``) and fusion, through ``RagService`` (the same code the
HTTP routes and the CLI run), not the embedding model. How the data is made:

* embeddings come from a stand-in pipeline that hashes each analysed term into
  384 dimensions (as fast as a lookup): precomputed-like vectors, so the scale part
  does not wait on the real model (its speed and quality: bench/rag_cisi.py and
  bench/rag_embed_speed.py);
* documents are synthetic, one chunk each. ``--corpus text`` (default): a
  50,000-word vocabulary with Zipf frequencies (s=1.07, like English), 80 index terms
  per chunk, queries of 3 terms drawn from ranks 100-5,000 (what survives stop-word
  removal in real questions). ``--corpus zipf2k``: the round-one bench (2,000 words,
  60 per chunk, query terms from ranks 5-400: each query matches most of the corpus);
* ACLs: 20% public, 50% over 50 groups, 30% over 500 users. The caller is a user in
  4 groups (about 24% of the chunks readable); ``cold_first_query_ms`` is the first
  query of another caller in 3 other groups (its principal bitmaps not yet built).

Each query starts without cached term statistics (the lexical index's per-version
cache is dropped before every query), as a query seen the first time. ``--bm25-ab``
(PostgreSQL) runs every bm25 and hybrid query three times, in rotating order: with BM25
pruning, with the exhaustive query, and with the query before pruning (``legacy``), and
counts identical answers and how the pruned searches ran (``bm25_paths``).

``dense_recall@10`` compares the dense index's answer with exact search (NumPy over
every readable row) for the same queries and caller. Numbers are from one run on a
shared 2-core machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import tests.rag.rag_support as support  # noqa: E402
from tests.rag.rag_support import OPERATOR, FakePipeline, fake_vector  # noqa: E402

from lockgate.pipeline import Call, Completion, Usage  # noqa: E402
from lockgate.rag import bm25, pg_lexical  # noqa: E402
from lockgate.rag.analysis import analyze  # noqa: E402
from lockgate.rag.dense import DenseOptions  # noqa: E402
from lockgate.rag.repository import RagStore  # noqa: E402
from lockgate.rag.service import RagService, RagSettings  # noqa: E402
from lockgate.rag.types import Caller, SourceDocument  # noqa: E402
from lockgate.store.engine import create_engine  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CORPORA = {
    # vocabulary, zipf exponent, terms per chunk, query term ranks
    "text": (50_000, 1.07, 80, (100, 5_000)),
    "zipf2k": (2_000, 1.0, 60, (5, 400)),
}
CALLER = Caller(user_id="u7", groups=("g3", "g11", "g27", "g40"))
COLD_CALLER = Caller(user_id="u8", groups=("g5", "g6", "g7"))


class StandIn(FakePipeline):
    """The tests' stand-in embeddings (:func:`tests.rag.rag_support.fake_vector`, the same
    vectors bit for bit) with each term's hash cached and the vectors sent as base64
    float32, as OpenAI's ``encoding_format: base64`` does: the bench's own CPU per chunk
    is then a small part of the ingest it measures."""

    def __init__(self) -> None:
        super().__init__()
        self._slots: dict[str, tuple[int, float]] = {}

    def _slot(self, term: str) -> tuple[int, float]:
        got = self._slots.get(term)
        if got is None:
            h = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")
            got = self._slots[term] = (h % support.DIM, 1.0 if (h >> 16) & 1 else -1.0)
        return got

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(support.DIM, dtype=np.float32)
        for term in analyze(text):
            i, sign = self._slot(term)
            v[i] += sign
        n = float(np.linalg.norm(v))
        if n == 0:
            v[0] = 1.0
            n = 1.0
        return v / n

    async def embeddings(self, call: Call) -> Completion:
        texts = call.body["input"]
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(self.vector(t).astype("<f4").tobytes()).decode()}
                for i, t in enumerate(texts)]
        n = sum(len(t.split()) for t in texts)
        return Completion(body={"object": "list", "data": data,
                                "usage": {"prompt_tokens": n, "total_tokens": n}},
                          usage=Usage(prompt_tokens=n))


def documents(n: int, corpus: str, seed: int = 1, batch: int = 20_000
              ) -> Iterator[list[SourceDocument]]:
    size, s, per, _ = CORPORA[corpus]
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, size + 1) ** s
    p /= p.sum()
    for start in range(0, n, batch):
        m = min(batch, n - start)
        words = nrng.choice(size, size=(m, per), p=p)
        docs = []
        for i in range(m):
            r = rng.random()
            acl: tuple[str, ...]
            if r < 0.2:
                acl = ("public",)
            elif r < 0.7:
                acl = (f"group:g{rng.randrange(50)}",)
            else:
                acl = (f"user:u{rng.randrange(500)}",)
            text = " ".join(f"w{w}" for w in words[i])
            docs.append(SourceDocument(doc_id=f"d{start + i}", title="", text=text,
                                       principals=acl))
        yield docs


def queries(corpus: str, n: int, seed: int = 2) -> list[str]:
    lo, hi = CORPORA[corpus][3]
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(lo, hi)}" for _ in range(3)) for _ in range(n)]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 2)


async def open_db(backend: str, n: int, corpus: str, reuse: bool,
                  pg_db: str | None = None) -> tuple[Any, str | None]:
    if backend == "sqlite":
        path = Path(f"/tmp/lockgate-rag-scale-{corpus}-{n}.db")
        if not reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return create_engine(f"sqlite:///{path}"), None
    import asyncpg

    name = pg_db or (f"lgrag_scale_{corpus}_{n}" if reuse
                     else "lgrag_bench_" + uuid.uuid4().hex[:8])
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return create_engine(f"postgresql://postgres@127.0.0.1:5432/{name}"), (
        None if reuse or pg_db else name)


async def drop_db(name: str | None) -> None:
    if not name:
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


LEGACY_SQL = (
    "WITH q AS (SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:ws AS float8[]))"
    " AS q(term, w)),"
    f" s AS MATERIALIZED (SELECT p.chunk_pk, p.doc_pk, SUM({bm25.PG_SCORE_SQL}) AS s"
    " FROM rag_postings p JOIN q ON q.term = p.term WHERE p.collection_id = :c"
    " GROUP BY p.chunk_pk, p.doc_pk ORDER BY s DESC, p.chunk_pk)"
    " SELECT s.chunk_pk, s.s FROM s WHERE EXISTS (SELECT 1 FROM rag_documents d"
    " WHERE d.id = s.doc_pk AND {where} OFFSET 0) LIMIT :k"
)
"""The PostgreSQL BM25 query before pruning (main at 72f4e19): float sums, every scored
chunk sorted, no ranked window."""


async def legacy_exhaustive(conn: Any, weights: Any, avgdl: float, *, where: str, binds: Any,
                            params: dict[str, Any], window: int = 0) -> list[tuple[int, float]]:
    from sqlalchemy import text

    p = {**params, **bm25.pg_score_params(weights, avgdl)}
    rows = (await conn.execute(text(LEGACY_SQL.format(where=where)).bindparams(*binds),
                               p)).all()
    out = [(int(r[0]), float(r[1])) for r in rows]
    out.sort(key=lambda r: (-r[1], r[0]))
    return out


async def timed_queries(svc: RagService, mode: str, qs: list[str], caller: Caller,
                        ab: bool = False) -> dict[str, Any]:
    """p50/p95 of ``mode`` over ``qs``. The lexical index's term statistics are dropped
    before every query (each query pays for its own, as a query seen the first time).

    ``ab`` (PostgreSQL): each query runs four times, in rotating order: pruned BM25 (the
    product), the same with each term's statistics counted from its postings as before
    migration 0019 (``pruned_scan``: :func:`lockgate.rag.pg_term_stats.recount` instead
    of the kept rows), the exhaustive query (``exhaustive``) and the query before
    pruning (``legacy``, :data:`LEGACY_SQL`, with the statistics scan it had); the pruned
    run's numbers first, how the pruned searches ran, and how many answers were
    identical to the exhaustive one (legacy's float sums may differ in the last bits, so
    it is only timed)."""
    # imported here: bench/rag_pg_ingest.py loads this module's corpus under older sources
    from lockgate.rag import pg_term_stats

    lex = svc.store.lexical
    variants = ("pruned", "pruned_scan", "exhaustive", "legacy") if ab else ("product",)
    lat: dict[str, list[float]] = {v: [] for v in variants}
    short = identical = 0
    was = lex.pg_pruning
    before = Counter(lex.outcomes)
    real_exhaustive = pg_lexical.exhaustive
    real_read = pg_term_stats.read
    try:
        for i, q in enumerate(qs):
            got: dict[str, list[tuple[str, float]]] = {}
            r = i % len(variants)
            for v in variants[r:] + variants[:r]:
                lex.pg_pruning = was if v == "product" else v.startswith("pruned")
                pg_lexical.exhaustive = (  # type: ignore[assignment]
                    legacy_exhaustive if v == "legacy" else real_exhaustive)
                pg_term_stats.read = (  # type: ignore[assignment]
                    pg_term_stats.recount if v in ("pruned_scan", "legacy") else real_read)
                lex.clear_term_cache()
                t = time.perf_counter()
                res = await svc.retrieve("scale", q, caller, mode=mode,  # type: ignore[arg-type]
                                         k=10)
                lat[v].append((time.perf_counter() - t) * 1000)
                got[v] = [(h.doc_id, h.score) for h in res.hits]
                short += v == variants[0] and len(res.hits) < 10
            identical += ab and got["pruned"] == got["exhaustive"]
    finally:
        pg_lexical.exhaustive = real_exhaustive  # type: ignore[assignment]
        pg_term_stats.read = real_read  # type: ignore[assignment]
        lex.pg_pruning = was

    def stats(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95),
                "mean_ms": round(statistics.fmean(xs), 2)}

    out: dict[str, Any] = {**stats(lat[variants[0]]), "short_results": short}
    paths = Counter(lex.outcomes) - before
    if paths:
        out["bm25_paths"] = dict(paths)
    if ab:
        out["pruned_scan"] = stats(lat["pruned_scan"])
        out["exhaustive"] = stats(lat["exhaustive"])
        out["legacy"] = stats(lat["legacy"])
        out["identical_results"] = identical
    return out


async def vacuum_analyze(engine: Any) -> None:
    """VACUUM ANALYZE the RAG tables (PostgreSQL): fresh statistics and visibility map, as
    autovacuum leaves them some time after a bulk ingest."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("rag_documents", "rag_doc_principals", "rag_chunks", "rag_postings",
                      "rag_term_stats"):
            await conn.exec_driver_sql(f"VACUUM ANALYZE {table}")


async def ingest_slice(n: int, corpus: str, pg_db: str, part: int, parts: int) -> None:
    """Worker of ``--workers``: ingest batches part, part + parts, ... and print the counts."""
    support.DIM = 384
    engine, _ = await open_db("postgres", n, corpus, True, pg_db)
    svc = RagService(await RagStore.migrated(engine), StandIn(),
                     RagSettings(embed_model="embed"))
    written = unchanged = 0
    for i, batch in enumerate(documents(n, corpus)):
        if i % parts == part:
            rep = await svc.ingest_documents("scale", batch, principal=OPERATOR)
            written += rep.chunks_written
            unchanged += rep.unchanged
    await svc.aclose()
    await engine.dispose()
    print(json.dumps({"written": written, "unchanged": unchanged}))


async def run(n: int, backend: str, nq: int, corpus: str, reuse: bool,
              ann_min_rows: int, index_dir: Path | None, pg_db: str | None = None,
              vacuum: bool = False, workers: int = 1, skip_ingest: bool = False,
              ab: bool = False) -> dict[str, Any]:
    support.DIM = 384
    engine, dbname = await open_db(backend, n, corpus, reuse, pg_db)
    opts = DenseOptions(ann_min_rows=ann_min_rows, index_dir=index_dir)
    svc = RagService(await RagStore.migrated(engine), StandIn(),
                     RagSettings(embed_model="embed"), dense=opts)
    out: dict[str, Any] = {"backend": backend, "corpus": corpus}
    t0 = time.perf_counter()
    written = unchanged = 0
    if workers > 1:  # processes ingesting every workers-th batch into the same collection
        await svc.collection("scale", create=True)
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--sizes", str(n), "--corpus", corpus,
             "--pg-db", str(pg_db), "--slice", f"{i}/{workers}"], stdout=subprocess.PIPE)
            for i in range(workers)]
        for p in procs:
            got = json.loads((p.communicate()[0] or b"{}").decode() or "{}")
            if p.returncode != 0:
                raise SystemExit(f"ingest worker failed ({p.returncode})")
            written += got["written"]
            unchanged += got["unchanged"]
        out["ingest_workers"] = workers
    elif not skip_ingest:
        for batch in documents(n, corpus):
            rep = await svc.ingest_documents("scale", batch, principal=OPERATOR)
            written += rep.chunks_written
            unchanged += rep.unchanged
    ingest_s = time.perf_counter() - t0
    out["chunks"] = written + unchanged
    if skip_ingest:
        out["chunks"] = (await svc.store.status((await svc.collection("scale")).id)).get(
            "chunks")
    if written:
        out["ingest_chunks_per_s"] = round(written / ingest_s, 1)
        out["ingest_seconds"] = round(ingest_s, 1)
    print(json.dumps({"progress": "ingested", **out}), file=sys.stderr, flush=True)
    if vacuum and backend == "postgres":
        t0 = time.perf_counter()
        await vacuum_analyze(engine)
        out["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
    coll = await svc.collection("scale")
    t0 = time.perf_counter()
    idx = await svc.dense.get(coll.id, await svc.store.version(coll.id))
    out["dense_load_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    await idx.wait_built()
    out["graph_build_s"] = round(time.perf_counter() - t0, 1)
    out["graph"] = idx.graph is not None
    qs = queries(corpus, nq)
    await svc.retrieve("scale", qs[0], CALLER, mode="hybrid")  # builds the caller's bitmaps
    for mode in ("bm25", "dense", "hybrid"):
        out[mode] = await timed_queries(svc, mode, qs, CALLER,
                                        ab=ab and backend == "postgres" and mode != "dense")
    t = time.perf_counter()
    await svc.retrieve("scale", qs[1], COLD_CALLER, mode="hybrid", k=10)
    out["cold_first_query_ms"] = round((time.perf_counter() - t) * 1000, 1)
    # recall of the dense index against exact search, same caller and queries
    rec = []
    for q in qs:
        v = np.asarray(fake_vector(q), dtype=np.float32)
        kw: dict[str, Any] = {"principals": CALLER.principals(), "filters": None,
                              "exclude_doc_ids": None, "k": 10}
        got = {p for p, _ in await idx.search(v, **kw)}
        exact = {p for p, _ in await idx.search(v, exact=True, **kw)}
        rec.append(len(got & exact) / max(len(exact), 1))
    out["dense_recall@10"] = round(statistics.fmean(rec), 4)
    await svc.aclose()
    await engine.dispose()
    await drop_db(dbname)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000", help="comma-separated chunk counts")
    ap.add_argument("--backends", default="sqlite", help="sqlite,postgres")
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="text")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--ann-min-rows", type=int, default=50_000)
    ap.add_argument("--index-dir", type=Path, default=None,
                    help="save/load dense graphs here (with --reuse: skip the build)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the database between runs (ingest then finds it unchanged)")
    ap.add_argument("--pg-db", default=None,
                    help="PostgreSQL database name (kept, like --reuse; one size per run)")
    ap.add_argument("--vacuum", action="store_true",
                    help="PostgreSQL: VACUUM ANALYZE the RAG tables after the ingest")
    ap.add_argument("--workers", type=int, default=1,
                    help="PostgreSQL with --pg-db: ingest processes (every N-th batch each)")
    ap.add_argument("--no-ingest", action="store_true",
                    help="query an existing --pg-db/--reuse database without ingesting")
    ap.add_argument("--bm25-ab", action="store_true",
                    help="PostgreSQL: run bm25/hybrid queries pruned and exhaustive, alternating")
    ap.add_argument("--slice", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.slice:
        part, parts = (int(x) for x in args.slice.split("/"))
        asyncio.run(ingest_slice(int(args.sizes), args.corpus, args.pg_db, part, parts))
        return
    if args.workers > 1 and not args.pg_db:
        raise SystemExit("--workers needs --pg-db (PostgreSQL)")
    for n in (int(s) for s in args.sizes.split(",")):
        for backend in args.backends.split(","):
            res = asyncio.run(run(n, backend, args.queries, args.corpus, args.reuse,
                                  args.ann_min_rows, args.index_dir, args.pg_db, args.vacuum,
                                  args.workers, args.no_ingest, args.bm25_ab))
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
