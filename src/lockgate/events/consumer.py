"""The event consumer: source -> task (through the pipeline) -> sink, with DLQ and dedup.

For every event from the source:

1. its id (``id_field``; else the transport's message id) is checked against
   the dedup store: an event already handled is acknowledged and dropped;
2. ``enrich(event)`` runs (normally a task through the gateway pipeline),
   retried in process with backoff up to ``max_attempts`` — permanent errors
   (bad input) stop at once — while the broker lease is kept alive;
3. the enriched event (the original fields plus ``enrichment``) is published
   to the sink under the original id; a failure goes to the source's
   dead-letter destination with the error instead;
4. the id is marked handled, then the message is acknowledged.

Events with the same ``key_field`` value are handled in arrival order, one at a
time; different keys run concurrently (at most ``concurrency`` in flight). A
consumer that dies before step 4 gets the event redelivered by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lockgate.events.dedup import DedupStore, MemoryDedup
from lockgate.events.transports import EventTransport, Incoming
from lockgate.jobs.model import ParkForReview, backoff_delay
from lockgate.jobs.tasks import TaskRunner
from lockgate.jobs.worker import classify_error

__all__ = ["ConsumerStats", "Enricher", "EventConsumer", "task_enricher"]

log = logging.getLogger("lockgate.events")

Enricher = Callable[[Any], Awaitable[dict[str, Any]]]


def task_enricher(runner: TaskRunner, task: str) -> Enricher:
    runner.spec(task)  # unknown task: fail at start, not per event

    async def enrich(event: Any) -> dict[str, Any]:
        res = await runner.run(task, event)
        return {"task": task, "output": res.output, "confidence": res.confidence}

    return enrich


@dataclass
class ConsumerStats:
    received: int = 0
    forwarded: int = 0
    dead: int = 0
    duplicates: int = 0
    retries: int = 0
    parked: int = 0
    """Events handed to a person (review policy of the task)."""


class EventConsumer:
    def __init__(
        self,
        source: EventTransport,
        sink: EventTransport,
        enrich: Enricher | TaskRunner,
        task: str | None = None,
        *,
        key_field: str | None = None,
        id_field: str = "id",
        concurrency: int = 8,
        max_attempts: int = 3,
        dedup: DedupStore | None = None,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        touch_every: float = 10.0,
        poll_timeout: float = 0.5,
    ) -> None:
        if isinstance(enrich, TaskRunner):
            if task is None:
                raise ValueError("a TaskRunner needs the task name")
            enrich = task_enricher(enrich, task)
        self.source = source
        self.sink = sink
        self.enrich = enrich
        self.key_field = key_field
        self.id_field = id_field
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.dedup = dedup or MemoryDedup()
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.touch_every = touch_every
        self.poll_timeout = poll_timeout
        self.stats = ConsumerStats()
        self._inflight = 0
        self._slot = asyncio.Event()
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _event_id(self, m: Incoming) -> str:
        if isinstance(m.data, dict) and m.data.get(self.id_field) is not None:
            return str(m.data[self.id_field])
        token = m.token
        if isinstance(token, bytes):
            return "msg-" + token.decode()
        return f"msg-{token if isinstance(token, str) else id(token)}"

    def _key(self, m: Incoming) -> str | None:
        if self.key_field and isinstance(m.data, dict):
            value = m.data.get(self.key_field)
            return None if value is None else str(value)
        return None

    async def run(self, stop: asyncio.Event) -> ConsumerStats:
        opened: list[EventTransport] = []
        for t in (self.source, self.sink):
            if t not in opened:
                await t.open()
                opened.append(t)
        try:
            while not stop.is_set():
                free = self.concurrency - self._inflight
                if free <= 0:
                    self._slot.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot.wait(), timeout=self.poll_timeout)
                    continue
                try:
                    msgs = await self.source.fetch(free, self.poll_timeout)
                except Exception:  # broker hiccup: keep consuming, do not spin
                    log.exception("fetch from %s failed", self.source.name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    continue
                for m in msgs:
                    self._inflight += 1
                    self._dispatch(m)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats

    def _dispatch(self, m: Incoming) -> None:
        # two lanes: the ordering key, and the event id (a duplicate arriving while
        # the original is still in flight waits for it, then sees it as handled)
        lanes = [f"k:{k}" for k in [self._key(m)] if k is not None]
        lanes.append(f"i:{self._event_id(m)}")
        prevs = [p for p in (self._tails.get(lane) for lane in lanes) if p is not None]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for lane in lanes:
            self._tails[lane] = done
        task = asyncio.create_task(self._handle(m, prevs, done, lanes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(
        self,
        m: Incoming,
        prevs: list[asyncio.Future[None]],
        done: asyncio.Future[None],
        lanes: list[str],
    ) -> None:
        try:
            for prev in prevs:
                await asyncio.shield(prev)
            await self._process(m)
        except Exception:
            log.exception("event handling failed; it will be redelivered")
        finally:
            done.set_result(None)
            for lane in lanes:
                if self._tails.get(lane) is done:
                    del self._tails[lane]
            self._inflight -= 1
            self._slot.set()

    async def _keepalive(self, m: Incoming) -> None:
        while True:
            await asyncio.sleep(self.touch_every)
            with contextlib.suppress(Exception):
                await self.source.touch(m)

    async def _process(self, m: Incoming) -> None:
        self.stats.received += 1
        event_id = self._event_id(m)
        if await self.dedup.seen(event_id):
            self.stats.duplicates += 1
            await self.source.ack(m)
            return
        beat = asyncio.create_task(self._keepalive(m))
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    enrichment = await self.enrich(m.data)
                    break
                except ParkForReview:
                    # a person decides first: the item (holding the event) is durable in the
                    # review queue; the review resumer publishes it after the decision
                    self.stats.parked += 1
                    await self.dedup.mark(event_id)
                    await self.source.ack(m)
                    return
                except Exception as exc:
                    message, permanent, retry_in = classify_error(exc)
                    if permanent or attempt >= self.max_attempts:
                        await self.source.dead_letter(
                            {
                                "id": event_id,
                                "event": m.data,
                                "error": message,
                                "attempts": attempt,
                            },
                            event_id=event_id,
                        )
                        self.stats.dead += 1
                        await self.dedup.mark(event_id)
                        await self.source.ack(m)
                        return
                    self.stats.retries += 1
                    delay = backoff_delay(attempt, base=self.retry_base, cap=self.retry_cap)
                    await asyncio.sleep(max(retry_in, delay))
        finally:
            beat.cancel()
        base = m.data if isinstance(m.data, dict) else {"value": m.data}
        out = {**base, "enrichment": enrichment}
        out.setdefault(self.id_field, event_id)
        await self.sink.publish(out, event_id=event_id)
        self.stats.forwarded += 1
        await self.dedup.mark(event_id)
        await self.source.ack(m)
