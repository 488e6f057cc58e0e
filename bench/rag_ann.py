"""ANN libraries side by side for ACL-filtered dense retrieval: faiss-cpu, hnswlib, usearch.

    python bench/rag_ann.py --n 200000 [--dim 384] [--queries 200] [--threads 2]

One run builds each library's index over the same vectors, then asks the same
queries three ways: unfiltered, with a "several groups" ACL mask (~22% of rows
readable) and with a selective mask (~1%). Each result list is compared with
the exact top-10 among the readable rows (NumPy brute force) for recall@10.

How each library filters (their Python surfaces differ):

* faiss ``IndexHNSWFlat`` (inner product): ``SearchParametersHNSW(sel=IDSelectorBitmap)``,
  the bitmap tested in C++ during the graph walk;
* hnswlib: ``knn_query(filter=callable)``, a Python callable per visited node;
* usearch: no filter predicate in its Python API: over-fetch (k / selectivity * 2,
  capped) and drop unreadable rows afterwards.

Vectors are synthetic but shaped like sentence embeddings (uniform random vectors
are the worst case for graph indexes and nothing like text): 2,000 topic centroids;
each vector is a unit-normalised mix of 1-3 topics plus Gaussian noise. Queries are
made the same way. The numbers are ratios of one run on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def topic_vectors(n: int, dim: int, seed: int, topics: int = 2000) -> F32:
    """Unit vectors made of 1-3 topic centroids plus noise (see the module doc)."""
    rng = np.random.default_rng(seed)
    cent = np.random.default_rng(12345).standard_normal((topics, dim)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 50_000
    for s in range(0, n, step):
        m = min(step, n - s)
        t = rng.integers(0, topics, size=(m, 3))
        w = rng.random((m, 3)).astype(np.float32)
        w[:, 1:] *= rng.random((m, 2)) < 0.6
        v = (cent[t] * w[:, :, None]).sum(axis=1)
        v += rng.standard_normal((m, dim)).astype(np.float32) * 0.045
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[s : s + m] = v
    return out


def exact_topk(x: F32, q: F32, mask: npt.NDArray[np.bool_] | None, k: int) -> list[set[int]]:
    out = []
    for i in range(len(q)):
        s = x @ q[i]
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        top = np.argpartition(-s, k)[:k]
        out.append({int(t) for t in top})
    return out


def pct(v: list[float], p: float) -> float:
    s = sorted(v)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 3)


def measure(search: Callable[[F32], list[int]], q: F32, truth: list[set[int]],
            k: int) -> dict[str, float]:
    lat, rec = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        got = search(q[i])
        lat.append((time.perf_counter() - t) * 1000)
        rec.append(len(set(got[:k]) & truth[i]) / k)
    return {"recall@10": round(statistics.fmean(rec), 4), "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95)}


EF = 128
Searcher = Callable[[npt.NDArray[np.bool_] | None], Callable[[F32], list[int]]]


def build_faiss(x: F32, threads: int, k: int) -> Searcher:
    import faiss

    n, dim = x.shape
    faiss.omp_set_num_threads(threads)
    idx = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = 100
    idx.add(x)
    faiss.omp_set_num_threads(1)

    def searcher(mask: npt.NDArray[np.bool_] | None) -> Callable[[F32], list[int]]:
        params = faiss.SearchParametersHNSW(efSearch=EF)  # type: ignore[attr-defined]
        keep: list[Any] = []
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=EF, sel=sel)
            keep.extend((bits, sel))  # alive while searching

        def go(v: F32) -> list[int]:
            _, ids = idx.search(v[None, :], k, params=params)
            return [int(i) for i in ids[0] if i >= 0] if keep is not None else []
        return go
    return searcher


def build_hnswlib(x: F32, threads: int, k: int) -> Searcher:
    import hnswlib

    n, dim = x.shape
    idx = hnswlib.Index(space="ip", dim=dim)
    idx.init_index(max_elements=n, ef_construction=100, M=32)
    idx.add_items(x, np.arange(n), num_threads=threads)
    idx.set_ef(EF)

    def searcher(mask: npt.NDArray[np.bool_] | None) -> Callable[[F32], list[int]]:
        def go(v: F32) -> list[int]:
            if mask is None:
                ids, _ = idx.knn_query(v, k=k, num_threads=1)
            else:
                ids, _ = idx.knn_query(v, k=k, num_threads=1, filter=lambda i: bool(mask[i]))
            return [int(i) for i in ids[0]]
        return go
    return searcher


def build_usearch(x: F32, threads: int, k: int) -> Searcher:
    from usearch.index import Index

    n, dim = x.shape
    idx = Index(ndim=dim, metric="ip", dtype="f32", connectivity=32,
                expansion_add=100, expansion_search=EF)
    idx.add(np.arange(n), x, threads=threads)

    def searcher(mask: npt.NDArray[np.bool_] | None) -> Callable[[F32], list[int]]:
        frac = 1.0 if mask is None else max(float(mask.mean()), 1e-4)
        fetch = min(n, int(k / frac * 2) + k)

        def go(v: F32) -> list[int]:
            m = idx.search(v, fetch, threads=1)
            keys = [int(i) for i in m.keys]
            if mask is not None:
                keys = [i for i in keys if mask[i]]
            return keys[:k]
        return go
    return searcher


def build_lockgate(x: F32, threads: int, k: int) -> Searcher:
    """What lockgate.rag.dense runs: faiss HNSW over 8-bit vectors, the ACL bitmap in the
    walk, efSearch widened by the readable share (ann.ef_for), max(2k, k+20) candidates rescored
    with the exact float32 vectors."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from lockgate.rag import ann

    graph = ann.AnnGraph(x.shape[1], train=x[:50_000])
    graph.add(x, threads)

    def searcher(mask: npt.NDArray[np.bool_] | None) -> Callable[[F32], list[int]]:
        bits = None if mask is None else np.packbits(mask, bitorder="little")
        share = 1.0 if mask is None else float(mask.mean())
        fetch = max(2 * k, k + 20)

        def go(v: F32) -> list[int]:
            rows = np.asarray(graph.search(v, fetch, bits, ann.ef_for(fetch, share)))
            sims = x[rows] @ v
            return [int(r) for r in rows[np.argsort(-sims)[:k]]]
        return go
    return searcher


BUILDERS: dict[str, Callable[[F32, int, int], Searcher]] = {
    "faiss": build_faiss, "hnswlib": build_hnswlib, "usearch": build_usearch,
    "lockgate": build_lockgate}


def run(n: int, dim: int, nq: int, threads: int, libs: list[str]) -> dict[str, Any]:
    k = 10
    x = topic_vectors(n, dim, 1)
    q = topic_vectors(nq, dim, 2)
    rng = np.random.default_rng(3)
    masks = {"none": None, "groups~22%": rng.random(n) < 0.22, "selective~1%": rng.random(n) < 0.01}
    truths = {name: exact_topk(x, q, m, k) for name, m in masks.items()}
    res: dict[str, Any] = {"n": n, "dim": dim, "queries": nq, "threads": threads}
    for lib in libs:
        r: dict[str, Any] = {}
        t0 = time.perf_counter()
        searcher = BUILDERS[lib](x, threads, k)
        r["build_s"] = round(time.perf_counter() - t0, 1)
        for name, m in masks.items():
            if lib == "hnswlib" and name != "none" and n > 300_000:
                continue
            r[name] = measure(searcher(m), q, truths[name], k)
        res[lib] = r
    # exact brute force (NumPy) as the baseline latency
    exact: dict[str, Any] = {}
    for name, m in masks.items():
        def go(v: F32, m: Any = m) -> list[int]:
            s = x @ v
            if m is not None:
                s = np.where(m, s, -np.inf)
            return [int(i) for i in np.argpartition(-s, k)[:k]]
        exact[name] = measure(go, q[:50], truths[name][:50], k)
    res["numpy_exact"] = exact
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--libs", default="faiss,hnswlib,usearch")
    a = ap.parse_args()
    print(json.dumps(run(a.n, a.dim, a.queries, a.threads, a.libs.split(",")), indent=1))


if __name__ == "__main__":
    main()
