"""``lockgate shadow report`` as a user runs it (subprocess, real SQLite file)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.store import Store
from lockgate.store.tables import shadow_results


def lockgate(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKGATE_HOME": str(home), "COLUMNS": "250"}
    env.pop("LOCKGATE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "lockgate", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def row(model: str, i: int, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "created_at": datetime.now(UTC), "request_id": f"req_{model}_{i}", "model": model,
        "primary_deployment": f"{model}/a", "candidate_deployment": f"{model}/b",
        "primary_text": "yes", "candidate_text": "yes", "primary_latency_ms": 10.0 * (i + 1),
        "candidate_latency_ms": 5.0, "primary_cost": 0.5, "candidate_cost": 0.25,
        "candidate_prompt_tokens": 1, "candidate_completion_tokens": 1,
        "candidate_error": None, "text_match": True, "json_match": None,
    }
    out.update(kw)
    return out


def seed(url: str) -> None:
    async def go() -> None:
        store = await Store.open(url)
        try:
            async with store.engine.begin() as conn:
                await conn.execute(shadow_results.insert(), [
                    *(row("support", i) for i in range(3)),
                    row("support", 3, text_match=False, candidate_text="no"),
                    row("legal", 0, candidate_error="timeout_total", candidate_text=None,
                        text_match=None),
                ])
        finally:
            await store.close()

    asyncio.run(go())


def test_shadow_report_table_and_json(tmp_path: Path) -> None:
    db = tmp_path / "lg.db"
    cfg = tmp_path / "lockgate.yaml"
    cfg.write_text(f"database_url: sqlite:///{db}\n")
    empty = lockgate("shadow", "report", "-c", str(cfg), home=tmp_path)
    assert empty.returncode == 0 and "no shadow results" in empty.stdout
    seed(f"sqlite:///{db}")

    out = lockgate("shadow", "report", "--json", "--model", "support", "-c", str(cfg),
                   home=tmp_path)
    assert out.returncode == 0, out.stderr
    (support,) = json.loads(out.stdout)
    assert support["count"] == 4 and support["text_agreement"] == 0.75
    assert support["primary_latency_p50_ms"] == 20.0
    assert support["primary_latency_p95_ms"] == 40.0
    assert support["primary_cost"] == 2.0 and support["candidate_cost"] == 1.0

    table = lockgate("shadow", "report", "-c", str(cfg), home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "support/b" in table.stdout and "legal/b" in table.stdout
    assert "75.0%" in table.stdout and "100.0%" in table.stdout  # agreement; legal errors
