"""``events:`` section of lockgate.yaml (``Config.events``): event consumers to run in-process.

Example::

    events:
      consumers:
        - source: nats://127.0.0.1:4222/tickets          # or redis://..., amqp://...
          sink: nats://127.0.0.1:4222/tickets.enriched
          task: triage
          key_field: customer        # per-key ordering (optional)

Every job worker runs the listed consumers: the one embedded in the gateway (``lockgate up``;
``jobs.embedded_worker``) and each ``lockgate worker`` process, so events need no command of
their own. The fields mirror ``lockgate consume``'s flags.
"""

from __future__ import annotations

from pydantic import Field

from lockgate.settings.base import Strict

__all__ = ["EventConsumerSpec", "EventsSettings"]


class EventConsumerSpec(Strict):
    source: str = Field(min_length=1)
    """``nats://host:4222/subject``, ``redis://host:6379/0/stream``, ``amqp://user:pw@host/q``."""
    sink: str = Field(min_length=1)
    task: str = Field(min_length=1)
    key_field: str | None = None
    id_field: str = "id"
    group: str = "lockgate"
    concurrency: int = Field(8, ge=1, le=1024)
    max_attempts: int = Field(3, ge=1, le=100)
    lease: float = Field(30.0, gt=0)
    dedup: str | None = None
    """``redis://host:6379/0`` to share handled event ids across consumers (default: memory)."""


class EventsSettings(Strict):
    consumers: list[EventConsumerSpec] = Field(default_factory=list)
