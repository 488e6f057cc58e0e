"""``lockgate rag refresh-stats``: recounts a PostgreSQL collection's term statistics
(bounds exact again after deletes loosened them); on SQLite it says there is nothing to
refresh. Exit code 0 either way; an unknown collection is a one-line error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lockgate.cli.rag_commands import rag_app
from lockgate.rag import pg_term_stats
from lockgate.rag.types import SourceDocument
from tests.rag.conftest import rag_service_at
from tests.rag.rag_support import OPERATOR


def _cli(cfg: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(rag_app, [*args, "--config", str(cfg)])
    return res.exit_code, res.output


def test_refresh_stats_command(empty_db_url: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("okapi okapi okapi leaves\n")
    (docs / "b.txt").write_text("okapi trees\n")
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"home: {tmp_path / 'home'}\ndatabase_url: {empty_db_url}\nmodels: []\n")
    code, out = _cli(cfg, "ingest", "kb", str(docs))
    assert code == 0, out
    code, out = _cli(cfg, "refresh-stats", "kb")
    assert code == 0, out
    if empty_db_url.startswith("sqlite"):
        assert "nothing to refresh" in out
    else:
        m = re.search(r"refreshed the statistics of (\d+) terms in kb", out)
        assert m and int(m[1]) >= 3, out  # okapi, leaves, trees (and what the titles add)
    code, out = _cli(cfg, "refresh-stats", "nope")
    assert code != 0 and "nope" in out and "Traceback" not in out


@pytest.mark.postgres
async def test_refresh_makes_loosened_bounds_exact(pg_url: str) -> None:
    async with rag_service_at(pg_url) as svc:
        await svc.store.create_collection("c", None)
        docs = [SourceDocument(doc_id="long", title="", principals=("public",),
                               text="w0 w0 w0 w0 w0 " + " ".join(f"x{i}" for i in range(30))),
                SourceDocument(doc_id="short", title="", principals=("public",), text="w0 y"),
                SourceDocument(doc_id="mid", title="", principals=("public",),
                               text="w0 " + " ".join(f"z{i}" for i in range(10)))]
        await svc.ingest_documents("c", docs, principal=OPERATOR)
        await svc.delete_documents("c", ["long", "short"])  # the max tf and the min length
        coll = await svc.store.get_collection("c")
        assert coll is not None
        async with svc.store.engine.connect() as conn:
            kept = (await pg_term_stats.read(conn, coll.id, ["w0"]))["w0"]
            true = (await pg_term_stats.recount(conn, coll.id, ["w0"]))["w0"]
        assert (kept.df, true.df) == (1, 1)
        assert kept.max_tf == 5 and true.max_tf == 1  # loosened, still a bound
        assert kept.min_dl == 2 and true.min_dl == 11
        n = await svc.refresh_term_stats("c")
        assert n == 11  # w0 and z0..z9 are left
        after = await svc.store.get_collection("c")
        assert after is not None and after.version == coll.version + 1
        terms = ["w0", "x0", "y", "z0", "z9"]
        async with svc.store.engine.connect() as conn:
            assert (await pg_term_stats.read(conn, coll.id, terms)
                    == await pg_term_stats.recount(conn, coll.id, terms))
        # its search agrees with the exhaustive one still (and now prunes with exact bounds)
        hits = await svc.store.lexical_search(
            coll.id, ["w0", "z0"], principals=None, filters=None, exclude_doc_ids=None,
            k=5, version=after.version)
        assert len(hits) == 1
