"""Spill files: atomic claims between processes, stale claims taken over, bad lines kept."""

from __future__ import annotations

import os
from pathlib import Path

from lockgate.store.spill import SpillDir


def test_spill_write_claim_read_remove(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path / "spill")
    assert spill.claim() == []
    path = spill.write([{"request_id": "a"}, {"request_id": "b\ud800"}])
    assert spill.pending_files() == [path]
    (claimed,) = spill.claim()
    assert claimed.name.endswith(f".claim-{os.getpid()}")
    assert spill.pending_files() == []
    assert spill.claim() == []  # our own claim is not claimed twice
    rows = spill.read(claimed)
    assert rows[0] == {"request_id": "a"} and len(rows) == 2
    spill.unclaim(claimed)
    assert spill.pending_files() == [path]
    (again,) = spill.claim()
    spill.remove(again)
    assert list((tmp_path / "spill").iterdir()) == []


def test_claims_of_live_processes_are_respected_dead_ones_taken_over(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path)
    live = tmp_path / f"audit-1-1-0.jsonl.claim-{os.getppid()}"
    dead = tmp_path / "audit-2-2-0.jsonl.claim-999999999"
    live.write_bytes(b'{"request_id": "live"}\n')
    dead.write_bytes(b'{"request_id": "dead"}\n')
    (taken,) = spill.claim()
    assert taken.name == f"audit-2-2-0.jsonl.claim-{os.getpid()}"
    assert live.exists() and not dead.exists()


def test_unreadable_lines_are_dead_lettered_not_lost(tmp_path: Path) -> None:
    spill = SpillDir(tmp_path)
    path = tmp_path / "audit-3-3-0.jsonl"
    path.write_bytes(b'{"request_id": "ok"}\nnot json\n[1, 2]\n\n')
    assert spill.read(path) == [{"request_id": "ok"}]
    (rejected,) = tmp_path.glob("rejected-*.jsonl")
    text = rejected.read_text()
    assert "not json" in text and "unreadable spill line" in text
