"""PostgreSQL ``rag_term_stats`` stays true through every write, and 0019 backfills it.

After random ingests, re-ingests of changed documents, deletes and concurrent ingests
from two stores into one collection, every term's kept ``df`` and ``multi`` equal the
counts from ``rag_postings`` (:func:`lockgate.rag.pg_term_stats.recount`), its kept
``max_tf`` / ``min_dl`` bound the true ones (a delete leaves them), and a term no chunk
holds any more has no row. Revision 0019 fills the table from the postings already
stored.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
import sqlalchemy as sa
from alembic import command

from lockgate.rag import pg_term_stats
from lockgate.rag.catalog import UnknownCollection
from lockgate.rag.service import RagService
from lockgate.rag.types import SourceDocument
from lockgate.store.migrate import alembic_config, migrate_engine
from tests.rag.conftest import rag_service_at
from tests.rag.rag_support import OPERATOR

pytestmark = pytest.mark.postgres

VOCAB = 120
ROUNDS = 8


def _doc(rng: random.Random, doc_id: str) -> SourceDocument:
    words = rng.choices(range(VOCAB), weights=[1 / (i + 1) for i in range(VOCAB)],
                        k=rng.randint(1, 40))
    return SourceDocument(doc_id=doc_id, title="", text=" ".join(f"w{w}" for w in words),
                          principals=("public",))


async def _check(svc: RagService, name: str) -> int:
    """Kept vs counted, every term of the vocabulary; returns the terms held."""
    coll = await svc.store.get_collection(name)
    assert coll is not None
    terms = [f"w{i}" for i in range(VOCAB)]
    async with svc.store.engine.connect() as conn:
        kept = await pg_term_stats.read(conn, coll.id, terms)
        true = await pg_term_stats.recount(conn, coll.id, terms)
        rows = (await conn.execute(sa.text(
            "SELECT COUNT(*) FROM rag_term_stats WHERE collection_id = :c AND df <= 0"),
            {"c": coll.id})).scalar()
    assert rows == 0
    for t in terms:
        k, r = kept[t], true[t]
        assert (k.df, k.multi) == (r.df, r.multi), t
        if r.df:
            assert k.max_tf >= r.max_tf and k.min_dl <= r.min_dl, (t, k, r)
        else:
            assert k.max_tf == 0, (t, k)  # no row left behind
    return sum(1 for t in terms if true[t].df)


async def test_kept_statistics_match_the_postings_through_writes(pg_url: str) -> None:
    rng = random.Random(7)
    async with rag_service_at(pg_url) as svc:
        await svc.store.create_collection("c", None)
        docs = {f"d{i}": _doc(rng, f"d{i}") for i in range(150)}
        await svc.ingest_documents("c", list(docs.values()), principal=OPERATOR)
        assert await _check(svc, "c") > 50
        for _ in range(6):
            # change some documents (their old postings come out, the new go in) and
            # delete others, in separate transactions
            changed = rng.sample(sorted(docs), 25)
            for d in changed:
                docs[d] = _doc(rng, d)
            await svc.ingest_documents("c", [docs[d] for d in changed], principal=OPERATOR)
            gone = rng.sample(sorted(docs), 10)
            assert await svc.delete_documents("c", gone) == 10
            for d in gone:
                del docs[d]
            await _check(svc, "c")
        # rare terms disappear entirely and their rows with them
        await svc.delete_documents("c", sorted(docs)[: len(docs) - 3])
        held = await _check(svc, "c")
        assert held < 60
        await svc.drop("c")
        async with svc.store.engine.connect() as conn:
            left = (await conn.execute(sa.text("SELECT COUNT(*) FROM rag_term_stats"))).scalar()
        assert left == 0


async def test_concurrent_ingests_into_one_collection_stay_exact(pg_url: str) -> None:
    """Two stores (two engines, as two processes) write one collection at once: the
    version row orders them, the statistics add up and nothing deadlocks."""
    async with rag_service_at(pg_url) as a, rag_service_at(pg_url) as b:
        await a.store.create_collection("c", None)
        rng = random.Random(11)

        async def writer(svc: RagService, tag: str) -> None:
            for rnd in range(ROUNDS):
                batch = [_doc(rng, f"{tag}{rnd}-{i}") for i in range(40)]
                await svc.ingest_documents("c", batch, principal=OPERATOR)
                # shared documents too: both replace the same ids
                shared = [_doc(rng, f"s{i}") for i in range(10)]
                await svc.ingest_documents("c", shared, principal=OPERATOR)

        await asyncio.wait_for(asyncio.gather(writer(a, "a"), writer(b, "b")), 120)
        await _check(a, "c")
        coll = await a.store.get_collection("c")
        assert coll is not None
        async with a.store.engine.connect() as conn:
            chunks = (await conn.execute(sa.text(
                "SELECT COUNT(*) FROM rag_chunks WHERE collection_id = :c"),
                {"c": coll.id})).scalar()
        assert chunks == 2 * ROUNDS * 40 + 10


async def test_two_writers_replacing_the_same_documents_take_turns(pg_url: str) -> None:
    """Both read "no such document" and both insert it: without the per-id lock the
    second commit failed on the unique (collection, doc_id) key."""
    async with rag_service_at(pg_url) as a, rag_service_at(pg_url) as b:
        await a.store.create_collection("c", None)
        rng = random.Random(13)
        for rnd in range(12):
            ids = [f"s{i}" for i in range(20)]
            # every other round the delete names more than LOCK_IDS_MAX ids: it takes the
            # collection's lock, the ingests their ids' locks
            gone = ids[:3] + [f"none{i}" for i in range(300 * (rnd % 2))]
            await asyncio.wait_for(asyncio.gather(
                a.ingest_documents("c", [_doc(rng, d) for d in ids], principal=OPERATOR),
                b.ingest_documents("c", [_doc(rng, d) for d in ids], principal=OPERATOR),
                b.delete_documents("c", gone)), 60)
        await _check(a, "c")


async def test_a_delete_of_very_many_ids_fits_the_lock_table(pg_url: str) -> None:
    """200,000 per-id advisory locks ran PostgreSQL out of shared memory (the lock table
    holds max_locks_per_transaction x max_connections); past LOCK_IDS_MAX ids one
    collection lock stands for them."""
    async with rag_service_at(pg_url) as svc:
        await svc.store.create_collection("c", None)
        rng = random.Random(2)
        await svc.ingest_documents("c", [_doc(rng, f"d{i}") for i in range(30)],
                                   principal=OPERATOR)
        many = [f"d{i}" for i in range(200_000)]
        assert await svc.delete_documents("c", many) == 30
        await _check(svc, "c")


async def test_a_drop_racing_ingests_leaves_nothing_behind(pg_url: str) -> None:
    """An ingest that committed while a drop ran left postings and term statistics of the
    dropped collection behind (no foreign key holds them). The drop now waits for writers
    in flight and later writers find the collection gone (UnknownCollection)."""
    rng = random.Random(17)
    outcomes: Counter[str] = Counter()
    async with rag_service_at(pg_url) as a, rag_service_at(pg_url) as b:
        for rnd in range(8):
            name = f"c{rnd}"
            await a.store.create_collection(name, None)
            await a.ingest_documents(name, [_doc(rng, f"o{i}") for i in range(150)],
                                     principal=OPERATOR)

            async def ingest(name: str = name, rnd: int = rnd) -> None:
                for part in range(3):
                    docs = [_doc(rng, f"n{part}-{i}") for i in range(120)]
                    try:
                        await b.ingest_documents(name, docs, principal=OPERATOR)
                        outcomes["written"] += 1
                    except UnknownCollection:
                        outcomes["gone"] += 1
                        return

            async def drop(name: str = name, rnd: int = rnd) -> None:
                await asyncio.sleep(0.01 * (rnd % 4))
                await a.drop(name)

            await asyncio.wait_for(asyncio.gather(ingest(), drop()), 120)
        async with a.store.engine.connect() as conn:
            left = {t: (await conn.execute(sa.text(
                f"SELECT COUNT(*) FROM {t} x WHERE NOT EXISTS (SELECT 1 FROM rag_collections c"
                " WHERE c.id = x.collection_id)"))).scalar()
                for t in ("rag_postings", "rag_term_stats", "rag_chunks", "rag_documents")}
        assert left == dict.fromkeys(left, 0), left
        assert outcomes["gone"] > 0 and outcomes["written"] > 0, outcomes  # both raced


async def test_revision_0019_backfills_from_the_postings(pg_url: str) -> None:
    rng = random.Random(3)
    async with rag_service_at(pg_url) as svc:
        await svc.store.create_collection("c", None)
        await svc.ingest_documents("c", [_doc(rng, f"d{i}") for i in range(80)],
                                   principal=OPERATOR)
        await svc.delete_documents("c", [f"d{i}" for i in range(0, 80, 3)])
        engine = svc.store.engine
        async with engine.connect() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0018"))
            await conn.commit()
            gone = (await conn.execute(sa.text(
                "SELECT to_regclass('rag_term_stats') IS NULL"))).scalar()
        assert gone
        assert await migrate_engine(engine) is True
        held = await _check(svc, "c")
        assert held > 30
        # backfilled bounds are the true ones, not just bounds
        coll = await svc.store.get_collection("c")
        assert coll is not None
        terms = [f"w{i}" for i in range(VOCAB)]
        async with engine.connect() as conn:
            assert (await pg_term_stats.read(conn, coll.id, terms)
                    == await pg_term_stats.recount(conn, coll.id, terms))
