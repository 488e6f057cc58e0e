"""Freshness: unchanged skipped, edits replace chunks, deletes and ACL changes apply next query."""

from __future__ import annotations

from pathlib import Path

from lockgate.rag.service import RagService
from lockgate.rag.types import Caller, SourceDocument
from tests.rag.rag_support import OPERATOR, FakePipeline

ALICE = Caller(user_id="alice")


def _doc(text: str, acl: tuple[str, ...] = ("public",), doc_id: str = "guide") -> SourceDocument:
    return SourceDocument(doc_id=doc_id, title="Guide", text=text, principals=acl)


async def test_edit_delete_and_permission_change(
    service: RagService, fake_pipeline: FakePipeline
) -> None:
    first = "# Setup\n\nInstall the zebra package first.\n\n# Usage\n\nRun the giraffe command."
    rep = await service.ingest_documents("f", [_doc(first)], principal=OPERATOR)
    assert (rep.added, rep.chunks_embedded) == (1, 2)
    assert all(c.source == "rag" for c in fake_pipeline.calls)
    res = await service.retrieve("f", "zebra package", ALICE, mode="hybrid")
    assert res.hits and "zebra" in res.hits[0].text

    rep = await service.ingest_documents("f", [_doc(first)], principal=OPERATOR)
    assert (rep.unchanged, rep.added, rep.updated) == (1, 0, 0)

    edited = first.replace("zebra", "okapi")
    rep = await service.ingest_documents("f", [_doc(edited)], principal=OPERATOR)
    assert rep.updated == 1 and rep.chunks_reused == 1 and rep.chunks_embedded == 1
    for mode in ("bm25", "dense", "hybrid"):
        res = await service.retrieve("f", "zebra package", ALICE, mode=mode)  # type: ignore[arg-type]
        assert all("zebra" not in h.text for h in res.hits)
        res = await service.retrieve("f", "okapi package", ALICE, mode=mode)  # type: ignore[arg-type]
        assert any("okapi" in h.text for h in res.hits)
    st = await service.status("f")
    assert (st["documents"], st["chunks"]) == (1, 2)

    rep = await service.ingest_documents("f", [_doc(edited, ("user:bob",))], principal=OPERATOR)
    assert rep.permissions_updated == 1
    for mode in ("bm25", "dense", "hybrid"):
        assert (await service.retrieve("f", "okapi", ALICE, mode=mode)).hits == []  # type: ignore[arg-type]
        assert (await service.retrieve("f", "okapi", Caller(user_id="bob"), mode=mode)).hits  # type: ignore[arg-type]

    assert await service.delete_documents("f", ["guide"]) == 1
    for mode in ("bm25", "dense", "hybrid"):
        assert (await service.retrieve("f", "okapi", Caller(user_id="bob"), mode=mode)).hits == []  # type: ignore[arg-type]


async def test_sync_removes_vanished_files(service: RagService, tmp_path: Path) -> None:
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nApples are red.")
    (src / "b.txt").write_text("Bananas are yellow.")
    (src / "bad.xyz").write_text("unknown type")
    rep = await service.ingest_paths("s", [src], principal=OPERATOR)
    assert rep.added == 2 and len(rep.failed) == 1 and "unknown file type" in rep.failed[0][1]
    (src / "b.txt").unlink()
    (src / "a.md").write_text("# A\n\nApples are green.")
    rep = await service.ingest_paths("s", [src], principal=OPERATOR, sync=True)
    assert (rep.updated, rep.removed) == (1, 1)
    res = await service.retrieve("s", "bananas yellow", Caller(), mode="bm25")
    assert res.hits == []
    res = await service.retrieve("s", "apples", Caller(), mode="bm25")
    assert [h.doc_id for h in res.hits] == ["a.md"] and "green" in res.hits[0].text
    st = await service.status("s")
    assert st["documents"] == 1 and st["max_staleness_seconds"] is not None


async def test_embedding_failure_is_reported_and_skipped(
    service: RagService, fake_pipeline: FakePipeline
) -> None:
    async def broken(call: object) -> object:
        raise RuntimeError("model down")

    fake_pipeline.embeddings = broken  # type: ignore[method-assign,assignment]
    rep = await service.ingest_documents("e", [_doc("some text")], principal=OPERATOR)
    assert rep.added == 0 and rep.failed and "model down" in rep.failed[0][1]
    assert (await service.status("e"))["documents"] == 0
