"""RAG storage/index scale: ingestion chunks/s and query latency p50/p95 at 10k and 100k chunks.

    .venv/bin/python bench/rag_scale.py --chunks 10000 [--backend sqlite|postgres]

What it measures: the store, the lexical index, the ACL join and the dense
matrix, not the embedding model. Embeddings come from a stand-in pipeline that
hashes terms into 384 dimensions (as fast as a lookup), because the real
offline model encodes only a few documents a second on this shared 2-core
machine (its throughput is measured by bench/rag_cisi.py). Documents are
synthetic: a 2,000-word vocabulary with Zipf-like frequencies, one chunk per
document, 20% public, the rest spread over 50 groups and 500 users. Queries
are three-term questions asked by a user who belongs to 2 groups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.rag.rag_support import OPERATOR, FakePipeline  # noqa: E402

from lockgate.rag.repository import RagStore  # noqa: E402
from lockgate.rag.service import RagService, RagSettings  # noqa: E402
from lockgate.rag.types import Caller, SourceDocument  # noqa: E402
from lockgate.store.engine import create_engine  # noqa: E402


def corpus(n: int, seed: int = 1) -> list[SourceDocument]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    docs = []
    for i in range(n):
        words = rng.choices(vocab, weights, k=60)
        r = rng.random()
        acl: tuple[str, ...]
        if r < 0.2:
            acl = ("public",)
        elif r < 0.7:
            acl = (f"group:g{rng.randrange(50)}",)
        else:
            acl = (f"user:u{rng.randrange(500)}",)
        docs.append(SourceDocument(doc_id=f"d{i}", title=f"doc {i}", text=" ".join(words),
                                   principals=acl))
    return docs


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 2)


async def run(n: int, backend: str, queries: int, reuse: bool = False) -> dict[str, Any]:
    name = None
    if backend == "sqlite":
        path = Path(f"/tmp/lockgate-rag-scale-{n}.db")
        for suffix in ("", "-wal", "-shm"):
            if not reuse:
                Path(str(path) + suffix).unlink(missing_ok=True)
        engine = create_engine(f"sqlite:///{path}")
    else:
        import asyncpg

        name = "lgrag_bench_" + uuid.uuid4().hex[:8]
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        engine = create_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
    pipe = FakePipeline()
    svc = RagService(await RagStore.migrated(engine), pipe, RagSettings(embed_model="embed"))
    import tests.rag.rag_support as support

    support.DIM = 384
    docs = corpus(n)
    t0 = time.perf_counter()
    rep = await svc.ingest_documents("scale", docs, principal=OPERATOR)
    ingest_s = time.perf_counter() - t0
    rng = random.Random(2)
    out: dict[str, Any] = {
        "backend": backend, "chunks": rep.chunks_written,
        "ingest_seconds": round(ingest_s, 1),
        "ingest_chunks_per_s": round(rep.chunks_written / ingest_s, 1),
    }
    for mode in ("bm25", "dense", "hybrid"):
        caller = Caller(user_id="u7", groups=("g3", "g11"))
        lat = []
        await svc.retrieve("scale", "w1 w2 w3", caller, mode=mode)  # type: ignore[arg-type]
        for _ in range(queries):
            q = " ".join(f"w{rng.randrange(5, 400)}" for _ in range(3))
            t = time.perf_counter()
            res = await svc.retrieve("scale", q, caller, mode=mode, k=10)  # type: ignore[arg-type]
            lat.append((time.perf_counter() - t) * 1000)
            assert len(res.hits) == 10
        out[mode] = {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
                     "mean_ms": round(statistics.fmean(lat), 2)}
    await engine.dispose()
    if name:
        import asyncpg

        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--reuse", action="store_true",
                    help="sqlite: keep the database of an earlier run (ingest finds it unchanged)")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.chunks, args.backend, args.queries, args.reuse))))


if __name__ == "__main__":
    main()
