"""BM25, the one definition: parameters, idf, query weights, the score ceiling.

Scores follow SQLite FTS5's ``bm25()`` (k1=1.2, b=0.75, its idf), so both
backends rank alike: on SQLite FTS5 computes them, on PostgreSQL
:data:`PG_SCORE_SQL` does, with the weights from :func:`query_weights`. The
score of a chunk is

    sum over query terms t of  w(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))

with ``w(t) = idf(t) * (count of t in the query)``. Each term's part stays below
``w(t) * (k1 + 1)``, so :func:`max_score` bounds any chunk's score; retrieval
divides the best score by it for a confidence in [0, 1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["K1", "PG_SCORE_SQL", "B", "idf", "max_score", "pg_score_params", "query_weights"]

K1 = 1.2
B = 0.75

PG_SCORE_SQL = (
    "q.w * p.tf * (CAST(:k1 AS float8) + 1) / (p.tf + CAST(:k1 AS float8)"
    " * (1 - CAST(:b AS float8) + CAST(:b AS float8) * p.n_terms / CAST(:avgdl AS float8)))"
)
"""One term's part of the score, over ``q`` (term, w) and ``p`` (rag_postings, which
carries its chunk's ``n_terms``). The casts matter: an untyped parameter next to an
integer is inferred as an integer, which had turned k1 = 1.2 into 1, b = 0.75 into 1
and ``n_terms / avgdl`` into an integer division (CISI nDCG@10 0.291 instead of
SQLite's 0.325 for the same terms, no top-10 alike)."""


def idf(n_docs: int, df: int) -> float:
    """FTS5's BM25 idf: log((N - n + 0.5) / (n + 0.5)), floored at 1e-6."""
    v = math.log((n_docs - df + 0.5) / (df + 0.5)) if n_docs > 0 else 0.0
    return max(v, 1e-6)


def query_weights(terms: Sequence[str], n_docs: int, dfs: Mapping[str, int]) -> dict[str, float]:
    """``w(t)`` of each distinct query term, in term order: idf times its count in the query."""
    qtf = Counter(terms)
    return {t: idf(n_docs, dfs.get(t, 0)) * qtf[t] for t in sorted(qtf)}


def max_score(weights: Mapping[str, float]) -> float:
    """The score no chunk reaches: each term's part tends to ``w(t) * (k1 + 1)`` as tf grows."""
    return sum(w * (K1 + 1) for w in weights.values())


def pg_score_params(weights: Mapping[str, float], avgdl: float) -> dict[str, Any]:
    """Bind values for :data:`PG_SCORE_SQL` and its ``q`` relation (``:ts``, ``:ws``)."""
    return {
        "ts": list(weights),
        "ws": list(weights.values()),
        "avgdl": max(avgdl, 1e-9),
        "k1": K1,
        "b": B,
    }
