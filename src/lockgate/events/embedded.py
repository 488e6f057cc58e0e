"""The configured event consumers (``events.consumers``) running inside a process.

:class:`EmbeddedConsumers` opens each consumer's source and sink, wires the task (through the
pipeline, under its review policy, exactly as ``lockgate consume`` does) and runs them as
tasks of the current event loop until :meth:`stop`. The gateway starts them beside its
embedded job worker (``lockgate up``), ``lockgate worker`` beside its own. A consumer whose
broker cannot be reached logs the error and stops; the others keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from lockgate.events.consumer import EventConsumer
from lockgate.events.dedup import DedupStore, MemoryDedup, RedisDedup
from lockgate.events.review_gate import event_resumer, reviewed_enricher
from lockgate.events.transports import EventTransport, open_transport
from lockgate.jobs.tasks import TaskRunner
from lockgate.review.service import ReviewService
from lockgate.settings.events import EventConsumerSpec

__all__ = ["EmbeddedConsumers"]

log = logging.getLogger("lockgate.events.embedded")


@dataclass
class _Running:
    consumer: EventConsumer
    source: EventTransport
    sink: EventTransport
    dedup: DedupStore
    task: asyncio.Task[object] | None = None


@dataclass
class EmbeddedConsumers:
    running: list[_Running] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def start(cls, specs: list[EventConsumerSpec], runner: TaskRunner,
                    review: ReviewService) -> EmbeddedConsumers:
        out = cls()
        for spec in specs:
            try:
                out.running.append(_build(spec, runner, review))
            except ValueError:  # a URL no transport takes (the config check names it too)
                log.exception("event consumer %s -> %s not started", spec.source, spec.sink)
        for r in out.running:
            r.task = asyncio.create_task(r.consumer.run(out._stop), name="event-consumer")
            r.task.add_done_callback(_report)
        return out

    async def stop(self) -> None:
        self._stop.set()
        for r in self.running:
            if r.task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await r.task
            await r.source.aclose()
            if r.sink is not r.source:
                await r.sink.aclose()
            await r.dedup.aclose()


def _report(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event consumer stopped", exc_info=task.exception())


def _build(spec: EventConsumerSpec, runner: TaskRunner, review: ReviewService) -> _Running:
    src = open_transport(spec.source, group=spec.group, lease=spec.lease)
    dst = src if spec.sink == spec.source else open_transport(spec.sink, group=spec.group,
                                                               lease=spec.lease)
    review.resumers[f"events:{spec.task}"] = event_resumer(src, dst, spec.id_field)
    dedup: DedupStore = (
        RedisDedup(spec.dedup, prefix=f"lockgate:events:{spec.group}:seen") if spec.dedup
        else MemoryDedup()
    )
    consumer = EventConsumer(
        src, dst, reviewed_enricher(runner, spec.task, review, id_field=spec.id_field),
        key_field=spec.key_field, id_field=spec.id_field, concurrency=spec.concurrency,
        max_attempts=spec.max_attempts, dedup=dedup, touch_every=max(0.2, spec.lease / 3),
    )
    return _Running(consumer, src, dst, dedup)
