"""The lexical (BM25) index of a collection's chunks, on either backend.

* SQLite: one FTS5 table per collection (``rag_fts_<id>``, rowid = chunk pk)
  holding the analysed terms (:mod:`lockgate.rag.analysis`), scored by FTS5's
  ``bm25()``; matches are ranked first and the ACL checked in rank order. The table
  is made and dropped with its collection; it is not part of the migrated schema.
* PostgreSQL: ``rag_postings`` (collection, term, chunk, tf, doc, chunk length),
  scored in SQL with :data:`lockgate.rag.bm25.PG_SCORE_SQL` from its primary key (which
  covers tf, doc and length: an index-only scan), then the ACL checked in rank order.
  The top k comes from :mod:`lockgate.rag.pg_lexical`: MaxScore pruning (the postings
  of frequent, low-ceiling terms are read only for the candidates the other terms
  give) with a proof at run time that nothing outside the candidates can reach the
  k-th readable score, else the exhaustive query; the answer is the exhaustive one
  either way. Each term's document frequency and bounds are kept in
  ``rag_term_stats`` by the writes (:mod:`lockgate.rag.pg_term_stats`: a primary-key
  read per query), cached per collection version. No foreign key and one term index
  (migration 0018): the postings go in by ``COPY`` at ingest speed; this module deletes
  them before their chunks.

Both rank with the same formula (:mod:`lockgate.rag.bm25`). Every method works on
the caller's connection, so index writes share the transaction of the rows they
index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from lockgate.rag import bm25, catalog, pg_lexical, pg_term_stats
from lockgate.rag.pg_bulk import copy_rows
from lockgate.store.tables import RAG_FTS_PREFIX

__all__ = ["LexicalIndex", "fts_table"]


MAX_WINDOW = 1 << 62
"""No cap: a window this wide holds every match."""


def fts_table(cid: int) -> str:
    return f"{RAG_FTS_PREFIX}{int(cid)}"


def _fts_quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


class LexicalIndex:
    """Writes and searches the BM25 index; caches corpus statistics per collection version."""

    first_window = 1000
    """SQLite: matches ranked before the ACL check in the first pass (at least k)."""

    prune_min_postings = 2000
    """PostgreSQL: try MaxScore pruning only when the non-essential terms hold at least
    this many postings (below, the exhaustive sum costs about as much as the proof)."""

    pg_first_window = pg_lexical.FIRST_WINDOW
    """PostgreSQL: scored chunks ranked before the ACL check in the first pass."""

    term_cache_size = 50_000
    """PostgreSQL: term statistics kept per collection version (then the cache restarts)."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite
        self._stats_cache: dict[int, tuple[int, int, float]] = {}
        self._terms_cache: dict[int, tuple[int, dict[str, pg_lexical.TermStat]]] = {}
        self.pg_pruning = True
        """PostgreSQL: False runs the exhaustive query always (the bench's A/B, tests)."""
        self.outcomes: Counter[str] = Counter()
        """PostgreSQL: searches with pruning on, by path (``pruned`` / ``widened`` /
        ``exhaustive``: :class:`lockgate.rag.pg_lexical.Outcome`)."""
        self.last_outcome: pg_lexical.Outcome | None = None

    # ------------------------------------------------------------ writes

    async def create(self, conn: AsyncConnection, cid: int) -> None:
        """Make the index of a new collection (SQLite; PostgreSQL shares rag_postings)."""
        if self.sqlite:
            await conn.execute(
                text(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts_table(cid)}"
                    " USING fts5(terms, tokenize='unicode61 remove_diacritics 0')"
                )
            )

    async def drop(self, conn: AsyncConnection, cid: int) -> None:
        """Drop the index of a collection whose documents are gone."""
        if self.sqlite:
            await conn.execute(text(f"DROP TABLE IF EXISTS {fts_table(cid)}"))
        else:  # no foreign key cascades to the postings (migration 0018): none may outlive it
            await conn.execute(text("DELETE FROM rag_postings WHERE collection_id = :c"),
                               {"c": cid})
            await pg_term_stats.drop(conn, cid)
        self._stats_cache.pop(cid, None)
        self._terms_cache.pop(cid, None)

    async def add(
        self, conn: AsyncConnection, cid: int, entries: Sequence[tuple[int, int, Counter[str]]],
        delta: pg_term_stats.TermDelta,
    ) -> None:
        """Index (chunk pk, doc pk, term counts) triples.

        PostgreSQL: the postings go in with ``COPY`` (asyncpg's binary copy, inside the
        caller's transaction): ~80 rows per chunk made row-by-row INSERTs the ingest cost.
        Their term statistics are counted into ``delta``.
        """
        if not entries:
            return
        if self.sqlite:
            await conn.execute(
                text(f"INSERT INTO {fts_table(cid)} (rowid, terms) VALUES (:r, :t)"),
                [{"r": pk, "t": " ".join(tc.elements())} for pk, _, tc in entries],
            )
            return
        delta.add_chunks(tc for _, _, tc in entries)
        records = [
            (cid, term, pk, tf, doc_pk, n)
            for pk, doc_pk, tc in entries
            for n in (sum(tc.values()),)
            for term, tf in tc.items()
        ]
        # in key order: consecutive index insertions land on the same or adjacent pages
        records.sort(key=lambda r: (r[1], r[2]))
        await copy_rows(conn, "rag_postings",
                        ["collection_id", "term", "chunk_pk", "tf", "doc_pk", "n_terms"], records)

    async def remove_documents(self, conn: AsyncConnection, cid: int, doc_pks: list[int],
                               delta: pg_term_stats.TermDelta) -> None:
        """Unindex the chunks of these documents (before their chunk rows are deleted);
        PostgreSQL: what they held is counted out of ``delta``."""
        if not doc_pks:
            return
        if self.sqlite:
            await conn.execute(
                text(
                    f"DELETE FROM {fts_table(cid)} WHERE rowid IN"
                    " (SELECT id FROM rag_chunks WHERE doc_pk IN :pks)"
                ).bindparams(bindparam("pks", expanding=True)),
                {"pks": doc_pks},
            )
            return
        await pg_term_stats.remove_postings(conn, cid, doc_pks, delta)

    async def write_term_stats(self, conn: AsyncConnection, cid: int,
                               delta: pg_term_stats.TermDelta) -> None:
        """PostgreSQL: apply the transaction's ``delta``; its last write, after the
        collection's version bump (:mod:`lockgate.rag.pg_term_stats`)."""
        if not self.sqlite and delta:
            await pg_term_stats.write(conn, cid, delta)

    async def rebuild_term_stats(self, conn: AsyncConnection, cid: int) -> int | None:
        """PostgreSQL: count the term statistics again from the postings (after the
        version bump); the number of terms. None on SQLite (FTS5 keeps its own)."""
        if self.sqlite:
            return None
        n = await pg_term_stats.rebuild(conn, cid)
        self._terms_cache.pop(cid, None)
        return n

    # ------------------------------------------------------------ statistics

    async def stats(self, conn: AsyncConnection, cid: int, version: int) -> tuple[int, float]:
        """(chunk count, average index terms per chunk), cached per collection version."""
        cached = self._stats_cache.get(cid)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        row = (
            await conn.execute(
                text(
                    "SELECT COUNT(*), COALESCE(AVG(n_terms), 0) FROM rag_chunks"
                    " WHERE collection_id = :c"
                ),
                {"c": cid},
            )
        ).one()
        n, avg = int(row[0]), float(row[1] or 0.0)
        self._stats_cache[cid] = (version, n, avg)
        return n, avg

    async def document_frequencies(
        self, conn: AsyncConnection, cid: int, terms: Sequence[str], version: int | None = None
    ) -> dict[str, int]:
        """Chunks holding each term (PostgreSQL: cached per ``version``, read when None)."""
        uniq = sorted(set(terms))
        if not uniq:
            return {}
        if self.sqlite:
            out: dict[str, int] = {}
            for t in uniq:
                n = (
                    await conn.execute(
                        text(f"SELECT COUNT(*) FROM {fts_table(cid)} WHERE terms MATCH :q"),
                        {"q": _fts_quote(t)},
                    )
                ).scalar()
                out[t] = int(n or 0)
            return out
        # PostgreSQL: with the peaks search needs, from the same scan (cached per version)
        if version is None:
            version = await catalog.version(conn, cid)
        stats = await self.term_stats(conn, cid, uniq, version)
        return {t: stats[t].df for t in uniq}

    async def term_stats(
        self, conn: AsyncConnection, cid: int, terms: Sequence[str], version: int
    ) -> dict[str, pg_lexical.TermStat]:
        """PostgreSQL: each term's document frequency and bounds, cached per collection
        version."""
        cached = self._terms_cache.get(cid)
        if cached is None or cached[0] != version or len(cached[1]) > self.term_cache_size:
            cached = self._terms_cache[cid] = (version, {})
        known = cached[1]
        missing = sorted({t for t in terms if t not in known})
        if missing:
            known.update(await pg_term_stats.read(conn, cid, missing))
        return {t: known[t] for t in terms}

    def clear_term_cache(self) -> None:
        """Forget the cached term statistics (the bench measures each query cold)."""
        self._terms_cache.clear()

    async def max_score(
        self, conn: AsyncConnection, cid: int, terms: Sequence[str], version: int
    ) -> float:
        """The query's BM25 ceiling (:func:`lockgate.rag.bm25.max_score`) in this collection."""
        n, _ = await self.stats(conn, cid, version)
        dfs = await self.document_frequencies(conn, cid, terms, version)
        return bm25.max_score(bm25.query_weights(terms, n, dfs))

    # ------------------------------------------------------------ search

    async def search(
        self,
        conn: AsyncConnection,
        cid: int,
        terms: Sequence[str],
        *,
        where: str,
        binds: Sequence[BindParameter[Any]],
        params: dict[str, Any],
        k: int,
        version: int,
    ) -> list[tuple[int, float]]:
        """Top-k (chunk pk, BM25 score, higher is better) among chunks of ``d`` rows ``where``.

        ``terms`` may repeat a term: each occurrence adds its part to the score (FTS5: a
        phrase per occurrence; PostgreSQL: the term's weight times its count).

        ``where``/``binds``/``params`` come from :func:`lockgate.rag.access.readable_where`.
        PostgreSQL reads the version again, in the snapshot its queries run in (``conn``
        must not have begun a transaction).
        """
        if not terms or k <= 0:
            return []
        params = {**params, "c": cid, "k": k}
        if self.sqlite:
            fts = fts_table(cid)
            params["q"] = " OR ".join(_fts_quote(t) for t in terms)
            # the best `window` matches by bm25() (a top-N sort), then the ACL checked in
            # rank order until k pass; too few readable in the window: a window 8x wider
            # (at 1M chunks the ACL join on every match was most of the cost)
            sql = (
                f"SELECT o.r, o.s FROM (SELECT rowid AS r, bm25({fts}) AS s FROM {fts}"
                f" WHERE {fts} MATCH :q ORDER BY s, rowid LIMIT :w) o WHERE EXISTS (SELECT 1"
                " FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_pk WHERE c.id = o.r"
                f" AND {where}) LIMIT :k"
            )
            window = max(self.first_window, k)
            while True:
                params["w"] = window
                rows = (await conn.execute(text(sql).bindparams(*binds), params)).all()
                if len(rows) >= k or window >= MAX_WINDOW:
                    break
                counted = (await conn.execute(
                    text(f"SELECT COUNT(*) FROM {fts} WHERE {fts} MATCH :q"),
                    {"q": params["q"]})).scalar()
                if int(counted or 0) <= window:
                    break  # the window already held every match
                window *= 8
            out = [(int(r[0]), -float(r[1])) for r in rows]
            out.sort(key=lambda r: (-r[1], r[0]))
            return out
        # one snapshot for the version, the term statistics and the queries: the ceilings
        # the pruning proof uses then bound exactly the postings the query reads (a write
        # commits its postings and its version bump together)
        await conn.execution_options(isolation_level="REPEATABLE READ")
        version = await catalog.version(conn, cid)
        n, avgdl = await self.stats(conn, cid, version)
        stats = await self.term_stats(conn, cid, terms, version)
        weights = bm25.query_weights(terms, n, {t: s.df for t, s in stats.items()})
        outcome = pg_lexical.Outcome()
        self.last_outcome = outcome
        if not self.pg_pruning:
            outcome.rounds = 1
            return await pg_lexical.exhaustive(conn, weights, avgdl, where=where, binds=binds,
                                               params=params, window=self.pg_first_window)
        found = await pg_lexical.search(
            conn, weights, stats, avgdl, where=where, binds=binds, params=params, k=k,
            min_postings=self.prune_min_postings, window=self.pg_first_window,
            outcome=outcome)
        self.outcomes[outcome.path] += 1
        return found
