"""Overflow files for the audit writer: usage rows as JSONL under a directory.

When the database is unreachable for long enough that the writer's in-memory
queue passes ``max_queue`` (or a graceful close runs out of time), pending rows
are written to ``audit-<ms>-<pid>-<n>.jsonl`` (written to a temp name, fsynced,
then renamed, so a file is complete or absent). Any writer replays them on
start and after the database comes back: it first *claims* a file by renaming
it to ``...jsonl.claim-<pid>`` (atomic; only one process wins), inserts its rows
(duplicate request ids are skipped by the insert), then deletes it. A claim left
by a dead process is taken over. Rows the database refuses as invalid go to
``rejected-*.jsonl`` with the error and are never replayed automatically.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SpillDir"]

log = logging.getLogger(__name__)

_SPILL_GLOB = "audit-*.jsonl"
_CLAIM_MARK = ".claim-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _line(value: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(value, default=repr) + b"\n"
    except TypeError:  # e.g. lone surrogates: the stdlib escapes them
        return json.dumps(value, default=repr).encode() + b"\n"


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. lone surrogate escapes the stdlib wrote
        return json.loads(line)


class SpillDir:
    """One directory of spill files (blocking file I/O: call from a thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seq = itertools.count()

    def _new_name(self, kind: str) -> Path:
        stamp = int(time.time() * 1000)
        return self.path / f"{kind}-{stamp:013d}-{os.getpid()}-{next(self._seq)}.jsonl"

    def _write(self, target: Path, lines: Sequence[bytes]) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target

    def write(self, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write rows to a new spill file; returns its path."""
        return self._write(self._new_name("audit"), [_line(row) for row in rows])

    def reject(self, rows: Sequence[Mapping[str, Any]], reason: str) -> Path:
        """Dead-letter rows the database refuses (never replayed automatically)."""
        lines = [_line({"error": reason, "row": row}) for row in rows]
        return self._write(self._new_name("rejected"), lines)

    def pending_files(self) -> list[Path]:
        """Unclaimed spill files, oldest first."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob(_SPILL_GLOB))

    def claim(self) -> list[Path]:
        """Claim every unclaimed file and stale claims of dead processes; returns claimed paths."""
        if not self.path.is_dir():
            return []
        me = os.getpid()
        claimed: list[Path] = []
        candidates = sorted(self.path.glob(_SPILL_GLOB)) + sorted(
            self.path.glob(f"audit-*.jsonl{_CLAIM_MARK}*")
        )
        for path in candidates:
            base, mark, owner = path.name.partition(_CLAIM_MARK)
            if mark:
                try:
                    owner_pid = int(owner)
                except ValueError:
                    continue
                if owner_pid == me or _pid_alive(owner_pid):
                    continue
            target = path.with_name(f"{base}{_CLAIM_MARK}{me}")
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another process claimed it first
            claimed.append(target)
        return claimed

    def unclaim(self, path: Path) -> None:
        """Give a claimed file back (replay failed; it will be retried)."""
        base = path.name.partition(_CLAIM_MARK)[0]
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, path.with_name(base))

    def read(self, path: Path) -> list[dict[str, Any]]:
        """Rows of a spill file; an unreadable line is dead-lettered, not lost."""
        rows: list[dict[str, Any]] = []
        broken: list[dict[str, Any]] = []
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = _loads(line)
                except ValueError:
                    text = line.decode(errors="replace")
                    broken.append({"file": path.name, "line": number, "text": text})
                    continue
                if isinstance(value, dict):
                    rows.append(value)
                else:
                    broken.append({"file": path.name, "line": number, "value": value})
        if broken:
            log.error("spill file %s: %d unreadable lines dead-lettered", path, len(broken))
            self.reject(broken, "unreadable spill line")
        return rows

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
