"""Per-principal row bitmaps: which dense-index rows each ACL principal may read.

A caller's readable rows are the OR of the bitmaps of its principals (``public``,
``user:<id>``, ``group:<g>``, ``team:<t>``). Each principal's bitmap is built once
per collection version from one indexed SQL query (``rag_doc_principals`` is keyed
by principal first) and cached, so a caller in several groups costs a few cached
ORs, and a new caller whose principals were seen before costs nothing in SQL.
Every write bumps the collection version, which empties the cache (the owning
index calls :meth:`PrincipalMasks.clear`), so an ACL change applies on the next
query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lockgate.lazy import lazy_module
from lockgate.rag.repository import RagStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Bools = npt.NDArray[np.bool_]
    I64 = npt.NDArray[np.int64]
else:
    np = lazy_module("numpy")

__all__ = ["PrincipalMasks"]

MAX_CACHED = 512


class PrincipalMasks:
    """Row bitmaps per principal for one collection, valid for one version."""

    def __init__(self, store: RagStore, cid: int) -> None:
        self.store = store
        self.cid = cid
        self._docs: dict[str, I64] = {}  # principal -> sorted readable doc pks
        self._rows: OrderedDict[str, Bools] = OrderedDict()
        self._n = -1

    def clear(self) -> None:
        self._docs.clear()
        self._rows.clear()
        self._n = -1

    async def rows(self, principals: Sequence[str], doc_pks: I64, version: int) -> Bools:
        """Rows (of ``doc_pks``, the index's document key per row) any principal may read."""
        del version  # the owner clears this cache when its version moves
        n = len(doc_pks)
        if n != self._n:
            self._rows.clear()  # rows were appended: row bitmaps are rebuilt from _docs
            self._n = n
        out = np.zeros(n, dtype=np.bool_)
        for p in sorted(set(principals)):
            bitmap = self._rows.get(p)
            if bitmap is None:
                docs = self._docs.get(p)
                if docs is None:
                    pks = await self.store.principal_doc_pks(self.cid, p)
                    docs = np.unique(np.asarray(pks, dtype=np.int64))
                    self._docs[p] = docs
                    while len(self._docs) > MAX_CACHED:
                        self._docs.pop(next(iter(self._docs)))
                bitmap = np.isin(doc_pks, docs) if len(docs) else np.zeros(n, dtype=np.bool_)
                self._rows[p] = bitmap
                while len(self._rows) > MAX_CACHED:
                    self._rows.popitem(last=False)
            else:
                self._rows.move_to_end(p)
            out |= bitmap
        return out
