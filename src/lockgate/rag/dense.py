"""Dense search: an in-memory float32 matrix per collection, filtered by the ACL before top-k.

The record of truth is the ``embedding`` blob of each chunk row. A
:class:`DenseIndex` keeps the unit vectors of one collection in a NumPy matrix
and reloads incrementally when the collection's ``version`` changes (new rows
are read, vanished rows dropped). A query computes the set of documents the
caller may read (SQL over the ACL table, ANDed with the caller's filters),
masks every other row to -inf (the mask is cached per principal set and
filters until the collection version changes), and only then takes the top-k, so a selective
ACL still yields k results and nothing else ever enters the candidate list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import orjson

from lockgate.rag.access import Filters
from lockgate.rag.repository import RagStore

__all__ = ["DenseIndex", "DenseIndexes", "from_blob", "to_blob"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def to_blob(vec: Sequence[float] | F32) -> bytes:
    arr = np.asarray(vec, dtype="<f4")
    norm = float(np.linalg.norm(arr))
    if norm > 0:
        arr = arr / norm
    return arr.astype("<f4").tobytes()


def from_blob(blob: bytes) -> F32:
    arr: F32 = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return arr


class DenseIndex:
    """Unit vectors of one collection's chunks, with their chunk and document keys."""

    def __init__(self, store: RagStore, cid: int) -> None:
        self.store = store
        self.cid = cid
        self.version = -1
        self.chunk_pks: I64 = np.zeros(0, dtype=np.int64)
        self.doc_pks: I64 = np.zeros(0, dtype=np.int64)
        self.matrix: F32 = np.zeros((0, 0), dtype=np.float32)
        self._lock = asyncio.Lock()
        self._masks: dict[bytes, npt.NDArray[np.bool_]] = {}

    async def refresh(self, version: int) -> None:
        if version == self.version:
            return
        async with self._lock:
            if version == self.version:
                return
            rows = await self.store.chunk_rows(self.cid)
            pks = np.array([r[0] for r in rows], dtype=np.int64)
            docs = np.array([r[1] for r in rows], dtype=np.int64)
            keep = np.isin(self.chunk_pks, pks)
            old_pks, old_mat = self.chunk_pks[keep], self.matrix[keep] if len(self.matrix) else None
            new_pks = pks[~np.isin(pks, old_pks)]
            blobs = await self.store.embeddings_for(new_pks.tolist())
            vecs = [from_blob(blobs[int(p)]) for p in new_pks if int(p) in blobs]
            new_pks = np.array([p for p in new_pks if int(p) in blobs], dtype=np.int64)
            parts = [m for m in (old_mat, np.vstack(vecs) if vecs else None) if m is not None]
            parts = [m for m in parts if m.size]
            all_pks = np.concatenate([old_pks, new_pks])
            matrix = np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)
            order = np.argsort(all_pks, kind="stable")
            self.chunk_pks = all_pks[order]
            self.matrix = np.ascontiguousarray(matrix[order]) if len(matrix) else matrix
            doc_of = dict(zip(pks.tolist(), docs.tolist(), strict=True))
            self.doc_pks = np.array([doc_of[int(p)] for p in self.chunk_pks], dtype=np.int64)
            self._masks = {}
            self.version = version

    async def _mask(
        self,
        doc_pks: I64,
        version: int,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
    ) -> npt.NDArray[np.bool_]:
        """Rows the caller may read, cached per (principals, filters) until the version moves.

        Every write (content, ACL, delete) bumps the collection version, which
        reloads the index and empties this cache, so a permission change applies
        on the next query.
        """
        key = orjson.dumps(
            [sorted(principals) if principals is not None else None, filters,
             sorted(exclude_doc_ids or [])],
            option=orjson.OPT_SORT_KEYS,
        )
        cached = self._masks.get(key) if version == self.version else None
        if cached is not None:
            return cached
        allowed = await self.store.allowed_doc_pks(
            self.cid, principals=principals, filters=filters, exclude_doc_ids=exclude_doc_ids
        )
        mask = np.isin(doc_pks, np.array(allowed, dtype=np.int64))
        if version == self.version:
            if len(self._masks) >= 256:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = mask
        return mask

    async def search(
        self,
        query: F32,
        *,
        principals: Sequence[str] | None,
        filters: Filters | None,
        exclude_doc_ids: Sequence[str] | None,
        k: int,
    ) -> list[tuple[int, float]]:
        """Top-k (chunk pk, cosine) among chunks of documents the caller may read."""
        # one consistent snapshot: a concurrent refresh swaps these three together
        matrix, chunk_pks, doc_pks = self.matrix, self.chunk_pks, self.doc_pks
        version = self.version
        if not len(chunk_pks) or k <= 0:
            return []
        if matrix.shape[1] != query.shape[0]:
            raise ValueError(
                f"query vector has {query.shape[0]} dimensions, the index {matrix.shape[1]}"
            )
        scores = matrix @ query.astype(np.float32)
        if principals is not None or filters or exclude_doc_ids:
            mask = await self._mask(doc_pks, version, principals, filters, exclude_doc_ids)
            scores = np.where(mask, scores, -np.inf).astype(np.float32)
            n_ok = int(mask.sum())
        else:
            n_ok = len(scores)
        k = min(k, n_ok)
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(chunk_pks[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]


class DenseIndexes:
    """One DenseIndex per collection id, shared by the queries of one process."""

    def __init__(self, store: RagStore) -> None:
        self.store = store
        self._by_cid: dict[int, DenseIndex] = {}

    async def get(self, cid: int, version: int) -> DenseIndex:
        idx = self._by_cid.get(cid)
        if idx is None:
            idx = DenseIndex(self.store, cid)
            self._by_cid[cid] = idx
        await idx.refresh(version)
        return idx

    def forget(self, cid: int) -> None:
        self._by_cid.pop(cid, None)
