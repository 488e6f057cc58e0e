"""AuditWriter: the one batched writer for rows produced on the request path.

Three row kinds share one queue, one background task and one transaction per
batch: usage (audit) records, ``submit(record)``, which extend the hash chain
in ``usage_records``; shadow-traffic results, ``submit_shadow(row)``
(:func:`lockgate.store.records.shadow_row`), inserted into ``shadow_results``
by the same transaction (:meth:`Store.write_rows`); and facade calls,
``submit_facade(row)`` (:func:`lockgate.store.records.facade_call_row`), inserted
into ``facade_calls``. Shadow and facade rows are tagged (``{"_kind": "shadow", ...}``)
in the queue, in spill files and in dead-letter files, so everything below holds for
every kind; counters count usage rows, except ``shadow_written`` and ``facade_written``.

Guarantees
- ``submit(record)`` is synchronous, O(1) and never touches the database: it
  appends to an in-memory deque (call it from the event loop's thread).
- A background task writes pending records every ``flush_interval_ms``, or as
  soon as ``batch_size`` are pending, ``batch_size`` rows per transaction
  (``INSERT ... ON CONFLICT (request_id) DO NOTHING`` through the audit chain,
  :func:`lockgate.store.chain.insert_chained`): a duplicate request id is
  skipped, the rest of the batch is kept.
- On a database error the batch goes back to the front of the queue and is
  retried with exponential backoff (``retry_initial`` .. ``retry_max`` seconds);
  every failure is logged and counted (``failed_flushes``). Nothing is dropped.
- A batch the database refuses as *invalid data* (DataError/IntegrityError,
  i.e. retrying cannot help) is split in halves until the bad rows are alone;
  those are dead-lettered to ``<spill_dir>/rejected-*.jsonl`` with the error
  (or logged in full at ERROR when there is no spill dir) and counted
  (``rejected``). Malformed record objects are handled the same way.
- When more than ``max_queue`` records are pending (database down for long),
  the whole queue is written to a JSONL spill file under ``spill_dir`` (see
  :mod:`lockgate.store.spill`) and memory is freed. Spill files are replayed
  when the writer starts and after the database is back; duplicates are skipped.
  With ``spill_dir=None`` an over-full queue makes ``submit`` raise
  :class:`AuditOverflow` (fail closed, loudly) instead.
- ``await close()`` drains everything. If the database is still failing when
  ``close_timeout`` runs out, the rest is spilled (or, without a spill dir,
  logged at ERROR as JSON lines and counted in ``lost``: the one case where rows
  leave lockgate's hands, always loudly).

How far behind it is: ``pending`` (records in memory) and :meth:`AuditWriter.backlog_seconds`
(age of the oldest of them), exported as ``lockgate_audit_pending`` and
``lockgate_audit_backlog_seconds``. Memory is bounded by ``max_queue``: past it the queue goes
to spill files (``lockgate_audit{stat="spilled"}``), which are written back once the database
keeps up again (docs/audit-retention.md has the measured ceiling). Once a backlog of
``RELEASE_HEAP_AFTER`` rows or more is written, the writer returns the freed heap pages to the
system (``malloc_trim``; counted in ``heap_releases``), so a burst does not leave the process
at its peak size.

Counters for metrics: ``pending``, ``written``, ``duplicates``, ``batches``
(transactions committed), ``failed_flushes``, ``spilled``, ``replayed``,
``rejected``, ``lost`` (rows of either kind), ``shadow_written``; ``stats()``
returns them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import exc as sa_exc

from lockgate.interpreter import release_free_heap
from lockgate.store.chain import YIELD_EVERY, YIELD_EVERY_BEHIND
from lockgate.store.errors import StoreError
from lockgate.store.records import UsageRecordLike, facade_call_row, shadow_row, usage_row
from lockgate.store.spill import SpillDir
from lockgate.store.store import Store

__all__ = ["DEFAULT_SPILL_DIR", "FACADE_KIND", "ROW_KIND", "SHADOW_KIND", "AuditOverflow",
           "AuditStats", "AuditWriter"]

log = logging.getLogger(__name__)

DEFAULT_SPILL_DIR: Final = Path(".lockgate") / "audit-spill"

Row = dict[str, Any]

ROW_KIND: Final = "_kind"
"""Key tagging a queued/spilled row that is not a usage row."""
SHADOW_KIND: Final = "shadow"
"""``ROW_KIND`` value of a ``shadow_results`` row."""
FACADE_KIND: Final = "facade"
"""``ROW_KIND`` value of a ``facade_calls`` row."""


RELEASE_HEAP_AFTER: Final = 5_000
"""Queued rows past which, once all are written, free heap memory is returned to the system."""


class AuditOverflow(StoreError):
    """The audit queue is full and there is no spill directory: the record was not accepted."""

    http_status = 503


@dataclass(frozen=True, slots=True)
class AuditStats:
    pending: int
    written: int
    duplicates: int
    batches: int
    failed_flushes: int
    spilled: int
    replayed: int
    rejected: int
    lost: int
    shadow_written: int = 0
    facade_written: int = 0


class AuditWriter:
    """Buffers usage records and shadow rows; writes them in batches from one background task."""

    def __init__(
        self,
        store: Store,
        *,
        flush_interval_ms: int = 200,
        batch_size: int = 500,
        max_queue: int = 100_000,
        spill_dir: str | Path | None = DEFAULT_SPILL_DIR,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        write_timeout: float = 30.0,
        close_timeout: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval_ms < 1:
            raise ValueError("batch_size, max_queue and flush_interval_ms must be positive")
        self._store = store
        self._interval = flush_interval_ms / 1000.0
        self._batch_size = batch_size
        self._max_queue = max_queue
        self._spill = SpillDir(spill_dir) if spill_dir is not None else None
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._write_timeout = write_timeout
        self._close_timeout = close_timeout

        self._buf: deque[UsageRecordLike | Row] = deque()
        self._inflight = 0
        self._wake = asyncio.Event()  # a batch is ready / time to look
        self._urgent = asyncio.Event()  # closing or over max_queue: cut a backoff short
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._deadline = float("inf")
        self._replay_wanted = True
        self._peak = 0  # the largest queue seen since the heap was last released

        self.written = 0
        self.duplicates = 0
        self.batches = 0
        self.failed_flushes = 0
        self.spilled = 0
        self.replayed = 0
        self.rejected = 0
        self.lost = 0
        self.shadow_written = 0
        """``shadow_results`` rows committed."""
        self.facade_written = 0
        """``facade_calls`` rows committed."""
        self.heap_releases = 0
        """Times free heap memory was returned after a backlog (``RELEASE_HEAP_AFTER``)."""

    # ------------------------------------------------------------------ API

    @property
    def pending(self) -> int:
        """Records accepted but not yet committed (queued plus the batch being written)."""
        return len(self._buf) + self._inflight

    def backlog_seconds(self, now: float | None = None) -> float:
        """Age of the oldest queued record (its ``created_at``), 0 when nothing is queued:
        how far the database is behind. Records spilled to disk are not counted here (see
        ``spilled`` - ``replayed``)."""
        if not self._buf:
            return 0.0
        head = self._buf[0]
        created = (head.get("created_at") if isinstance(head, Mapping)
                   else getattr(head, "created_at", None))
        if isinstance(created, datetime):
            created = created.timestamp()
        try:
            return max(0.0, (time.time() if now is None else now) - float(created))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return 0.0

    def stats(self) -> AuditStats:
        return AuditStats(
            pending=self.pending,
            written=self.written,
            duplicates=self.duplicates,
            batches=self.batches,
            failed_flushes=self.failed_flushes,
            spilled=self.spilled,
            replayed=self.replayed,
            rejected=self.rejected,
            lost=self.lost,
            shadow_written=self.shadow_written,
            facade_written=self.facade_written,
        )

    def start(self) -> None:
        """Start the background task (needs a running loop). Replays spill files first."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="lockgate-audit-writer"
            )

    def submit(self, record: UsageRecordLike) -> None:
        """Queue one record. O(1); never blocks, never does I/O (except after close)."""
        self._put(record)

    def submit_shadow(self, row: Mapping[str, Any]) -> None:
        """Queue one ``shadow_results`` row (:func:`~lockgate.store.records.shadow_row` keys).

        Same contract as :meth:`submit`: O(1), no I/O; written with the next batch.
        """
        self._put({**row, ROW_KIND: SHADOW_KIND})

    def submit_facade(self, row: Row) -> None:
        """Queue one ``facade_calls`` row (:func:`~lockgate.store.records.facade_call_row`
        keys; the dict is the caller's and is tagged in place). Same contract as
        :meth:`submit`: O(1), no I/O."""
        row[ROW_KIND] = FACADE_KIND
        self._put(row)

    def _put(self, record: UsageRecordLike | Row) -> None:
        if self._closed:
            self._submit_after_close(record)
            return
        buf = self._buf
        if len(buf) >= self._max_queue and self._spill is None:
            raise AuditOverflow(
                f"audit queue is full ({self._max_queue} records pending, database not keeping "
                "up) and no spill directory is configured; refusing the record"
            )
        buf.append(record)
        n = len(buf)
        if n >= self._batch_size:
            self._wake.set()
            if n > self._peak:
                self._peak = n
            if n > self._max_queue:
                self._urgent.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; False if ``timeout`` (seconds) ran out first."""
        if self._task is None:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending and not self._closed:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.005)
        return not self.pending

    async def close(self, timeout: float | None = None) -> None:
        """Drain everything, then stop. See the module docstring for a failing database."""
        if self._closed:
            return
        self._closing = True
        self._deadline = time.monotonic() + (self._close_timeout if timeout is None else timeout)
        if self._task is None:
            self.start()
        self._wake.set()
        self._urgent.set()
        assert self._task is not None
        try:
            await self._task
        except Exception:
            log.exception("audit writer task failed; saving what is still pending")
        finally:
            if self._buf:
                await self._spill_all("writer stopped")
            if self._buf:  # could not even spill: the log is the last place left
                self._log_lost("writer stopped and spilling failed")
            self._closed = True

    # ------------------------------------------------------------ the task

    async def _run(self) -> None:
        backoff = self._retry_initial
        first = True  # replay spill files at once, not after the first interval
        while True:
            if not first and not self._closing and len(self._buf) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            first = False
            try:
                ok = await self._step()
            except Exception:  # a bug, not a database error: keep the writer alive
                log.exception("audit writer step failed unexpectedly; will retry")
                self.failed_flushes += 1
                ok = False
            if ok:
                backoff = self._retry_initial
                if self._closing and not self._buf:
                    return
                await self._maybe_release_heap()
                continue
            if self._closing and time.monotonic() >= self._deadline:
                await self._spill_all("database still failing at close")
                return
            await self._backoff(backoff)
            backoff = min(backoff * 2, self._retry_max)

    async def _step(self) -> bool:
        if len(self._buf) > self._max_queue and self._spill is not None:
            await self._spill_all(f"more than {self._max_queue} records pending")
        ok = await self._drain()
        if ok and self._replay_wanted:
            ok = await self._replay()
        return ok

    async def _maybe_release_heap(self) -> None:
        """After a backlog of at least ``RELEASE_HEAP_AFTER`` rows is written, give the
        memory its records held back to the system (:func:`lockgate.interpreter.
        release_free_heap`); without this the process stays at its peak size."""
        if self._buf or self._peak < RELEASE_HEAP_AFTER:
            return
        self._peak = 0
        if await asyncio.to_thread(release_free_heap):
            self.heap_releases += 1

    async def _backoff(self, delay: float) -> None:
        if self._closing:
            delay = max(0.0, min(delay, self._deadline - time.monotonic()))
        self._urgent.clear()
        if self._closing or len(self._buf) > self._max_queue:
            # still sleep a little so a dead database is not hammered while closing
            delay = min(delay, self._retry_initial)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._urgent.wait(), delay)

    async def _drain(self) -> bool:
        """Write queued records batch by batch; False (batch re-queued) on a database error."""
        buf = self._buf
        first = True
        # one batch per wake-up, more only while a full batch is waiting (or when closing):
        # rows that arrived during the write wait for the next interval instead of making
        # a transaction of a dozen rows each (at one connection, ~65 tiny flushes/s)
        while buf and (first or len(buf) >= self._batch_size or self._closing):
            first = False
            count = min(self._batch_size, len(buf))
            self._inflight = count
            # behind (a full batch still waiting): longer stretches between returns to the
            # loop, or a saturated loop starves the writer (chain.YIELD_EVERY_BEHIND)
            step = YIELD_EVERY_BEHIND if len(buf) - count >= self._batch_size else YIELD_EVERY
            rows = await self._convert([buf.popleft() for _ in range(count)], step)
            self._inflight = len(rows)
            try:
                await self._write_rows(rows, step)
            except Exception as exc:
                buf.extendleft(reversed(rows))  # converted rows: malformed ones are gone
                self.failed_flushes += 1
                log.warning(
                    "audit flush of %d records failed (%s); %d pending, will retry",
                    count,
                    _one_line(exc),
                    len(buf),
                )
                return False
            finally:
                self._inflight = 0
            if len(buf) > self._max_queue and self._spill is not None:
                await self._spill_all(f"more than {self._max_queue} records pending")
        return True

    async def _convert(self, records: Sequence[UsageRecordLike | Row],
                       yield_every: int = YIELD_EVERY) -> list[Row]:
        """Records as row dicts; malformed ones are dead-lettered (once) and left out."""
        rows: list[Row] = []
        bad: list[Row] = []
        for i, record in enumerate(records):
            if i and not i % yield_every:
                await asyncio.sleep(0)  # requests waiting on the loop go first
            try:
                rows.append(_row_of(record))
            except (TypeError, ValueError, AttributeError) as exc:
                bad.append({"record": repr(record), "error": str(exc)})
        if bad:
            await self._reject(bad, "malformed usage record")
        return rows

    async def _write_rows(self, rows: Sequence[Row], yield_every: int = YIELD_EVERY) -> int:
        """Insert rows in one transaction; bisect to isolate rows refused as invalid."""
        if not rows:
            return 0
        usage: list[Row] = []
        shadow: list[Row] = []
        facade: list[Row] = []
        for row in rows:
            kind = row.get(ROW_KIND)
            if kind is None:
                usage.append(row)
            elif kind == FACADE_KIND:
                clean = dict(row)
                del clean[ROW_KIND]
                facade.append(clean)
            else:
                shadow.append({k: v for k, v in row.items() if k != ROW_KIND})
        try:
            inserted, shadowed = await asyncio.wait_for(
                self._store.write_rows(usage, shadow, facade, yield_every=yield_every),
                self._write_timeout,
            )
        except Exception as exc:
            if not _is_invalid(exc):
                raise
            if len(rows) == 1:
                await self._reject(list(rows), _one_line(exc))
                return 0
            mid = len(rows) // 2
            return await self._write_rows(rows[:mid]) + await self._write_rows(rows[mid:])
        self.batches += 1
        self.written += inserted
        self.duplicates += len(usage) - inserted
        self.shadow_written += shadowed
        self.facade_written += len(facade)
        return inserted

    # ------------------------------------------------------- spill / replay

    async def _spill_all(self, reason: str) -> None:
        """Move every queued record to a spill file (or, without one, log them)."""
        if not self._buf:
            return
        records = list(self._buf)
        self._buf.clear()
        rows = await self._convert(records)
        if self._spill is None:
            self._buf.extend(rows)
            self._log_lost(f"{reason}; no spill dir")
            return
        try:
            path = await asyncio.to_thread(self._spill.write, rows)
        except Exception as exc:
            # Cannot spill either: keep them in memory (over max_queue) and say so.
            log.error("audit: cannot write spill file (%s); keeping %d rows", exc, len(rows))
            self._buf.extendleft(reversed(rows))
            return
        self.spilled += len(rows)
        self._replay_wanted = True
        log.warning("audit: spilled %d usage rows to %s (%s)", len(rows), path, reason)

    async def _replay(self) -> bool:
        """Write back every spill file; False if the database failed (files kept)."""
        spill = self._spill
        self._replay_wanted = False
        if spill is None:
            return True
        try:
            claimed = await asyncio.to_thread(spill.claim)
        except OSError as exc:
            log.error("audit: cannot read spill dir %s: %s", spill.path, exc)
            return True
        for index, path in enumerate(claimed):
            try:
                rows = await asyncio.to_thread(spill.read, path)
                for start in range(0, len(rows), self._batch_size):
                    await self._write_rows(rows[start : start + self._batch_size])
            except Exception as exc:
                self.failed_flushes += 1
                log.warning("audit: replay of %s failed (%s)", path.name, _one_line(exc))
                for left in claimed[index:]:
                    await asyncio.to_thread(spill.unclaim, left)
                self._replay_wanted = True
                return False
            await asyncio.to_thread(spill.remove, path)
            self.replayed += len(rows)
            log.info("audit: replayed %d rows from %s", len(rows), path.name)
        return True

    async def _reject(self, rows: list[Row], reason: str) -> None:
        self.rejected += len(rows)
        if self._spill is not None:
            try:
                path = await asyncio.to_thread(self._spill.reject, rows, reason)
                log.error("audit: %d rows refused (%s); saved to %s", len(rows), reason, path)
                return
            except Exception as exc:
                log.error("audit: cannot write dead-letter file: %s", exc)
        for row in rows:
            log.error("audit-rejected (%s) %s", reason, json.dumps(row, default=repr))

    def _log_lost(self, reason: str) -> None:
        """Last resort: every queued record at ERROR as one JSON line each, then forget them."""
        records = list(self._buf)
        self._buf.clear()
        self.lost += len(records)
        log.error("audit: %d usage rows not written (%s); they follow", len(records), reason)
        for record in records:
            try:
                text = json.dumps(_row_of(record), default=repr)
            except (TypeError, ValueError, AttributeError):
                text = repr(record)
            log.error("audit-lost %s", text)

    def _submit_after_close(self, record: UsageRecordLike | Row) -> None:
        """A record arriving after close: written straight to a spill file (or logged)."""
        try:
            row = _row_of(record)
        except (TypeError, ValueError, AttributeError) as exc:
            log.error("audit-rejected (after close: %s) %r", exc, record)
            self.rejected += 1
            return
        if self._spill is not None:
            try:
                self._spill.write([row])
                self.spilled += 1
                log.warning("audit: record submitted after close spilled to %s", self._spill.path)
                return
            except Exception as exc:
                log.error("audit: cannot write spill file: %s", exc)
        self.lost += 1
        log.error("audit-lost (submitted after close) %s", orjson.dumps(row).decode())


def _row_of(record: UsageRecordLike | Mapping[str, Any]) -> Row:
    """A queued item as a JSON-safe row: a tagged shadow row stays tagged, else a usage row."""
    if isinstance(record, Mapping):
        kind = record.get(ROW_KIND)
        if kind == SHADOW_KIND:
            return {**shadow_row(record), ROW_KIND: SHADOW_KIND}
        if kind == FACADE_KIND:
            return {**facade_call_row(record), ROW_KIND: FACADE_KIND}
    return usage_row(record)


_INVALID_DATA = (
    sa_exc.DataError,
    sa_exc.IntegrityError,
    UnicodeError,
    OverflowError,
    ValueError,
    TypeError,
)


def _is_invalid(exc: BaseException) -> bool:
    """True when the rows themselves are the problem (retrying the same rows cannot help)."""
    if isinstance(exc, _INVALID_DATA):
        return True
    # raised while binding parameters, before the database saw the statement
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
