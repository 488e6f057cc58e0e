"""PostgreSQL RAG ingest, two versions of lockgate side by side in one run (chunks/s).

    .venv/bin/python bench/rag_pg_ingest.py --before /tmp/lockgate-main/src --chunks 20000

Each round ingests the same ``bench/rag_scale.py`` corpus (one-chunk documents, 80
index terms each, stand-in hashed embeddings) through ``RagService.ingest_documents``
into a fresh database of its own, once with the sources under ``--before`` and once
with this checkout's ``src``, in a child process each (so each version runs its own
migrations and code), alternating, ``--rounds`` times. Prints one JSON line per run
and the ratio of the medians. Besides wall-clock chunks/s (which moves with the load of
a shared machine) it reports CPU per chunk: the ingesting process's own CPU time plus
the PostgreSQL backends' (from /proc), the steadier comparison under load. Databases
are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def server_cpu(admin: Any, dbname: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to ``dbname``
    (user + system, from /proc: the server runs on this machine)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for row in await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", dbname):
        try:
            fields = Path(f"/proc/{row['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


async def child(n: int, corpus: str, batch: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import asyncpg
    import tests.rag.rag_support as support

    from bench.rag_scale import documents
    from lockgate.rag.repository import RagStore
    from lockgate.rag.service import RagService, RagSettings
    from lockgate.store.engine import create_engine

    support.DIM = 384
    name = "lgragpg_ingest_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = create_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
        svc = RagService(await RagStore.migrated(engine), support.FakePipeline(),
                         RagSettings(embed_model="embed"))
        written = 0
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        server0 = await server_cpu(admin, name)
        for docs in documents(n, corpus, batch=batch):
            rep = await svc.ingest_documents("scale", docs, principal=support.OPERATOR)
            written += rep.chunks_written
        took = time.perf_counter() - t0
        client = time.process_time() - cpu0
        server = await server_cpu(admin, name) - server0
        await svc.aclose()
        await engine.dispose()
        return {"chunks": written, "seconds": round(took, 1),
                "chunks_per_s": round(written / took, 1),
                "client_cpu_ms_per_chunk": round(client * 1000 / written, 3),
                "server_cpu_ms_per_chunk": round(server * 1000 / written, 3),
                "cpu_ms_per_chunk": round((client + server) * 1000 / written, 3)}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def run_child(src: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "--chunks", str(args.chunks),
         "--corpus", args.corpus, "--batch", str(args.batch)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ingest with {src} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, help="src directory of the version to compare with")
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--corpus", default="text")
    ap.add_argument("--batch", type=int, default=20_000, help="documents per ingest call")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.chunks, args.corpus, args.batch))))
        return
    variants = {"after": ROOT / "src"}
    if args.before:
        variants = {"before": args.before, **variants}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for label, src in variants.items():
            res = run_child(src, args)
            load = os.getloadavg()[0]
            print(json.dumps({"round": r + 1, "version": label, **res,
                              "load1": round(load, 1)}), flush=True)
            rates[label].append(res["chunks_per_s"])
            cpu[label].append(res["cpu_ms_per_chunk"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    out: dict[str, Any] = {"median_chunks_per_s": med, "median_cpu_ms_per_chunk": med_cpu}
    if med.get("before"):
        out["ratio"] = round(med["after"] / med["before"], 2)
        out["cpu_ratio"] = round(med_cpu["before"] / med_cpu["after"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
