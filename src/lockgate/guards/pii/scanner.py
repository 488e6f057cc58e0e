"""Scanning text for PII: candidates, overlap merging, and the incremental step.

:class:`PiiScanner` runs its detectors (one compiled regex each, gated by a
cheap character check) and merges overlapping spans into one finding labelled
with the highest-priority entity, so a span is never left half-redacted.

:func:`step` is the one scanning routine used both for whole strings and for
streams. Given a buffer whose text before ``pos`` is already emitted, it
returns the findings that are final and the position ``cut`` up to which the
output is final. A regex attempt at position ``p`` can still change with more
text only if the buffer end after ``p`` fits the detector's ``tail``; the
holdback is the longest such suffix (usually the last word or nothing), and no
raw match may straddle ``cut``. Because every decision before ``cut`` depends
only on text before it, any chunking of a stream gives the same output as one
call over the whole text.

Fail closed: any exception inside a detector becomes :class:`GuardError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lockgate.guards.errors import GuardError
from lockgate.guards.pii.detectors import BUILTIN_DETECTORS, Detector

__all__ = ["Finding", "Matcher", "PiiScanner", "step"]

CONTEXT_CHARS = 8
"""Emitted characters kept in front of a stream buffer for look-behinds."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected entity: its type and span in the scanned string (no value)."""

    entity: str
    start: int
    end: int


class Matcher(Protocol):
    """What :func:`step` needs: a holdback estimate and a bounded scan."""

    def hold(self, buf: str, pos: int) -> int:
        """Characters at the end of ``buf[pos:]`` that could still start a match."""
        ...

    def scan(
        self, buf: str, pos: int, limit: int
    ) -> tuple[list[tuple[int, int]], list[tuple[int, Finding]]]:
        """Raw match spans and (priority, finding) for matches starting in [pos, limit)."""
        ...


class PiiScanner:
    """A fixed set of detectors, in priority order. Immutable and thread-safe."""

    __slots__ = ("_groups", "_tails", "detectors", "max_tail")

    def __init__(self, detectors: Sequence[Detector] = BUILTIN_DETECTORS) -> None:
        self.detectors = tuple(detectors)
        # detectors grouped by gate, so a missing gate skips its whole group at once
        groups: dict[int, tuple[re.Pattern[str] | None, list[tuple[int, Detector]]]] = {}
        for rank, d in enumerate(self.detectors):
            groups.setdefault(id(d.gate), (d.gate, []))[1].append((rank, d))
        self._groups = tuple((gate, tuple(members)) for gate, members in groups.values())
        tails: dict[int, re.Pattern[str]] = {}
        for d in self.detectors:
            tails.setdefault(id(d.tail), d.tail)
        self._tails = tuple(tails.values())  # detectors share tail patterns: run each once
        # a tail pattern's longest possible match bounds how far back it can reach
        self.max_tail = 600

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(d.entity for d in self.detectors)

    def hold(self, buf: str, pos: int) -> int:
        n = len(buf)
        if n <= pos:
            return 0
        rev = buf[max(pos, n - self.max_tail) :][::-1]
        best = 0
        for tail in self._tails:
            m = tail.match(rev)
            if m is not None and m.end() > best:
                best = m.end()
        return best

    def scan(
        self, buf: str, pos: int, limit: int
    ) -> tuple[list[tuple[int, int]], list[tuple[int, Finding]]]:
        raw: list[tuple[int, int]] = []
        found: list[tuple[int, Finding]] = []
        n = len(buf)
        rev: str | None = None
        for gate, members in self._groups:
            window: tuple[int, int] | None = None
            if gate is not None:
                first = gate.search(buf, pos)
                if first is None:
                    continue
                if rev is None:
                    rev = buf[: pos - 1 if pos else None : -1]
                last = gate.search(rev)
                window = (first.start(), n - last.start() if last else n)
            for rank, d in members:
                start, end = pos, n
                if window is not None and d.reach_before is not None:
                    start = max(pos, window[0] - d.reach_before)
                    end = min(n, window[1] + d.reach_after)
                for m in d.pattern.finditer(buf, start, end):
                    s = m.start()
                    if s >= limit:
                        break
                    raw.append((s, m.end()))
                    for a, b in d.validate(m.group()):
                        found.append((rank, Finding(d.entity, s + a, s + b)))
        return raw, found

    def find(self, text: str) -> list[Finding]:
        """All PII in ``text``: merged, non-overlapping, sorted by position."""
        findings, _ = step(self, text, 0, final=True)
        return findings


def _merge(found: list[tuple[int, Finding]]) -> list[Finding]:
    """Union overlapping spans; the merged span keeps the highest-priority label."""
    if not found:
        return []
    found.sort(key=lambda rf: (rf[1].start, rf[0]))
    out: list[Finding] = []
    rank, cur = found[0]
    for r, f in found[1:]:
        if f.start < cur.end:
            end = max(cur.end, f.end)
            if r < rank:
                rank, cur = r, Finding(f.entity, cur.start, end)
            else:
                cur = Finding(cur.entity, cur.start, end)
        else:
            out.append(cur)
            rank, cur = r, f
    out.append(cur)
    return out


def step(matcher: Matcher, buf: str, pos: int, *, final: bool) -> tuple[list[Finding], int]:
    """Final findings in ``buf[pos:cut]`` and ``cut``; with ``final`` the whole buffer."""
    try:
        n = len(buf)
        limit = n if final else n - matcher.hold(buf, pos)
        if limit <= pos:
            return [], pos
        raw, found = matcher.scan(buf, pos, limit)
    except GuardError:
        raise
    except Exception as exc:  # fail closed: never let unchecked text through
        raise GuardError(f"PII guard failed ({type(exc).__name__}); request refused") from exc
    cut = limit
    if not final and raw:
        moved = True
        while moved:
            moved = False
            for s, e in raw:
                if s < cut < e:
                    cut = s
                    moved = True
    if cut <= pos:
        return [], pos
    return _merge([rf for rf in found if rf[1].end <= cut]), cut
