"""Dense search: exact float32 vectors per collection, an HNSW graph over them, ACL bitmaps.

The record of truth is the ``embedding`` blob of each chunk row. A
:class:`DenseIndex` keeps one collection's unit vectors as rows of a float32
matrix (append order; row = position), with their chunk and document keys and
an ``alive`` flag, and follows the collection's ``version``: on a change it reads
the rows added since its watermark (largest chunk pk seen) and, when the row
count says something was deleted, the full (chunk pk) list to mark vanished rows
dead. Nothing is re-read that it already holds.

Search, for one caller:

1. the rows the caller may read: a bitmap ORed from one cached bitmap per ACL
   principal (:mod:`lockgate.rag.masks`), ANDed with ``alive`` (caller filters
   and excluded documents use one SQL query instead, cached per filter set);
2. few readable rows (``exact_below``) or no graph yet: exact top-k over them (NumPy);
3. otherwise the HNSW graph (:mod:`lockgate.rag.ann`) walks with the bitmap as
   its filter (unreadable rows never become candidates), its candidates are
   rescored with the exact vectors, and if it returns fewer than k rows while
   more are readable the search falls back to exact. So a selective ACL still
   yields k results and nothing unreadable enters the candidate list.

The graph is built in a worker thread once the collection has ``ann_min_rows``
live rows (searches stay exact meanwhile) and updated in place as rows arrive;
when a third of its rows are dead it is rebuilt. With ``index_dir`` set the
graph and the row arrays are saved there (``c<id>.faiss`` + ``c<id>.rows.npz``
with the watermark) after a build and after enough additions, and loaded at the
first use, then brought up to date from the table like any stale copy. That
is the scheme for several instances on one PostgreSQL: each keeps its own file,
the table is the truth, and at any collection version all instances search the
same rows with the same ACL (their graphs may differ in the last decimal of
recall, never in what a caller may read).

Partial: vectors live in process memory (about 1.9 KB per chunk at 384
dimensions: 1.5 KB exact + 0.4 KB quantised in the graph + links); pgvector is
not available on this machine's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from lockgate.lazy import lazy_module
from lockgate.rag import ann
from lockgate.rag.access import Filters
from lockgate.rag.masks import PrincipalMasks
from lockgate.rag.repository import RagStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    F32 = npt.NDArray[np.float32]
    I64 = npt.NDArray[np.int64]
    Bools = npt.NDArray[np.bool_]
else:
    np = lazy_module("numpy")

__all__ = [
    "DenseIndex", "DenseIndexes", "DenseOptions", "from_blob", "one_blas_thread", "to_blob",
]

log = logging.getLogger("lockgate.rag.dense")
_BLAS: Any = None


def one_blas_thread() -> Any:
    """A context capping BLAS at one thread: on a busy 2-core machine OpenBLAS's threaded
    matrix-vector product was 7x slower than one thread (24 vs 3.7 ms for 20k x 384)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def to_blob(vec: Sequence[float] | F32) -> bytes:
    arr = np.asarray(vec, dtype="<f4")
    norm = float(np.linalg.norm(arr))
    if norm > 0:
        arr = arr / norm
    return arr.astype("<f4").tobytes()


def from_blob(blob: bytes) -> F32:
    arr: F32 = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return arr


class DenseOptions:
    """Knobs of the dense index (defaults measured in bench/rag_ann.py and rag_scale.py)."""

    def __init__(self, *, ann_min_rows: int = 50_000, exact_below: int = 20_000,
                 index_dir: Path | None = None, save_every: float = 0.05,
                 build_threads: int = 2) -> None:
        self.ann_min_rows = ann_min_rows
        """Build the graph once this many rows are live (smaller: exact search is as fast)."""
        self.exact_below = exact_below
        """Search exactly when the caller may read at most this many rows."""
        self.index_dir = index_dir
        """Where graphs are saved (None: in memory only, rebuilt at start)."""
        self.save_every = save_every
        """Save again once the rows added since the last save reach this share of the graph."""
        self.build_threads = build_threads


class DenseIndex:
    """Unit vectors of one collection's chunks, with their chunk and document keys."""

    def __init__(self, store: RagStore, cid: int, options: DenseOptions | None = None) -> None:
        self.store = store
        self.cid = cid
        self.opt = options or DenseOptions()
        self.version = -1
        self.chunk_pks: I64 = np.zeros(0, dtype=np.int64)
        self.doc_pks: I64 = np.zeros(0, dtype=np.int64)
        self.alive: Bools = np.zeros(0, dtype=np.bool_)
        self.matrix: F32 = np.zeros((0, 0), dtype=np.float32)
        self._n = 0  # rows in use (the arrays grow by doubling)
        self._sorted: I64 = np.zeros(0, dtype=np.int64)  # positions ordered by chunk pk
        self.watermark = 0  # largest chunk pk held
        self.graph: ann.AnnGraph | None = None
        self._graph_rows = 0  # rows of the matrix the graph holds
        self._saved_rows = 0
        self._building: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None
        self._loaded_file = False
        self._lock = asyncio.Lock()
        self.masks = PrincipalMasks(store, cid)
        self._filter_masks: dict[bytes, Bools] = {}

    # ------------------------------------------------------------ rows

    @property
    def size(self) -> int:
        return self._n

    @property
    def live(self) -> int:
        return int(self.alive[: self._n].sum())

    def _append(self, pks: I64, docs: I64, vecs: F32) -> None:
        m = len(pks)
        if not m:
            return
        need = self._n + m
        if self.matrix.shape[0] < need or self.matrix.shape[1] != vecs.shape[1]:
            cap = max(need, int(self.matrix.shape[0] * 1.5), 1024)
            dim = vecs.shape[1]
            mat = np.zeros((cap, dim), dtype=np.float32)
            if self._n and self.matrix.shape[1] == dim:
                mat[: self._n] = self.matrix[: self._n]
            self.matrix = mat
            for name in ("chunk_pks", "doc_pks"):
                arr = np.zeros(cap, dtype=np.int64)
                arr[: self._n] = getattr(self, name)[: self._n]
                setattr(self, name, arr)
            alive = np.zeros(cap, dtype=np.bool_)
            alive[: self._n] = self.alive[: self._n]
            self.alive = alive
        self.matrix[self._n : need] = vecs
        self.chunk_pks[self._n : need] = pks
        self.doc_pks[self._n : need] = docs
        self.alive[self._n : need] = True
        self._n = need
        self.watermark = max(self.watermark, int(pks.max()))
        self._sorted = np.argsort(self.chunk_pks[: self._n], kind="stable")

    def positions(self, pks: Sequence[int]) -> list[int | None]:
        """Row position of each chunk pk (None: not held or dead)."""
        if not self._n or not len(pks):
            return [None] * len(pks)
        keys = self.chunk_pks[: self._n][self._sorted]
        want = np.asarray(pks, dtype=np.int64)
        at = np.clip(np.searchsorted(keys, want), 0, self._n - 1)
        pos = self._sorted[at]
        ok = (keys[at] == want) & self.alive[pos]
        return [int(p) if o else None for p, o in zip(pos.tolist(), ok.tolist(), strict=True)]

    async def refresh(self, version: int) -> None:
        if version == self.version:
            return
        async with self._lock:
            if version == self.version:
                return
            if not self._loaded_file:
                self._loaded_file = True
                await self._load()
            await self._sync()
            self.masks.clear()
            self._filter_masks = {}
            self.version = version
            await self._maintain()

    async def _sync(self) -> None:
        """Bring the rows up to the table: new rows after the watermark, dead rows marked."""
        new = await self.store.chunk_rows_after(self.cid, self.watermark)
        if new:
            pks = np.array([r[0] for r in new], dtype=np.int64)
            docs = np.array([r[1] for r in new], dtype=np.int64)
            blobs = await self.store.embeddings_for(pks.tolist())
            keep = np.array([int(p) in blobs for p in pks], dtype=np.bool_)
            if keep.any():
                vecs = np.vstack([from_blob(blobs[int(p)]) for p in pks[keep]])
                if self._n and vecs.shape[1] != self.matrix.shape[1]:
                    self._reset()  # the collection's model changed dimension: start over
                self._append(pks[keep], docs[keep], vecs)
        if self.live != await self.store.embedded_count(self.cid):
            # deletions, or (PostgreSQL) a row committed after a larger pk was seen
            table = await self.store.chunk_rows(self.cid)
            held = np.array([r[0] for r in table], dtype=np.int64)
            mine = self.chunk_pks[: self._n]
            self.alive[: self._n][~np.isin(mine, held)] = False
            late = [r for r, miss in zip(table, ~np.isin(held, mine[self.alive[: self._n]]),
                                         strict=True) if miss]
            if late:
                pks = np.array([r[0] for r in late], dtype=np.int64)
                blobs = await self.store.embeddings_for(pks.tolist())
                got = [(p, d) for p, d in late if p in blobs]
                if got:
                    self._append(np.array([p for p, _ in got], dtype=np.int64),
                                 np.array([d for _, d in got], dtype=np.int64),
                                 np.vstack([from_blob(blobs[p]) for p, _ in got]))

    def _reset(self) -> None:
        self._n = 0
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.chunk_pks = np.zeros(0, dtype=np.int64)
        self.doc_pks = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(0, dtype=np.bool_)
        self._sorted = np.zeros(0, dtype=np.int64)
        self.watermark = 0
        self.graph, self._graph_rows = None, 0

    # ------------------------------------------------------------ the graph

    async def _maintain(self) -> None:
        """Build, extend or rebuild the graph as the rows require (never blocks the loop)."""
        if not ann.available() or (self._building and not self._building.done()):
            return
        live = self.live
        dead_share = 1 - live / self._n if self._n else 0.0
        if self.graph is None or dead_share > 1 / 3:
            if live >= self.opt.ann_min_rows:
                self._building = asyncio.create_task(self._build())
            elif self.graph is not None and live < self.opt.ann_min_rows // 2:
                self.graph, self._graph_rows = None, 0
            return
        if self._graph_rows < self._n:
            start, stop = self._graph_rows, self._n
            await asyncio.to_thread(self.graph.add, self.matrix[start:stop],
                                    self.opt.build_threads)
            self._graph_rows = stop
            if stop - self._saved_rows >= max(1000, self.opt.save_every * stop):
                self._schedule_save()

    def _schedule_save(self) -> None:
        """Save in the background (a 1M-chunk index is ~2 GB: never under the refresh lock)."""
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._save())

    async def _build(self) -> None:
        """A fresh graph over the live rows (compacted first), built in a thread, swapped in."""
        async with self._lock:
            if self._n and self.live < self._n:
                keep = self.alive[: self._n].copy()
                pks, docs = self.chunk_pks[: self._n][keep], self.doc_pks[: self._n][keep]
                mat = self.matrix[: self._n][keep]
                wm = self.watermark
                self._reset()
                self._append(pks, docs, mat)
                self.watermark = wm
                self.masks.clear()
                self._filter_masks = {}
            rows = self._n
            vectors = self.matrix[:rows]
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(rows, size=min(rows, 50_000), replace=False)]
        graph = await asyncio.to_thread(ann.AnnGraph, vectors.shape[1], train=sample)
        await asyncio.to_thread(graph.add, vectors, self.opt.build_threads)
        async with self._lock:
            if self._n < rows or self.matrix.shape[1] != graph.dim:
                return  # reset meanwhile (dimension change): the next refresh starts again
            if self._n > rows:
                await asyncio.to_thread(graph.add, self.matrix[rows : self._n],
                                        self.opt.build_threads)
            self.graph, self._graph_rows = graph, self._n
            log.info("rag dense graph built: collection %s, %s rows in %.1f s",
                     self.cid, self._n, time.perf_counter() - t0)
            self._schedule_save()

    async def wait_built(self) -> None:
        """Await a graph build and a save in progress (tests, benches and the CLI use it)."""
        if self._building is not None:
            await self._building
        if self._saving is not None:
            await self._saving

    # ------------------------------------------------------------ files

    def _paths(self) -> tuple[Path, Path] | None:
        d = self.opt.index_dir
        if d is None:
            return None
        return d / f"c{self.cid}.faiss", d / f"c{self.cid}.rows.npz"

    async def _save(self) -> None:
        paths = self._paths()
        if paths is None or self.graph is None:
            return
        graph_path, rows_path = paths
        n = self._graph_rows
        pks, docs = self.chunk_pks[:n].copy(), self.doc_pks[:n].copy()
        alive, mat = self.alive[:n].copy(), self.matrix[:n]

        def write() -> None:
            assert self.graph is not None
            graph_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = rows_path.with_suffix(".tmp.npz")
            np.savez(tmp, chunk_pks=pks, doc_pks=docs, alive=alive, matrix=mat,
                     meta=np.array([self.cid, n, int(pks.max()) if n else 0], dtype=np.int64))
            self.graph.save(graph_path)
            tmp.replace(rows_path)

        try:
            await asyncio.to_thread(write)
            self._saved_rows = n
        except OSError as exc:  # a full disk must not fail queries
            log.warning("rag dense index not saved (%s): %s", graph_path, exc)

    async def _load(self) -> None:
        paths = self._paths()
        if paths is None or not ann.available():
            return
        graph_path, rows_path = paths
        if not graph_path.exists() or not rows_path.exists():
            return

        def read() -> tuple[ann.AnnGraph, dict[str, npt.NDArray[np.generic]]]:
            with np.load(rows_path) as z:
                arrays = {k: z[k] for k in ("chunk_pks", "doc_pks", "alive", "matrix", "meta")}
            dim = int(arrays["matrix"].shape[1])
            return ann.AnnGraph.load(graph_path, dim), arrays

        try:
            graph, a = await asyncio.to_thread(read)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("rag dense index file unusable, rebuilding (%s): %s", graph_path, exc)
            return
        n = int(a["meta"][1])
        if int(a["meta"][0]) != self.cid or graph.size != n or len(a["chunk_pks"]) != n:
            return
        self._append(a["chunk_pks"].astype(np.int64), a["doc_pks"].astype(np.int64),
                     a["matrix"].astype(np.float32))
        self.alive[:n] = a["alive"].astype(np.bool_)
        self.graph, self._graph_rows, self._saved_rows = graph, n, n

    # ------------------------------------------------------------ search

    async def _mask(
        self,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
        n: int,
    ) -> Bools:
        """Rows the caller may read among the first ``n`` (alive ones only)."""
        alive = self.alive[:n]
        if not filters and not exclude_doc_ids:
            if principals is None:
                return alive
            return (await self.masks.rows(principals, self.doc_pks[:n], self.version)) & alive
        key = orjson.dumps(
            [sorted(principals) if principals is not None else None, filters,
             sorted(exclude_doc_ids or []), n],
            option=orjson.OPT_SORT_KEYS,
        )
        version = self.version
        cached = self._filter_masks.get(key)
        if cached is not None:
            return cached
        allowed = await self.store.allowed_doc_pks(
            self.cid, principals=principals, filters=filters, exclude_doc_ids=exclude_doc_ids
        )
        mask = np.isin(self.doc_pks[:n], np.array(allowed, dtype=np.int64)) & alive
        if version == self.version:
            if len(self._filter_masks) >= 64:
                self._filter_masks.pop(next(iter(self._filter_masks)))
            self._filter_masks[key] = mask
        return mask

    async def search(
        self,
        query: F32,
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
        k: int,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """Top-k (chunk pk, cosine) among chunks of documents the caller may read.

        ``exact=True`` skips the graph (the recall reference in tests and benches).
        """
        n = self._n
        matrix, chunk_pks = self.matrix, self.chunk_pks
        graph, graph_rows = self.graph, self._graph_rows
        if not n or k <= 0:
            return []
        if matrix.shape[1] != query.shape[0]:
            raise ValueError(
                f"query vector has {query.shape[0]} dimensions, the index {matrix.shape[1]}"
            )
        q = query.astype(np.float32)
        mask = await self._mask(principals, filters, exclude_doc_ids, n)
        readable = int(mask.sum())
        k = min(k, readable)
        if k <= 0:
            return []
        rows: npt.NDArray[np.intp] | None = None
        if graph is not None and not exact and readable > self.opt.exact_below:
            rows = await self._graph_rows_for(graph, graph_rows, q, mask, readable, k)
        with one_blas_thread():
            if rows is None:
                idx = np.flatnonzero(mask)
                scores = matrix[idx] @ q if len(idx) < n // 4 else (matrix[:n] @ q)[idx]
                top = (np.argpartition(-scores, k - 1)[:k] if k < len(idx)
                       else np.arange(len(idx)))
                rows, sims = idx[top], scores[top]
            else:
                sims = matrix[rows] @ q
        order = np.lexsort((chunk_pks[rows], -sims))[:k]
        return [(int(chunk_pks[rows[i]]), float(sims[i])) for i in order]

    async def _graph_rows_for(
        self, graph: ann.AnnGraph, graph_rows: int, q: F32, mask: Bools, readable: int, k: int
    ) -> npt.NDArray[np.intp] | None:
        """Candidate rows from the graph (None: fall back to exact)."""
        bits = np.packbits(mask[:graph_rows], bitorder="little")
        ef = ann.ef_for(k, readable / max(graph_rows, 1))
        fetch = min(readable, max(2 * k, k + 20))  # extra candidates, re-ranked exactly
        found = await asyncio.to_thread(graph.search, q, fetch, bits, ef)
        tail = np.flatnonzero(mask[graph_rows:]) + graph_rows  # rows not in the graph yet
        in_graph = int(mask[:graph_rows].sum())
        if len(found) < min(fetch, in_graph):
            return None
        return np.concatenate([np.asarray(found, dtype=np.intp), tail.astype(np.intp)])


class DenseIndexes:
    """One DenseIndex per collection id, shared by the queries of one process."""

    def __init__(self, store: RagStore, options: DenseOptions | None = None) -> None:
        self.store = store
        self.options = options or DenseOptions()
        self._by_cid: dict[int, DenseIndex] = {}

    async def get(self, cid: int, version: int) -> DenseIndex:
        idx = self._by_cid.get(cid)
        if idx is None:
            idx = DenseIndex(self.store, cid, self.options)
            self._by_cid[cid] = idx
        await idx.refresh(version)
        return idx

    def forget(self, cid: int) -> None:
        """Drop a collection's index and its files (the collection was dropped)."""
        idx = self._by_cid.pop(cid, None)
        if idx is not None and idx._building is not None:
            idx._building.cancel()
        for p in DenseIndex(self.store, cid, self.options)._paths() or ():
            p.unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Stop graph builds in progress (their work is lost; the next start rebuilds)."""
        for idx in self._by_cid.values():
            if idx._building is not None and not idx._building.done():
                idx._building.cancel()
