"""CISI end to end through ``lockgate rag``: convert to BEIR, ingest, evaluate bm25/dense/hybrid.

    .venv/bin/python bench/rag_cisi.py [--data ../shared/data/cisi] [--out /tmp/rag-cisi]

1. converts CISI.ALL / CISI.QRY / CISI.REL to BEIR (corpus.jsonl, queries.jsonl
   with only the 76 judged queries, qrels.tsv with a header; binary relevance);
2. writes a config with the offline embeddings model (``provider: embedded``);
3. runs ``lockgate rag ingest`` and ``lockgate rag eval --json`` for bm25,
   dense, hybrid RRF and hybrid convex, each as a separate CLI process;
4. tunes the convex weight ``alpha`` on the odd query ids (dev) and reports
   it on the even ids (test) and on all 76; calibrates the refusal threshold
   on dev and checks it on test;
5. prints a Markdown table and writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def parse_records(path: Path) -> dict[str, dict[str, str]]:
    records: dict[str, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    field: str | None = None
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(".I "):
            cur = {}
            records[line[3:].strip()] = cur
            field = None
            continue
        if len(line) >= 2 and line[0] == "." and line[1] in "TAWXB" and line[2:].strip() == "":
            field = line[1]
            continue
        if cur is not None and field is not None:
            cur[field] = (cur.get(field, "") + "\n" + line).strip("\n")
    return records


def convert(data: Path, out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    docs = parse_records(data / "CISI.ALL")
    queries = parse_records(data / "CISI.QRY")
    qrels: dict[str, set[str]] = {}
    for line in (data / "CISI.REL").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            qrels.setdefault(parts[0], set()).add(parts[1])
    with (out / "corpus.jsonl").open("w") as f:
        for did, rec in docs.items():
            f.write(json.dumps({"_id": did, "title": " ".join(rec.get("T", "").split()),
                                "text": " ".join(rec.get("W", "").split())}) + "\n")
    judged = [q for q in queries if q in qrels]
    for name, keep in (("queries", judged),
                       ("queries-dev", [q for q in judged if int(q) % 2 == 1]),
                       ("queries-test", [q for q in judged if int(q) % 2 == 0])):
        with (out / f"{name}.jsonl").open("w") as f:
            for q in keep:
                f.write(json.dumps({"_id": q, "text": " ".join(queries[q]["W"].split())}) + "\n")
    with (out / "qrels.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in judged:
            for d in sorted(qrels[q], key=int):
                f.write(f"{q}\t{d}\t1\n")
    return {"documents": len(docs), "queries": len(judged),
            "judgements": sum(len(v) for v in qrels.values())}


def lockgate(config: Path, *args: str) -> tuple[str, float]:
    # Import the rag sub-app even while the root CLI package is mid-change elsewhere.
    code = (
        "import sys, types\n"
        "try:\n    from lockgate.cli.rag_commands import rag_app\n"
        "except ImportError:\n"
        "    for k in [k for k in sys.modules if k.startswith('lockgate.cli')]:\n"
        "        del sys.modules[k]\n"
        "    import lockgate\n"
        "    m = types.ModuleType('lockgate.cli'); m.__path__ = [lockgate.__path__[0] + '/cli']\n"
        "    sys.modules['lockgate.cli'] = m\n"
        "    from lockgate.cli.rag_commands import rag_app\n"
        "rag_app()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, "--config", str(config)],
        capture_output=True, text=True, env=env, check=False,
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lockgate rag {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout, took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cisi")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lockgate-rag-cisi"))
    ap.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--fresh", action="store_true", help="delete the database first")
    ap.add_argument("--engine", choices=["auto", "numpy", "onnx-int8"], default="auto",
                    help="embeddings engine of the bundled model (models[].engine)")
    args = ap.parse_args()
    out: Path = args.out
    beir = out / "beir"
    sizes = convert(args.data, beir)
    db = out / "rag.db"
    if args.fresh and db.exists():
        db.unlink()
    config = out / "lockgate.yaml"
    config.write_text(
        f"home: {out / 'home'}\n"
        f"database_url: sqlite:///{db}\n"
        "models:\n"
        "  - name: embed\n    provider: embedded\n    path: bundled:all-minilm-l6-v2\n"
        f"    mode: embeddings\n    engine: {args.engine}\n"
    )
    results: dict[str, Any] = {"data": sizes, "engine": args.engine}
    stdout, took = lockgate(config, "ingest", "cisi", str(beir / "corpus.jsonl"), "--json")
    rep = json.loads(stdout)
    results["ingest"] = {**rep, "seconds": round(took, 1),
                         "chunks_per_s": round(rep["chunks_written"] / took, 1)}
    q_all, q_dev, q_test = (str(beir / f"{n}.jsonl") for n in
                            ("queries", "queries-dev", "queries-test"))
    qrels = str(beir / "qrels.tsv")

    def ev(queries: str, mode: str, *extra: str) -> dict[str, Any]:
        text, _ = lockgate(config, "eval", "cisi", "--queries", queries, "--qrels", qrels,
                           "--mode", mode, "--json", *extra)
        return dict(json.loads(text))

    runs: dict[str, Any] = {}
    runs["bm25"] = ev(q_all, "bm25")
    runs["dense"] = ev(q_all, "dense")
    runs["hybrid_rrf"] = ev(q_all, "hybrid", "--fusion", "rrf")
    sweep = {}
    for a in args.alphas.split(","):
        sweep[a] = ev(q_dev, "hybrid", "--fusion", "convex", "--alpha", a)["nDCG@10"]
    best = max(sweep, key=lambda a: sweep[a])
    results["alpha_sweep_dev_ndcg10"] = sweep
    results["alpha"] = float(best)
    runs["hybrid_convex"] = ev(q_all, "hybrid", "--fusion", "convex", "--alpha", best)
    results["test_split"] = {
        "hybrid_rrf": ev(q_test, "hybrid", "--fusion", "rrf")["nDCG@10"],
        "hybrid_convex": ev(q_test, "hybrid", "--fusion", "convex", "--alpha", best)["nDCG@10"],
        "bm25": ev(q_test, "bm25")["nDCG@10"],
        "dense": ev(q_test, "dense")["nDCG@10"],
    }
    results["runs"] = runs
    cal, _ = lockgate(config, "calibrate", "cisi", "--queries", q_dev, "--qrels", qrels,
                      "--mode", "hybrid", "--no-save", "--json")
    results["calibration_dev"] = json.loads(cal)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    print("| run | nDCG@10 | MRR@10 | P@10 | R@10 | R@100 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['nDCG@10']:.3f} | {r['MRR@10']:.3f} | {r['P@10']:.3f} | "
              f"{r['R@10']:.3f} | {r['R@100']:.3f} | {r['latency_ms_p50']} | "
              f"{r['latency_ms_p95']} |")


if __name__ == "__main__":
    main()
