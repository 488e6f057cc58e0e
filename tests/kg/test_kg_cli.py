"""``lockgate kg rebuild`` after ``lockgate rag ingest``: one-line errors, counts as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, home: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKGATE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lockgate", *args, "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_ingest_then_rebuild(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "alice.md").write_text("Alice Smith works for Acme Robotics.\n")
    (docs / "acme.md").write_text("Acme Robotics is headquartered in Lyon.\n")
    off = tmp_path / "off.yaml"
    off.write_text(f"home: {tmp_path}\n")
    on = tmp_path / "on.yaml"
    on.write_text(f"home: {tmp_path}\nknowledge_graph: {{enabled: true}}\n")
    proc = _run("rag", "ingest", "kb", str(docs), home=tmp_path, config=off)
    assert proc.returncode == 0, proc.stderr
    err = _run("kg", "rebuild", "kb", home=tmp_path, config=off)
    assert err.returncode == 2 and "knowledge_graph.enabled" in err.stderr
    assert len(err.stderr.strip().splitlines()) == 1
    missing = _run("kg", "rebuild", "nope", home=tmp_path, config=on)
    assert missing.returncode == 1 and "no RAG collection" in missing.stderr
    assert "Traceback" not in missing.stderr
    ok = _run("kg", "rebuild", "kb", home=tmp_path, config=on)
    assert ok.returncode == 0, ok.stderr
    stats = json.loads(ok.stdout)
    assert stats["documents"] == 2 and stats["relations"] == 2
