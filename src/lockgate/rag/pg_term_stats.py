"""PostgreSQL ``rag_term_stats``: each term's BM25 statistics, kept at write time.

A query's terms need their document frequency (the BM25 weight) and the bounds the
MaxScore proof of :mod:`lockgate.rag.pg_lexical` uses: the largest tf, the smallest
chunk length and the number of postings with tf above 1 (:class:`TermStat`). Counting
them from ``rag_postings`` cost an index-only scan of every posting of the query's
terms: 8-16 ms for a frequent term at 1,000,000 chunks, paid before the query itself.
They are kept instead in one row per (collection, term), written in the transaction
that writes or deletes the postings:

* ``df`` and ``multi`` exactly: ingest adds each new chunk's terms, a delete subtracts
  what its ``DELETE ... RETURNING`` took out; a row whose ``df`` reaches 0 is deleted
  (so a term that comes back starts with fresh bounds);
* ``max_tf`` and ``min_dl`` as bounds: ingest widens them, a delete leaves them. A
  bound that is no longer attained makes a ceiling looser, never wrong: the proof
  still holds, it may just prune less. :func:`rebuild` (``lockgate rag refresh-stats``)
  counts a collection's rows again, bounds exact.

The rows are written after the collection's version bump (:func:`write` is the last
statement of a write transaction), so concurrent writers of one collection take the
version row first and then these rows in the same order: no deadlock, and no wait
beyond the one the version row already imposes. A reader in one REPEATABLE READ
snapshot sees the version, the statistics and the postings of the same commits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from lockgate.rag.pg_lexical import TermStat

__all__ = ["TermDelta", "drop", "read", "rebuild", "recount", "remove_postings", "write"]

NO_MIN = 2**31 - 1
"""``min_dl`` of a delta that adds no posting of the term (LEAST keeps the row's)."""

_READ_SQL = (
    "SELECT term, df, max_tf, min_dl, multi FROM rag_term_stats"
    " WHERE collection_id = :c AND term IN :ts"
)

_COUNTED = "term, COUNT(*), MAX(tf), MIN(n_terms), COUNT(*) FILTER (WHERE tf > 1)"
"""A term's row counted from its postings: df, max_tf, min_dl, multi."""

_RECOUNT_SQL = (
    f"SELECT {_COUNTED} FROM rag_postings WHERE collection_id = :c AND term IN :ts"
    " GROUP BY term"
)

_REMOVE_SQL = (
    "WITH d AS (DELETE FROM rag_postings WHERE collection_id = :c AND chunk_pk IN"
    " (SELECT id FROM rag_chunks WHERE doc_pk IN :pks) RETURNING term, tf)"
    " SELECT term, COUNT(*), COUNT(*) FILTER (WHERE tf > 1) FROM d GROUP BY term"
)

_WRITE_SQL = (
    "INSERT INTO rag_term_stats AS s (collection_id, term, df, max_tf, min_dl, multi)"
    " SELECT :c, u.t, u.d, u.x, u.n, u.m FROM unnest(CAST(:ts AS text[]),"
    " CAST(:ds AS int[]), CAST(:xs AS int[]), CAST(:ns AS int[]), CAST(:ms AS int[]))"
    " AS u(t, d, x, n, m) ORDER BY u.t"
    " ON CONFLICT (collection_id, term) DO UPDATE SET df = s.df + EXCLUDED.df,"
    " max_tf = GREATEST(s.max_tf, EXCLUDED.max_tf), min_dl = LEAST(s.min_dl, EXCLUDED.min_dl),"
    " multi = s.multi + EXCLUDED.multi"
)

_GONE_SQL = (
    "DELETE FROM rag_term_stats WHERE collection_id = :c"
    " AND term = ANY(CAST(:ts AS text[])) AND df <= 0"
)


@dataclass
class TermDelta:
    """What one write transaction changes in a collection's term statistics."""

    df: Counter[str] = field(default_factory=Counter)
    multi: Counter[str] = field(default_factory=Counter)
    max_tf: dict[str, int] = field(default_factory=dict)
    min_dl: dict[str, int] = field(default_factory=dict)

    def add_chunks(self, counts: Iterable[Counter[str]]) -> None:
        """New chunks (their term counts) were indexed.

        Per posting only C loops where it can (a batch of 20,000 chunks holds ~1.2M
        postings): df counts every key, the smallest length comes from ``dict.fromkeys``
        over the chunks longest first (shorter ones overwrite), and only the postings
        with tf > 1 are visited one by one (any posting gives a largest tf of at least 1).
        """
        by_len = sorted(((sum(tc.values()), tc) for tc in counts), key=lambda x: -x[0])
        self.df.update(chain.from_iterable(tc for _, tc in by_len))
        shortest: dict[str, int] = {}
        for n, tc in by_len:
            shortest.update(dict.fromkeys(tc, n))
        min_dl, max_tf = self.min_dl, self.max_tf
        for term, n in shortest.items():
            if n < min_dl.get(term, NO_MIN):
                min_dl[term] = n
            if term not in max_tf:
                max_tf[term] = 1
        for n, tc in by_len:
            if n == len(tc):
                continue  # every tf is 1
            for term, tf in tc.items():
                if tf > 1:
                    self.multi[term] += 1
                    if tf > max_tf[term]:
                        max_tf[term] = tf

    def remove(self, term: str, postings: int, multi: int) -> None:
        """``postings`` postings of ``term`` (``multi`` of them with tf > 1) were deleted."""
        self.df[term] -= postings
        self.multi[term] -= multi

    def __bool__(self) -> bool:
        return any(self.df.values()) or any(self.multi.values()) or bool(self.max_tf)


async def read(conn: AsyncConnection, cid: int, terms: Sequence[str]) -> dict[str, TermStat]:
    """Each term's :class:`TermStat` (``TermStat(0)``: no chunk holds it)."""
    return await _select(conn, _READ_SQL, cid, terms)


async def recount(conn: AsyncConnection, cid: int, terms: Sequence[str]) -> dict[str, TermStat]:
    """The same, counted from the postings (exact bounds; the tests' reference)."""
    return await _select(conn, _RECOUNT_SQL, cid, terms)


async def _select(conn: AsyncConnection, sql: str, cid: int, terms: Sequence[str]
                  ) -> dict[str, TermStat]:
    uniq = sorted(set(terms))
    if not uniq:
        return {}
    rows = (
        await conn.execute(text(sql).bindparams(bindparam("ts", expanding=True)),
                           {"c": cid, "ts": uniq})
    ).all()
    found = {r[0]: TermStat(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}
    return {t: found.get(t, TermStat(0)) for t in uniq}


async def remove_postings(conn: AsyncConnection, cid: int, doc_pks: Sequence[int],
                          delta: TermDelta) -> None:
    """Delete the postings of these documents' chunks and count them into ``delta``."""
    rows = await conn.execute(
        text(_REMOVE_SQL).bindparams(bindparam("pks", expanding=True)),
        {"c": cid, "pks": list(doc_pks)},
    )
    for term, postings, multi in rows:
        delta.remove(term, int(postings), int(multi))


async def write(conn: AsyncConnection, cid: int, delta: TermDelta) -> None:
    """Apply ``delta`` (after the version bump: see the module's note on locks)."""
    terms = sorted(t for t in set(delta.df) | set(delta.max_tf)
                   if delta.df[t] or delta.multi[t] or t in delta.max_tf)
    if not terms:
        return
    await conn.execute(text(_WRITE_SQL), {
        "c": cid, "ts": terms,
        "ds": [delta.df[t] for t in terms],
        "xs": [delta.max_tf.get(t, 0) for t in terms],
        "ns": [delta.min_dl.get(t, NO_MIN) for t in terms],
        "ms": [delta.multi[t] for t in terms],
    })
    gone = [t for t in terms if delta.df[t] < 0]
    if gone:
        await conn.execute(text(_GONE_SQL), {"c": cid, "ts": gone})


_REBUILD_SQL = (
    "INSERT INTO rag_term_stats (collection_id, term, df, max_tf, min_dl, multi)"
    f" SELECT :c, {_COUNTED} FROM rag_postings WHERE collection_id = :c"
    " GROUP BY term ORDER BY term"
)


async def rebuild(conn: AsyncConnection, cid: int) -> int:
    """Count a collection's rows again from its postings (exact bounds: the ones deletes
    left may be looser); the number of terms. Call it after the version bump, like
    :func:`write`."""
    await drop(conn, cid)
    result = await conn.execute(text(_REBUILD_SQL), {"c": cid})
    return int(result.rowcount or 0)


async def drop(conn: AsyncConnection, cid: int) -> None:
    """Forget a dropped collection's statistics."""
    await conn.execute(text("DELETE FROM rag_term_stats WHERE collection_id = :c"), {"c": cid})
