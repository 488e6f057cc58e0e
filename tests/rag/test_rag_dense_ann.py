"""The dense index's HNSW graph: recall against exact search, ACL filtering, incremental
updates, deletes, ACL changes and the saved graph file, on SQLite and PostgreSQL.

The graph is forced on small collections (``ann_min_rows`` and ``exact_below`` low) so
the graph path, not the exact fallback, answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lockgate.rag.dense import DenseIndex, DenseOptions
from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR, fake_vector

N_DOCS = 2400
GROUPS = 12


def corpus(n: int, seed: int = 7, start: int = 0) -> list[SourceDocument]:
    rng = random.Random(seed)
    vocab = [f"t{i}" for i in range(600)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(vocab))]
    docs = []
    for i in range(start, start + n):
        r = rng.random()
        acl: tuple[str, ...]
        if r < 0.15:
            acl = ("public",)
        elif r < 0.85:
            acl = (f"group:g{rng.randrange(GROUPS)}",)
        else:
            acl = (f"user:u{rng.randrange(40)}",)
        text = " ".join(rng.choices(vocab, weights, k=40))
        docs.append(SourceDocument(doc_id=f"d{i}", title="", text=text, principals=acl))
    return docs


def ann_service(base: RagService, index_dir: Path | None = None) -> RagService:
    opts = DenseOptions(ann_min_rows=500, exact_below=0, index_dir=index_dir)
    return RagService(base.store, base.pipeline, base.settings, dense=opts)


async def built_index(svc: RagService, name: str) -> DenseIndex:
    coll = await svc.collection(name)
    idx = await svc.dense.get(coll.id, await svc.store.version(coll.id))
    await idx.wait_built()
    return idx


def readable(caller: Caller, docs: dict[str, SourceDocument], doc_id: str) -> bool:
    return bool(set(docs[doc_id].principals) & set(caller.principals()))


async def test_graph_recall_and_acl(service: RagService, tmp_path: Path) -> None:
    svc = ann_service(service, tmp_path / "idx")
    docs = corpus(N_DOCS)
    await svc.ingest_documents("c", docs, principal=OPERATOR)
    idx = await built_index(svc, "c")
    assert idx.graph is not None and idx.graph.size == N_DOCS
    by_id = {d.doc_id: d for d in docs}
    chunk_doc = await _chunk_docs(svc, "c")
    rng = random.Random(3)
    recalls = []
    callers = [Caller(user_id="u1", groups=("g1", "g2", "g3")), Caller(groups=("g5",)),
               Caller(user_id="u9"), Caller(all_access=True)]
    for caller in callers:
        principals = None if caller.all_access else caller.principals()
        for _ in range(25):
            q = np.asarray(fake_vector(" ".join(f"t{rng.randrange(80)}" for _ in range(4))),
                           dtype=np.float32)
            got = await idx.search(q, principals=principals, filters=None,
                                   exclude_doc_ids=None, k=10)
            exact = await idx.search(q, principals=principals, filters=None,
                                     exclude_doc_ids=None, k=10, exact=True)
            assert len(got) == len(exact) == 10
            # nothing unreadable is ever a candidate
            assert all(caller.all_access or readable(caller, by_id, chunk_doc[pk])
                       for pk, _ in got)
            # scores are exact cosines (rescored), ranked best first
            scores = [s for _, s in got]
            assert scores == sorted(scores, reverse=True)
            exact_scores = dict(exact)
            assert all(abs(s - exact_scores[pk]) < 1e-5 for pk, s in got if pk in exact_scores)
            recalls.append(len({p for p, _ in got} & {p for p, _ in exact}) / 10)
    assert float(np.mean(recalls)) >= 0.95


async def _chunk_docs(svc: RagService, name: str) -> dict[int, str]:
    from sqlalchemy import text

    coll = await svc.collection(name)
    async with svc.store.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT c.id, d.doc_id FROM rag_chunks c JOIN rag_documents d ON d.id = c.doc_pk"
            " WHERE c.collection_id = :c"), {"c": coll.id})).all()
    return {int(a): str(b) for a, b in rows}


async def test_incremental_add_delete_and_acl_change(service: RagService, tmp_path: Path) -> None:
    svc = ann_service(service, tmp_path / "idx")
    await svc.ingest_documents("c", corpus(1200), principal=OPERATOR)
    idx = await built_index(svc, "c")
    graph = idx.graph
    assert graph is not None
    caller = Caller(groups=("g4",))
    # new documents, added to the existing graph (not a rebuild), are found at once
    new = [SourceDocument(doc_id=f"new{i}", text=f"zebra{i} quokka{i} narwhal{i}",
                          principals=("group:g4",)) for i in range(5)]
    await svc.ingest_documents("c", new, principal=OPERATOR)
    for d in new:
        res = await svc.retrieve("c", d.text, caller, mode="dense", k=3)
        assert res.hits[0].doc_id == d.doc_id
    assert idx.graph is graph and graph.size == 1205
    # a deleted document is never returned again
    await svc.delete_documents("c", ["new0"])
    res = await svc.retrieve("c", new[0].text, caller, mode="dense", k=10)
    assert "new0" not in {h.doc_id for h in res.hits}
    # an ACL change applies on the next query, in the graph's filter too
    moved = SourceDocument(doc_id="new1", text=new[1].text, principals=("group:g9",))
    await svc.ingest_documents("c", [moved], principal=OPERATOR)
    coll = await svc.collection("c")
    idx = await svc.dense.get(coll.id, await svc.store.version(coll.id))
    q = np.asarray(fake_vector(new[1].text), dtype=np.float32)
    got = await idx.search(q, principals=caller.principals(), filters=None,
                           exclude_doc_ids=None, k=10)
    chunk_doc = await _chunk_docs(svc, "c")
    assert "new1" not in {chunk_doc[pk] for pk, _ in got}
    got = await idx.search(q, principals=Caller(groups=("g9",)).principals(), filters=None,
                           exclude_doc_ids=None, k=1)
    assert chunk_doc[got[0][0]] == "new1"


async def test_graph_file_is_reused_and_brought_up_to_date(
    service: RagService, tmp_path: Path
) -> None:
    svc = ann_service(service, tmp_path / "idx")
    await svc.ingest_documents("c", corpus(900), principal=OPERATOR)
    await built_index(svc, "c")
    coll = await svc.collection("c")
    assert (tmp_path / "idx" / f"c{coll.id}.faiss").exists()
    # a second instance (another process, same database) writes meanwhile
    later = [SourceDocument(doc_id="late", text="aardvark okapi pangolin",
                            principals=("public",))]
    await service.ingest_documents("c", later, principal=OPERATOR)
    await service.delete_documents("c", ["d1", "d2"])
    # a fresh service loads the file instead of building, then syncs from the table
    fresh = ann_service(service, tmp_path / "idx")
    idx = await fresh.dense.get(coll.id, await fresh.store.version(coll.id))
    assert idx._building is None and idx.graph is not None  # loaded, not rebuilt
    assert idx.live == 900 + 1 - 2
    res = await fresh.retrieve("c", "aardvark okapi pangolin", Caller(), mode="dense", k=3)
    assert res.hits[0].doc_id == "late"
    res = await fresh.retrieve("c", "t1 t2 t3", Caller(all_access=True), mode="dense", k=50)
    assert not {"d1", "d2"} & {h.doc_id for h in res.hits}
    # dropping the collection removes its files
    await fresh.drop("c")
    assert not (tmp_path / "idx" / f"c{coll.id}.faiss").exists()
