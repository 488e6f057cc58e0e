"""The approximate-nearest-neighbour graph behind dense retrieval: faiss HNSW, ACL-filtered.

Why faiss (``bench/rag_ann.py``, results in bench/RESULTS.md): of faiss-cpu,
hnswlib and usearch, only faiss tests a row filter *inside* the graph walk in C++
(``IDSelectorBitmap``); hnswlib calls a Python function per visited node and
usearch's Python API has no filter (over-fetch, then drop), which is slow and
loses recall when the caller may read a small share of the rows.

:class:`AnnGraph` holds an ``IndexHNSWSQ`` (8-bit scalar-quantised vectors, inner
product over unit vectors = cosine) whose row ids are the positions of the
owning :class:`~lockgate.rag.dense.DenseIndex` rows. Results are candidates: the
dense index rescores them with the exact float32 vectors, so the quantisation
never reaches a score. Every faiss call holds one ``threading.Lock`` (faiss
indexes are not safe to mutate while searched); adds run in worker threads in
slices so searches interleave. ``save``/``load`` write and read one file.

faiss is optional at import: :func:`available` is False without it and the
dense index then searches exactly (NumPy), as it does for small collections.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockgate.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    F32 = npt.NDArray[np.float32]
else:
    np = lazy_module("numpy")

__all__ = ["AnnGraph", "available", "ef_for"]

M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 320
"""Search breadth when every row is readable; widened as the readable share falls."""
ADD_SLICE = 4096


def _faiss() -> Any:
    """The faiss module, untyped (its bundled stubs disagree with its SWIG signatures)."""
    return importlib.import_module("faiss")


def available() -> bool:
    try:
        _faiss()
    except ImportError:  # pragma: no cover - faiss is a dependency
        return False
    return True


def ef_for(k: int, readable_share: float) -> int:
    """efSearch for ``k`` results when ``readable_share`` of the rows pass the filter.

    A filtered HNSW walk visits unreadable nodes too, so the beam widens by
    1/sqrt(share). Measured (bench/rag_ann.py, 100k topic-mixture vectors, k=10 with
    2k candidates rescored): recall@10 0.958 unfiltered, 0.950 at a 22% share, 0.845 at
    1% -- which is why callers reading few rows (``exact_below``) are searched exactly.
    """
    share = min(max(readable_share, 1e-3), 1.0)
    return int(min(2048, max(k + 16, EF_SEARCH / share**0.5)))


class AnnGraph:
    """One HNSW graph over unit vectors; row id = position in the owner's arrays."""

    def __init__(self, dim: int, index: Any = None, *, train: F32 | None = None) -> None:
        """A new graph (``train``: sample rows that set the quantiser's per-dimension range;
        later rows outside it are clipped, which the exact rescoring absorbs) or a loaded one."""
        faiss = _faiss()

        self.dim = dim
        if index is None:
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, M,
                                      faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EF_CONSTRUCTION
            sample = train if train is not None and len(train) else np.vstack(
                [np.full(dim, -1.0, np.float32), np.full(dim, 1.0, np.float32)])
            index.train(np.ascontiguousarray(sample[:50_000], dtype=np.float32))
        self.index = index
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: F32, threads: int = 2) -> None:
        """Append rows (blocking; call from a worker thread). Ids continue from ``size``."""
        faiss = _faiss()

        for s in range(0, len(vectors), ADD_SLICE):
            part = np.ascontiguousarray(vectors[s : s + ADD_SLICE], dtype=np.float32)
            with self._lock:
                faiss.omp_set_num_threads(threads)
                try:
                    self.index.add(part)
                finally:
                    faiss.omp_set_num_threads(1)

    def search(self, query: F32, k: int, allowed: npt.NDArray[np.uint8] | None,
               ef: int) -> list[int]:
        """Row ids of up to ``k`` nearest rows; ``allowed`` is a little-endian packed bitmap."""
        faiss = _faiss()

        if self.size == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        with self._lock:
            if allowed is None:
                params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
                _, ids = self.index.search(q, k, params=params)
            else:
                sel = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(allowed))
                params = faiss.SearchParametersHNSW(efSearch=max(ef, k), sel=sel)
                _, ids = self.index.search(q, k, params=params)
                del params, sel
        return [int(i) for i in ids[0] if i >= 0]

    def save(self, path: Path) -> None:
        faiss = _faiss()

        tmp = path.with_suffix(path.suffix + ".tmp")
        with self._lock:
            faiss.write_index(self.index, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, dim: int) -> AnnGraph:
        faiss = _faiss()

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path}: {index.d} dimensions, expected {dim}")
        return cls(dim, index)
