"""PostgreSQL BM25 top-k: MaxScore pruning with a run-time proof, else the exhaustive sum.

The exhaustive query (:func:`exhaustive`) sums every posting of every query term from
``rag_postings_pkey`` (an index-only scan), groups by chunk, sorts all groups and
checks the ACL in rank order until k rows pass. A query holding a frequent term sums
tens of thousands of postings that way. :func:`search` first tries :func:`pruned`:

* each term ``t`` has a ceiling ``U(t) = w(t) * peak(t)``, where ``peak(t)`` is the
  largest ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))`` over ``t``'s postings
  (read in the same index scan that counts its document frequency, :func:`term_stats`):
  no chunk gets more than ``U(t)`` from ``t``;
* the terms of smallest ceiling whose ceilings sum to at most an estimate of the k-th
  score are *non-essential* (``N``), the rest essential (``E``). The candidates are the
  chunks holding an essential term; each gets its full score (the non-essential terms'
  postings are read only for the candidates), they are ranked and the ACL is checked
  in rank order until k pass: ``theta`` is the k-th readable score;
* a chunk with no essential term scores below ``B(N)`` = the sum of the non-essential
  ceilings. So when k candidates were readable and ``theta >= B(N)``, no other chunk
  can reach the top k and the answer is exactly the exhaustive one. Otherwise the
  observed ``theta`` (a lower bound of the true k-th score) picks a smaller ``N`` and
  the query runs again; with ``N`` empty it is the exhaustive query.

Scores are summed exactly, in integers: each term's part is rounded to a multiple of
``1 / scale`` (``scale`` a power of two fitting the query's largest possible score in
51 bits) and the chunk's score is the integer sum divided by ``scale``. A float sum
depends on the order the rows arrive in, which differs between plans, so two chunks
with equal parts could come out one ulp apart and swap places; the integer sum is the
same in every plan and both queries, so pruned and exhaustive answers are identical,
scores and tie order (chunk pk) included. The rounding moves a score by less than
``m / (2 * scale)`` (``m`` query terms): ~1e-16 of the query's ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from lockgate.rag import bm25

__all__ = ["Outcome", "Plan", "TermStat", "exhaustive", "plan", "pruned", "search", "term_stats"]

_FRAC_SQL = (
    "p.tf * (CAST(:k1 AS float8) + 1) / (p.tf + CAST(:k1 AS float8)"
    " * (1 - CAST(:b AS float8) + CAST(:b AS float8) * p.n_terms / CAST(:avgdl AS float8)))"
)
"""A posting's part of the score per unit of term weight (:data:`bm25.PG_SCORE_SQL` / w)."""

_PART_SQL = f"CAST(round(({bm25.PG_SCORE_SQL}) * CAST(:scale AS float8)) AS bigint)"
"""One term's part of a chunk's score in units of ``1 / scale`` (exact integer sums)."""

_Q = ("q AS (SELECT * FROM unnest(CAST(:ts AS text[]), CAST(:ws AS float8[]),"
      " CAST(:ess AS bool[]), CAST(:cuts AS float8[]), CAST(:scan AS bool[]))"
      " AS q(term, w, ess, cut, scan))")

_RANKED = (
    " SELECT s.chunk_pk, CAST(s.s AS float8) / CAST(:scale AS float8) FROM s WHERE EXISTS"
    " (SELECT 1 FROM rag_documents d WHERE d.id = s.doc_pk AND {where} OFFSET 0) LIMIT :k"
)
"""The ACL checked in rank order until k rows pass (``OFFSET 0`` keeps the EXISTS a
per-row subplan: pulled up into a hash join it could reorder the rows before the LIMIT)."""

EXHAUSTIVE_SQL = (
    f"WITH {_Q}, s AS MATERIALIZED (SELECT p.chunk_pk, p.doc_pk, SUM({_PART_SQL}) AS s"
    " FROM rag_postings p JOIN q ON q.term = p.term WHERE p.collection_id = :c"
    " GROUP BY p.chunk_pk, p.doc_pk ORDER BY s DESC, p.chunk_pk)" + _RANKED
)

PRUNED_SQL = (
    f"WITH {_Q},"
    # the candidates: every posting of the essential terms, and the postings of the
    # non-essential terms above their cut (scanned only where some may be)
    f" pe AS MATERIALIZED (SELECT p.chunk_pk, p.doc_pk, {_PART_SQL} AS v"
    " FROM rag_postings p JOIN q ON q.term = p.term AND (q.ess OR q.scan)"
    f" WHERE p.collection_id = :c AND (q.ess OR {_FRAC_SQL} > q.cut)),"
    # the other postings of the non-essential terms, for those candidates only
    f" pn AS (SELECT p.chunk_pk, p.doc_pk, {_PART_SQL} AS v FROM rag_postings p"
    " JOIN q ON q.term = p.term AND NOT q.ess WHERE p.collection_id = :c"
    f" AND {_FRAC_SQL} <= q.cut AND p.chunk_pk IN (SELECT pe.chunk_pk FROM pe)),"
    " s AS MATERIALIZED (SELECT u.chunk_pk, u.doc_pk, SUM(u.v) AS s FROM"
    " (SELECT * FROM pe UNION ALL SELECT * FROM pn) u GROUP BY u.chunk_pk, u.doc_pk"
    " ORDER BY s DESC, u.chunk_pk)" + _RANKED
)

LEVELS = (1.0, 1.25, 1.5)
"""Cuts a non-essential term may get besides its peak (parts per unit of weight; 1.0 is
the part of a single occurrence in a chunk of average length)."""

STATS_SQL = (
    "SELECT x.term, COUNT(*), MAX(x.f), "
    + ", ".join(f"COUNT(*) FILTER (WHERE x.f > CAST(:l{i} AS float8))"
                for i in range(len(LEVELS)))
    + f" FROM (SELECT p.term, {_FRAC_SQL} AS f FROM rag_postings p"
    " WHERE p.collection_id = :c AND p.term IN :ts) x GROUP BY x.term"
)

SLACK = 1e-9
"""Relative margin on each ceiling: float rounding of the part vs ``w * peak``."""


@dataclass(frozen=True)
class TermStat:
    """A term's document frequency, ``peak`` (its largest part per unit of weight) and
    how many of its postings are above each of :data:`LEVELS`."""

    df: int
    peak: float
    above: tuple[int, ...] = ()

    def cut(self) -> tuple[float, int]:
        """(cut, postings above it): the lowest level with at most an eighth of the
        postings above it, else the peak (none above)."""
        for level, n in zip(LEVELS, self.above, strict=False):
            if level < self.peak and n * 8 <= self.df:
                return level, n
        return self.peak, 0


@dataclass
class Outcome:
    """How one search ran (for the bench and the tests)."""

    path: str = "exhaustive"
    """``pruned`` (proved exact on the first try), ``widened`` (proved after a smaller
    non-essential set) or ``exhaustive`` (nothing to prune, or the proof failed)."""
    rounds: int = 0
    """Queries run (a failed proof costs one more)."""
    cuts: dict[str, float] = field(default_factory=dict)
    """The proved plan's non-essential terms and their cuts."""
    tiered: bool = False
    """Some non-essential term was cut below its peak (its high postings were candidates)."""


async def term_stats(
    conn: AsyncConnection, cid: int, terms: Sequence[str], avgdl: float
) -> dict[str, TermStat]:
    """Document frequency and peak of each term (one index-only scan of its postings)."""
    uniq = sorted(set(terms))
    if not uniq:
        return {}
    rows = (
        await conn.execute(
            text(STATS_SQL).bindparams(bindparam("ts", expanding=True)),
            {"c": cid, "ts": uniq, "k1": bm25.K1, "b": bm25.B, "avgdl": max(avgdl, 1e-9),
             **{f"l{i}": v for i, v in enumerate(LEVELS)}},
        )
    ).all()
    found = {r[0]: TermStat(int(r[1]), float(r[2] or 0.0), tuple(int(x) for x in r[3:]))
             for r in rows}
    return {t: found.get(t, TermStat(0, 0.0)) for t in uniq}


def scale_for(weights: Mapping[str, float]) -> float:
    """A power of two with every score of this query below 2**51 units."""
    top = bm25.max_score(weights)
    if top <= 0 or not math.isfinite(top):
        return 1.0
    return math.ldexp(1.0, 51 - math.frexp(top)[1])


def ceiling_units(w: float, cut: float, scale: float) -> float:
    """A bound, in units of ``1 / scale``, above the rounded part of any posting of a term
    of weight ``w`` whose part per unit of weight is at most ``cut``."""
    return w * cut * (1 + SLACK) * scale + 1.0


@dataclass(frozen=True)
class Plan:
    """The non-essential terms with their cuts, and what the proof then needs."""

    cuts: dict[str, float]
    bound: float
    """Units: every chunk outside the candidates scores below this."""
    skipped: int
    """Postings of the non-essential terms left out of the candidates."""


def plan(
    weights: Mapping[str, float],
    stats: Mapping[str, TermStat],
    theta: float,
    scale: float,
    min_postings: int,
) -> Plan | None:
    """Non-essential terms, smallest ceilings (``w * cut``) first, while their ceilings sum
    to at most ``theta`` (units); None when that leaves out fewer than ``min_postings``
    postings (not worth a proof) or would leave no essential term."""
    cut = {t: stats[t].cut() for t in weights}
    order = sorted(weights, key=lambda t: (weights[t] * cut[t][0], t))
    cuts: dict[str, float] = {}
    total = skipped = 0.0
    for t in order[:-1]:
        units = ceiling_units(weights[t], cut[t][0], scale)
        if total + units > theta:
            break
        total += units
        cuts[t] = cut[t][0]
        skipped += stats[t].df - cut[t][1]
    if not cuts or skipped < min_postings:
        return None
    return Plan(cuts, total, int(skipped))


def _params(
    weights: Mapping[str, float], stats: Mapping[str, TermStat], cuts: Mapping[str, float],
    avgdl: float, scale: float,
) -> dict[str, Any]:
    p = bm25.pg_score_params(weights, avgdl)
    p["ess"] = [t not in cuts for t in weights]
    p["cuts"] = [cuts.get(t, 0.0) for t in weights]
    # a term cut at its peak has no posting above the cut: its list is not scanned
    p["scan"] = [t in cuts and cuts[t] < stats[t].peak for t in weights]
    p["scale"] = scale
    return p


async def _run(
    conn: AsyncConnection, sql: str, params: dict[str, Any], where: str,
    binds: Sequence[BindParameter[Any]],
) -> list[tuple[int, float]]:
    rows = (await conn.execute(text(sql.format(where=where)).bindparams(*binds), params)).all()
    out = [(int(r[0]), float(r[1])) for r in rows]
    out.sort(key=lambda r: (-r[1], r[0]))  # the CTE's order, made explicit
    return out


async def exhaustive(
    conn: AsyncConnection, weights: Mapping[str, float], avgdl: float, *,
    where: str, binds: Sequence[BindParameter[Any]], params: dict[str, Any],
) -> list[tuple[int, float]]:
    """Top-k from every posting of every term (``params`` carries ``c``, ``k`` and the
    ACL's values)."""
    p = _params(weights, {}, {}, avgdl, scale_for(weights))
    return await _run(conn, EXHAUSTIVE_SQL, {**params, **p}, where, binds)


async def pruned(
    conn: AsyncConnection, weights: Mapping[str, float], stats: Mapping[str, TermStat],
    cuts: Mapping[str, float], avgdl: float, *,
    where: str, binds: Sequence[BindParameter[Any]], params: dict[str, Any],
) -> list[tuple[int, float]]:
    """Top-k readable among the candidates (chunks with a posting of an essential term
    or a posting of a non-essential term above its cut), with full scores: exact
    overall only when :func:`search`'s check passes."""
    p = _params(weights, stats, cuts, avgdl, scale_for(weights))
    return await _run(conn, PRUNED_SQL, {**params, **p}, where, binds)


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
    outcome: Outcome | None = None,
) -> list[tuple[int, float]]:
    """The exhaustive top-k, found by MaxScore pruning when that can be proved exact."""
    out = outcome if outcome is not None else Outcome()
    scale = scale_for(weights)
    # first guess of the k-th score: a chunk with the heaviest term once at average length
    # scores about its weight (tf 1, dl = avgdl: the part is exactly w)
    theta = max(weights.values(), default=0.0) * scale
    tried: Plan | None = None
    while k > 0:
        chosen = plan(weights, stats, theta, scale, min_postings)
        if chosen is None or (tried is not None and chosen.bound >= tried.bound):
            break
        out.rounds += 1
        rows = await pruned(conn, weights, stats, chosen.cuts, avgdl, where=where,
                            binds=binds, params=params)
        if len(rows) >= k and rows[k - 1][1] * scale >= chosen.bound:
            out.path = "pruned" if tried is None else "widened"
            out.cuts = dict(chosen.cuts)
            out.tiered = any(c < stats[t].peak for t, c in chosen.cuts.items())
            return rows
        if len(rows) < k:
            break  # fewer than k readable candidates: a smaller set would not help enough
        tried = chosen
        # the k-th readable candidate's score is a lower bound of the true k-th score
        theta = rows[k - 1][1] * scale
    out.rounds += 1
    out.path = "exhaustive"
    return await exhaustive(conn, weights, avgdl, where=where, binds=binds, params=params)
