"""PostgreSQL BM25 top-k: MaxScore pruning with a run-time proof, else the exhaustive sum.

The exhaustive query (:func:`exhaustive`) sums every posting of every query term from
``rag_postings_pkey`` (an index-only scan), groups by chunk, ranks the groups (a top-N
sort of a window, :data:`FIRST_WINDOW`) and checks the ACL in rank order until k rows
pass. A query holding a frequent term sums
tens of thousands of postings that way. :func:`search` first tries :func:`pruned`:

* each term ``t`` has a ceiling: its part of a chunk's score grows with tf and falls
  with the chunk's length, so ``w(t) * frac(max tf, min length)`` over ``t``'s postings
  bounds it, and ``w(t) * frac(1, min length)`` bounds it on the postings with tf 1
  (:func:`frac`; the counts, largest tf and smallest length are kept per term at
  write time, :mod:`lockgate.rag.pg_term_stats`);
* the terms of smallest ceiling whose ceilings sum to at most an estimate of the k-th
  score are *non-essential* (``N``), the rest essential (``E``). A non-essential term
  whose postings mostly have tf 1 is *capped* at tf 1: its few postings with a higher
  tf make candidates too, and its ceiling is the tf-1 one. The candidates are the
  chunks holding an essential term or such a posting; each gets its full score (the
  other postings of the non-essential terms are read only for the candidates), they
  are ranked and the ACL is checked in rank order until k pass: ``theta`` is the k-th
  readable score;
* a chunk that is no candidate scores below ``B(N)`` = the sum of the non-essential
  ceilings. So when k candidates were readable and ``theta >= B(N)``, no other chunk
  can reach the top k and the answer is exactly the exhaustive one. Otherwise the
  observed ``theta`` (a lower bound of the true k-th score) picks a smaller ``N`` and
  the query runs again; with ``N`` empty it is the exhaustive query.

Scores are summed exactly, in whole numbers: each term's part is rounded to a multiple
of ``1 / scale`` (``scale`` a power of two fitting the query's largest possible score in
51 bits), kept as a whole-number float8, and the chunk's score is the sum divided by
``scale``; float8 adds whole numbers below 2**53 exactly. A sum of unrounded parts
depends on the order the rows arrive in, which differs between plans, so two chunks
with equal parts could come out one ulp apart and swap places; the exact sum is the
same in every plan and both queries, so pruned and exhaustive answers are identical,
scores and tie order (chunk pk) included. The rounding moves a score by less than
``m / (2 * scale)`` (``m`` query terms): ~1e-16 of the query's ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from lockgate.rag import bm25

__all__ = [
    "Outcome", "Plan", "TermStat", "exhaustive", "frac", "plan", "pruned", "search",
]

_PART_SQL = f"round(({bm25.PG_SCORE_SQL}) * CAST(:scale AS float8))"
"""One term's part of a chunk's score in units of ``1 / scale``: a whole number in a
float8, so sums below 2**53 are exact whatever the order (a bigint SUM would be a
numeric, and sorting numerics took 45 ms of an 84 ms query at 1M chunks)."""

_Q = ("q AS (SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:ws AS float8[]),"
      " CAST(:ess AS bool[]), CAST(:caps AS int[])) AS q(term, w, ess, cap))")
"""The query's terms: weight, essential or not, and (non-essential) the tf cap: the
postings above it are candidates (none when the cap is the term's largest tf)."""

_RANKED = (
    " SELECT * FROM (SELECT s.chunk_pk, s.s / CAST(:scale AS float8) AS score,"
    " CAST(NULL AS bigint) AS ranked FROM s WHERE EXISTS (SELECT 1 FROM rag_documents d"
    " WHERE d.id = s.doc_pk AND {where} OFFSET 0) LIMIT :k) r"
    " UNION ALL SELECT NULL, NULL, COUNT(*) FROM s"
)
"""The ranked window (``s``: the best ``:w`` chunks, a top-N sort) with the ACL checked
in rank order until k rows pass (``OFFSET 0`` keeps the EXISTS a per-row subplan: pulled
up into a hash join it could reorder the rows before the LIMIT), plus one row with a
NULL chunk counting the window's rows (a full window may have cut readable chunks)."""

EXHAUSTIVE_SQL = (
    f"WITH {_Q}, s AS MATERIALIZED (SELECT p.chunk_pk, p.doc_pk, SUM({_PART_SQL}) AS s"
    " FROM rag_postings p JOIN q ON q.term = p.term WHERE p.collection_id = :c"
    " GROUP BY p.chunk_pk, p.doc_pk ORDER BY s DESC, p.chunk_pk LIMIT :w)" + _RANKED
)

PRUNED_SQL = (
    f"WITH {_Q},"
    # the candidates: every posting of the essential terms, and the postings of the
    # capped non-essential terms above their cap
    f" pe AS MATERIALIZED (SELECT p.chunk_pk, p.doc_pk, {_PART_SQL} AS v"
    " FROM rag_postings p JOIN q ON q.term = p.term AND (q.ess OR q.cap > 0)"
    " WHERE p.collection_id = :c AND (q.ess OR p.tf > q.cap)),"
    # the other postings of the non-essential terms, for those candidates only
    f" pn AS (SELECT p.chunk_pk, p.doc_pk, {_PART_SQL} AS v FROM rag_postings p"
    " JOIN q ON q.term = p.term AND NOT q.ess WHERE p.collection_id = :c"
    " AND (q.cap = 0 OR p.tf <= q.cap) AND p.chunk_pk IN (SELECT pe.chunk_pk FROM pe)),"
    " s AS MATERIALIZED (SELECT u.chunk_pk, u.doc_pk, SUM(u.v) AS s FROM"
    " (SELECT * FROM pe UNION ALL SELECT * FROM pn) u GROUP BY u.chunk_pk, u.doc_pk"
    " ORDER BY s DESC, u.chunk_pk LIMIT :w)" + _RANKED
)

SLACK = 1e-9
"""Relative margin on each ceiling: float rounding of the part vs ``w * frac``."""


def frac(tf: int, dl: int, avgdl: float) -> float:
    """A posting's part of the score per unit of term weight (BM25's tf factor)."""
    if tf <= 0:
        return 0.0
    return tf * (bm25.K1 + 1) / (tf + bm25.K1 * (1 - bm25.B + bm25.B * dl / max(avgdl, 1e-9)))


@dataclass(frozen=True)
class TermStat:
    """A term's document frequency, largest tf (a bound), smallest chunk length (a bound)
    and the number of its postings with tf above 1 (:mod:`lockgate.rag.pg_term_stats`)."""

    df: int
    max_tf: int = 0
    min_dl: int = 0
    multi: int = 0

    def cap(self) -> tuple[int, int]:
        """(tf cap, postings above it): 1 when at most an eighth of the postings have a
        higher tf, else none (0: the cap is the largest tf, nothing above)."""
        if self.max_tf > 1 and self.multi * 8 <= self.df:
            return 1, self.multi
        return 0, 0

    def ceiling(self, cap: int, avgdl: float) -> float:
        """Per unit of weight: no posting with tf <= ``cap`` (0: any) gets more."""
        return frac(cap or self.max_tf, self.min_dl, avgdl)


@dataclass
class Outcome:
    """How one search ran (for the bench and the tests)."""

    path: str = "exhaustive"
    """``pruned`` (proved exact on the first try), ``widened`` (proved after a smaller
    non-essential set) or ``exhaustive`` (nothing to prune, or the proof failed)."""
    rounds: int = 0
    """Queries run (a failed proof costs one more)."""
    caps: dict[str, int] = field(default_factory=dict)
    """The proved plan's non-essential terms and their tf caps (0: none)."""


def scale_for(weights: Mapping[str, float]) -> float:
    """A power of two with every score of this query below 2**51 units."""
    top = bm25.max_score(weights)
    if top <= 0 or not math.isfinite(top):
        return 1.0
    return math.ldexp(1.0, 51 - math.frexp(top)[1])


def ceiling_units(w: float, ceiling: float, scale: float) -> float:
    """A bound, in units of ``1 / scale``, above the rounded part of any posting of a term
    of weight ``w`` whose part per unit of weight is at most ``ceiling``."""
    return w * ceiling * (1 + SLACK) * scale + 1.0


@dataclass(frozen=True)
class Plan:
    """The non-essential terms with their tf caps, and what the proof then needs."""

    caps: dict[str, int]
    bound: float
    """Units: every chunk outside the candidates scores below this."""
    skipped: int
    """Postings of the non-essential terms left out of the candidates."""


def plan(
    weights: Mapping[str, float],
    stats: Mapping[str, TermStat],
    avgdl: float,
    theta: float,
    scale: float,
    min_postings: int,
) -> Plan | None:
    """Non-essential terms, smallest ceilings first, while their ceilings sum to at most
    ``theta`` (units); None when that leaves out fewer than ``min_postings`` postings
    (not worth a proof) or would leave no essential term."""
    cap = {t: stats[t].cap() for t in weights}
    units = {t: ceiling_units(weights[t], stats[t].ceiling(cap[t][0], avgdl), scale)
             for t in weights}
    caps: dict[str, int] = {}
    total = 0.0
    skipped = 0
    for t in sorted(weights, key=lambda t: (units[t], t))[:-1]:
        if total + units[t] > theta:
            break
        total += units[t]
        caps[t] = cap[t][0]
        skipped += stats[t].df - cap[t][1]
    if not caps or skipped < min_postings:
        return None
    # a capped term's list is read twice (its postings above the cap, then the others for
    # the candidates): uncap it where its full ceiling still fits, most postings above first
    for t in sorted((t for t in caps if caps[t]), key=lambda t: (-stats[t].multi, t)):
        full = ceiling_units(weights[t], stats[t].ceiling(0, avgdl), scale)
        if total - units[t] + full <= theta:
            total += full - units[t]
            caps[t] = 0
            skipped += stats[t].multi
    return Plan(caps, total, skipped)


def _params(
    weights: Mapping[str, float], caps: Mapping[str, int], avgdl: float, scale: float,
) -> dict[str, Any]:
    p = bm25.pg_score_params(weights, avgdl)
    p["ess"] = [t not in caps for t in weights]
    p["caps"] = [caps.get(t, 0) for t in weights]
    p["scale"] = scale
    return p


FIRST_WINDOW = 4096
"""Chunks ranked before the ACL check in the first pass (at least k): a top-N sort of the
scored chunks instead of sorting them all (at 1M chunks a query holding a frequent term
scores ~40,000). Fewer than k readable in a full window: a window 8x wider."""


async def _run(
    conn: AsyncConnection, sql: str, params: dict[str, Any], where: str,
    binds: Sequence[BindParameter[Any]], window: int,
) -> list[tuple[int, float]]:
    k = int(params["k"])
    window = max(window, k, 1)
    stmt = text(sql.format(where=where)).bindparams(*binds)
    while True:
        rows = (await conn.execute(stmt, {**params, "w": window})).all()
        out = [(int(r[0]), float(r[1])) for r in rows if r[0] is not None]
        ranked = max((int(r[2]) for r in rows if r[0] is None), default=0)
        if len(out) >= k or ranked < window:
            break  # k readable, or the window held every scored chunk
        window *= 8
    out.sort(key=lambda r: (-r[1], r[0]))  # the window's order, made explicit
    return out


async def exhaustive(
    conn: AsyncConnection, weights: Mapping[str, float], avgdl: float, *,
    where: str, binds: Sequence[BindParameter[Any]], params: dict[str, Any],
    window: int = FIRST_WINDOW,
) -> list[tuple[int, float]]:
    """Top-k from every posting of every term (``params`` carries ``c``, ``k`` and the
    ACL's values)."""
    p = _params(weights, {}, avgdl, scale_for(weights))
    return await _run(conn, EXHAUSTIVE_SQL, {**params, **p}, where, binds, window)


async def pruned(
    conn: AsyncConnection, weights: Mapping[str, float], caps: Mapping[str, int],
    avgdl: float, *, where: str, binds: Sequence[BindParameter[Any]], params: dict[str, Any],
    window: int = FIRST_WINDOW,
) -> list[tuple[int, float]]:
    """Top-k readable among the candidates (chunks with a posting of an essential term
    or a posting above the cap of a non-essential one), with full scores: exact overall
    only when :func:`search`'s check passes."""
    p = _params(weights, caps, avgdl, scale_for(weights))
    return await _run(conn, PRUNED_SQL, {**params, **p}, where, binds, window)


async def search(
    conn: AsyncConnection,
    weights: Mapping[str, float],
    stats: Mapping[str, TermStat],
    avgdl: float,
    *,
    where: str,
    binds: Sequence[BindParameter[Any]],
    params: dict[str, Any],
    k: int,
    min_postings: int,
    window: int = FIRST_WINDOW,
    outcome: Outcome | None = None,
) -> list[tuple[int, float]]:
    """The exhaustive top-k, found by MaxScore pruning when that can be proved exact."""
    out = outcome if outcome is not None else Outcome()
    scale = scale_for(weights)
    # first guess of the k-th score: a chunk with the heaviest term once at average length
    # scores about its weight (tf 1, dl = avgdl: the part is exactly w); a term no chunk
    # holds has the largest weight of all and says nothing
    theta = max((w for t, w in weights.items() if stats[t].df), default=0.0) * scale
    tried: Plan | None = None
    while k > 0:
        chosen = plan(weights, stats, avgdl, theta, scale, min_postings)
        if chosen is None or (tried is not None and chosen.bound >= tried.bound):
            break
        out.rounds += 1
        rows = await pruned(conn, weights, chosen.caps, avgdl, where=where, binds=binds,
                            params=params, window=window)
        if len(rows) >= k and rows[k - 1][1] * scale >= chosen.bound:
            out.path = "pruned" if tried is None else "widened"
            out.caps = dict(chosen.caps)
            return rows
        if len(rows) < k:
            break  # fewer than k readable candidates: a smaller set would not help enough
        tried = chosen
        # the k-th readable candidate's score is a lower bound of the true k-th score
        theta = rows[k - 1][1] * scale
    out.rounds += 1
    out.path = "exhaustive"
    return await exhaustive(conn, weights, avgdl, where=where, binds=binds, params=params,
                            window=window)
