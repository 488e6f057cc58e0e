"""Broker transports for the event consumer: NATS JetStream, Redis Streams, RabbitMQ.

URL forms (``open_transport``):

* ``nats://host:4222/<subject>?stream=NAME`` — JetStream; a stream covering
  ``<subject>`` and ``<subject>.dlq`` is created if missing. Consumption is a
  durable pull consumer (the group name) with explicit acks; ``ack_wait`` is
  the lease, renewed with ``in_progress()`` while a slow event is processed.
  Publishing sets ``Nats-Msg-Id`` to the event id, so JetStream's duplicate
  window drops a re-publish of the same enriched event.
* ``redis://host:6379/<db>/<stream>`` — a consumer group; entries left pending
  by a dead consumer are taken over with ``XAUTOCLAIM`` after the lease. The
  event is the entry's ``data`` field (JSON), or the entry's fields as a dict.
  Dead letters go to ``<stream>:dlq``.
* ``amqp://user:pass@host:5672/<queue>`` — RabbitMQ (aio-pika); durable queue,
  persistent messages with ``message_id`` = event id; unacked messages return
  to the queue when a consumer dies. Dead letters go to ``<queue>.dlq``.

Kafka (not built: no broker here to test against) would map the same way with
``aiokafka``: a consumer group, manual offset commits after publish, the event
key as the partition key (per-key order for free) and a ``<topic>.dlq`` topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from lockgate.formats.json_limits import loads_checked

__all__ = [
    "EventTransport",
    "Incoming",
    "NatsTransport",
    "RabbitTransport",
    "RedisStreamTransport",
    "open_transport",
]


@dataclass(slots=True)
class Incoming:
    data: Any
    token: Any
    delivery_count: int = 1


class EventTransport(Protocol):
    """One broker destination: consume from it, publish to it, dead-letter next to it."""

    name: str

    async def open(self) -> None: ...

    async def fetch(self, max_n: int, timeout: float) -> list[Incoming]:
        """Up to ``max_n`` events; waits at most ``timeout`` seconds when none is ready."""
        ...

    async def ack(self, m: Incoming) -> None: ...

    async def touch(self, m: Incoming) -> None:
        """Tell the broker the event is still being worked on (extend its lease)."""
        ...

    async def publish(self, data: Any, *, event_id: str) -> None: ...

    async def dead_letter(self, data: Any, *, event_id: str) -> None: ...

    async def aclose(self) -> None: ...

    async def drop(self) -> None:
        """Delete the stream/queue and its dead-letter sibling (tests)."""
        ...


def _decode(raw: bytes) -> Any:
    try:  # nested past the JSON depth limit: kept as text, like any non-JSON payload
        return loads_checked(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")}


# ------------------------------------------------------------------ NATS JetStream


class NatsTransport:
    def __init__(self, url: str, *, group: str, lease: float = 30.0) -> None:
        parts = urlsplit(url)
        self.subject = unquote(parts.path.lstrip("/"))
        if not self.subject:
            raise ValueError(f"NATS URL needs a subject: nats://host:4222/<subject>, got {url!r}")
        params = dict(parse_qsl(parts.query))
        self.server = f"nats://{parts.netloc}"
        self.stream = (
            params.get("stream")
            or "LG_" + "".join(c if c.isalnum() else "_" for c in self.subject).upper()
        )
        self.group = group
        self.lease = lease
        self.name = url
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    async def open(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        self._nc = await nats.connect(servers=[self.server], connect_timeout=5)
        self._js = self._nc.jetstream()
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            await self._js.add_stream(
                name=self.stream, subjects=[self.subject, f"{self.subject}.dlq"]
            )

    async def _subscription(self) -> Any:
        if self._sub is None:
            from nats.js.api import AckPolicy, ConsumerConfig

            self._sub = await self._js.pull_subscribe(
                self.subject,
                durable=self.group,
                stream=self.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT, ack_wait=self.lease, max_deliver=-1
                ),
            )
        return self._sub

    async def fetch(self, max_n: int, timeout: float) -> list[Incoming]:
        import nats.errors

        sub = await self._subscription()
        try:
            msgs = await sub.fetch(max_n, timeout=max(0.05, timeout))
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
            return []
        return [Incoming(_decode(m.data), m, int(m.metadata.num_delivered)) for m in msgs]

    async def ack(self, m: Incoming) -> None:
        await m.token.ack()

    async def touch(self, m: Incoming) -> None:
        await m.token.in_progress()

    async def publish(self, data: Any, *, event_id: str) -> None:
        await self._js.publish(
            self.subject,
            orjson.dumps(data),
            stream=self.stream,
            headers={"Nats-Msg-Id": event_id},
        )

    async def dead_letter(self, data: Any, *, event_id: str) -> None:
        await self._js.publish(
            f"{self.subject}.dlq",
            orjson.dumps(data),
            stream=self.stream,
            headers={"Nats-Msg-Id": f"dlq-{event_id}"},
        )

    async def aclose(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def drop(self) -> None:
        with contextlib.suppress(Exception):
            await self._js.delete_stream(self.stream)


# ------------------------------------------------------------------ Redis Streams


class RedisStreamTransport:
    def __init__(self, url: str, *, group: str, lease: float = 30.0) -> None:
        parts = urlsplit(url)
        segs = [s for s in parts.path.split("/") if s]
        db = "0"
        if segs and segs[0].isascii() and segs[0].isdigit():
            db = segs.pop(0)
        if not segs:
            raise ValueError(f"Redis URL needs a stream: redis://host:6379/0/<stream>, got {url!r}")
        self.stream = unquote("/".join(segs))
        self.base = f"{parts.scheme}://{parts.netloc}/{db}"
        self.group = group
        self.lease = lease
        self.consumer = f"c-{id(self):x}-{int(time.time())}"
        self.name = url
        self._r: Any = None

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.Redis.from_url(self.base, decode_responses=False)
        try:
            await self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _event(fields: dict[bytes, bytes]) -> Any:
        if b"data" in fields:
            return _decode(fields[b"data"])
        return {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}

    async def fetch(self, max_n: int, timeout: float) -> list[Incoming]:
        out: list[Incoming] = []
        res = await self._r.xautoclaim(
            self.stream, self.group, self.consumer, int(self.lease * 1000), "0-0", count=max_n
        )
        for msg_id, fields in res[1]:
            if fields:
                out.append(Incoming(self._event(fields), msg_id, 2))
            else:  # trimmed away while pending
                await self._r.xack(self.stream, self.group, msg_id)
        if len(out) < max_n:
            fresh = await self._r.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=max_n - len(out),
                block=max(1, int(timeout * 1000)) if not out else None,
            )
            for _s, entries in fresh or []:
                out.extend(Incoming(self._event(f), mid, 1) for mid, f in entries)
        return out

    async def ack(self, m: Incoming) -> None:
        await self._r.xack(self.stream, self.group, m.token)

    async def touch(self, m: Incoming) -> None:
        await self._r.xclaim(self.stream, self.group, self.consumer, 0, [m.token], justid=True)

    async def publish(self, data: Any, *, event_id: str) -> None:
        await self._r.xadd(self.stream, {"data": orjson.dumps(data), "id": event_id})

    async def dead_letter(self, data: Any, *, event_id: str) -> None:
        await self._r.xadd(f"{self.stream}:dlq", {"data": orjson.dumps(data), "id": event_id})

    async def aclose(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def drop(self) -> None:
        await self._r.delete(self.stream, f"{self.stream}:dlq")


# ------------------------------------------------------------------ RabbitMQ


class RabbitTransport:
    def __init__(self, url: str, *, group: str, lease: float = 30.0, prefetch: int = 64) -> None:
        parts = urlsplit(url)
        self.queue_name = unquote(parts.path.lstrip("/"))
        if not self.queue_name:
            raise ValueError(f"AMQP URL needs a queue: amqp://user:pw@host/<queue>, got {url!r}")
        self.base = f"{parts.scheme}://{parts.netloc}/"
        self.group = group
        self.prefetch = prefetch
        self.name = url
        self._conn: Any = None
        self._ch: Any = None
        self._queue: Any = None

    async def open(self) -> None:
        import aio_pika

        self._conn = await aio_pika.connect_robust(self.base, timeout=5)
        self._ch = await self._conn.channel()
        await self._ch.set_qos(prefetch_count=self.prefetch)
        self._queue = await self._ch.declare_queue(self.queue_name, durable=True)
        await self._ch.declare_queue(f"{self.queue_name}.dlq", durable=True)

    async def fetch(self, max_n: int, timeout: float) -> list[Incoming]:
        out: list[Incoming] = []
        deadline = time.monotonic() + timeout
        while len(out) < max_n:
            msg = await self._queue.get(no_ack=False, fail=False)
            if msg is None:
                if out or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
                continue
            out.append(Incoming(_decode(msg.body), msg, 2 if msg.redelivered else 1))
        return out

    async def ack(self, m: Incoming) -> None:
        await m.token.ack()

    async def touch(self, m: Incoming) -> None:
        return None  # RabbitMQ has no per-message lease (consumer_timeout is minutes)

    async def _send(self, queue: str, data: Any, event_id: str) -> None:
        import aio_pika

        await self._ch.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(data),
                message_id=event_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )

    async def publish(self, data: Any, *, event_id: str) -> None:
        await self._send(self.queue_name, data, event_id)

    async def dead_letter(self, data: Any, *, event_id: str) -> None:
        await self._send(f"{self.queue_name}.dlq", data, event_id)

    async def aclose(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def drop(self) -> None:
        for name in (self.queue_name, f"{self.queue_name}.dlq"):
            with contextlib.suppress(Exception):
                await self._ch.queue_delete(name)


def open_transport(url: str, *, group: str = "lockgate", lease: float = 30.0) -> EventTransport:
    """Build (not yet open) the transport for a ``nats://``, ``redis://`` or ``amqp://`` URL."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("nats", "tls"):
        return NatsTransport(url, group=group, lease=lease)
    if scheme in ("redis", "rediss"):
        return RedisStreamTransport(url, group=group, lease=lease)
    if scheme in ("amqp", "amqps"):
        return RabbitTransport(url, group=group, lease=lease)
    if scheme == "kafka":
        raise ValueError("kafka:// is not built in this version (see lockgate.events.transports)")
    raise ValueError(f"unsupported event URL {url!r}: use nats://, redis:// or amqp://")
