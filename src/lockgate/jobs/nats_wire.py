"""JetStream plumbing for :mod:`lockgate.jobs.nats_queue` (no job logic here).

* :class:`Pulls` — "give me up to N messages that are ready *now*" on a durable pull
  consumer: one ``no_wait`` pull request, answered by the messages and a 404/408 status
  (with ``wait``: ``no_wait`` plus ``expires``, answered as soon as one message is there).
  nats-py's ``fetch`` waits out its timeout when a consumer is empty; a job queue polls
  empty consumers all the time, so it pulls by hand (one inbox subscription per consumer,
  one pull at a time on it: JetStream delivers under the messages' own subjects);
* :func:`ensure_stream` / :func:`ensure_consumer` — idempotent creation;
* :class:`Cas` — a JSON document in a KV bucket changed by compare-and-set on its revision
  (the building block that replaces the Lua scripts of the Redis backend).

Holds for the NATS server on this machine (2.9): no_wait pulls, ``-NAK`` with a delay, an
ack through any earlier delivery's reply subject, per-subject message limits in a
work-queue stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

__all__ = ["Cas", "Conn", "Doc", "Pulls", "ensure_consumer", "ensure_stream", "msg_age"]

Doc = dict[str, Any]


class _Lane:
    """One consumer's pulls: an inbox subscription, one pull request at a time (JetStream
    delivers the messages under their own subjects, so only the inbox tells them apart)."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self.nc = nc
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self.lock = asyncio.Lock()
        self.ids = itertools.count(1)
        self.current: tuple[str, list[Msg], int, asyncio.Future[None]] | None = None
        self.sub: Any = None

    async def on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        cur = self.current
        if status:
            if (cur is not None and status != "100" and msg.subject.endswith("." + cur[0])
                    and not cur[3].done()):
                cur[3].set_result(None)  # 404 no messages, 408 batch done, 409 ...
            return
        if cur is None or cur[3].done():
            if msg.reply:  # an answer to a pull that gave up: hand it back at once
                await msg.nak()
            return
        cur[1].append(msg)
        if len(cur[1]) >= cur[2]:
            cur[3].set_result(None)

    async def pull(self, batch: int, timeout: float, wait: float = 0.0) -> list[Msg]:
        request: dict[str, Any] = {"batch": batch, "no_wait": True}
        if wait > 0:  # no_wait + expires: answered as soon as there is a message, else at expiry
            request["expires"] = int(wait * 1e9)
        async with self.lock:
            if self.sub is None:
                self.sub = await self.nc.subscribe(self.inbox + ".*", cb=self.on_msg)
            token = str(next(self.ids))
            out: list[Msg] = []
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.current = (token, out, batch, fut)
            try:
                await self.nc.publish(
                    self.api,
                    orjson.dumps(request),
                    reply=f"{self.inbox}.{token}",
                )
                await asyncio.wait_for(fut, max(timeout, wait + 1.0))
            except TimeoutError:
                pass
            finally:
                self.current = None
            return out


class Pulls:
    """No-wait pulls from durable consumers: "up to N messages that are ready now"."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._lanes: dict[tuple[str, str], _Lane] = {}

    async def pull(self, stream: str, consumer: str, batch: int, timeout: float = 5.0,
                   wait: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages ready now. ``wait`` > 0: if none is, wait up to that long
        for one. For a message this client has just published: the server tells a consumer
        about new messages asynchronously, after it has acknowledged the publish, so a
        no-wait pull right after the publish can (rarely, on a loaded server) miss it."""
        lane = self._lanes.get((stream, consumer))
        if lane is None:
            lane = self._lanes[(stream, consumer)] = _Lane(self._nc, stream, consumer)
        return await lane.pull(batch, timeout, wait)


def msg_age(msg: Msg, now: float) -> float:
    """Seconds since the message was stored in its stream."""
    return now - msg.metadata.timestamp.timestamp()


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: list[str],
    *,
    work_queue: bool,
    per_subject: int = 1,
) -> None:
    cfg = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
        max_msgs_per_subject=per_subject,
    )
    try:
        await js.add_stream(cfg)
    except BadRequestError:  # exists with another configuration: bring it in line
        await js.update_stream(cfg)


async def ensure_consumer(
    js: JetStreamContext, stream: str, durable: str, subject: str, ack_wait: float
) -> None:
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=-1,
        ),
    )


class Cas:
    """JSON documents in a KV bucket, changed only by compare-and-set on their revision."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, key: str) -> tuple[Doc, int] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return orjson.loads(entry.value), int(entry.revision or 0)

    async def create(self, key: str, doc: Any) -> int | None:
        """Write ``doc`` (JSON) if ``key`` holds nothing; None when it exists."""
        try:
            return int(await self.kv.create(key, orjson.dumps(doc)))
        except KeyWrongLastSequenceError:
            return None

    async def erase(self, js: JetStreamContext, bucket: str, key: str) -> None:
        """Remove ``key`` and leave nothing behind (``delete`` keeps a tombstone per key)."""
        with contextlib.suppress(NotFoundError):
            await js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")

    async def delete(self, key: str) -> None:
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            await self.kv.delete(key)

    async def change(
        self,
        key: str,
        edit: Callable[[Doc], bool],
        known: tuple[Doc, int] | None = None,
    ) -> tuple[tuple[Doc, int] | None, bool]:
        """Apply ``edit`` (mutates a copy, True: write it) until the write wins a race.

        Returns the document as stored afterwards (None: no such key) and whether
        ``edit`` changed it. ``known`` skips the first read when the caller has a recent copy.
        """
        cur = known if known is not None else await self.load(key)
        for _ in range(1000):
            if cur is None:
                return None, False
            doc, rev = cur
            new = dict(doc)
            if not edit(new):
                return cur, False
            try:
                rev2 = await self.kv.update(key, orjson.dumps(new), last=rev)
            except KeyWrongLastSequenceError:
                cur = await self.load(key)
                continue
            return (new, int(rev2)), True
        raise RuntimeError(f"job queue: no compare-and-set on {key!r} won after 1000 tries")


@dataclass
class Conn:
    """One connection's JetStream handles and the small steps every part of the queue takes."""

    nc: Client
    js: JetStreamContext
    cas: Cas
    pulls: Pulls

    async def ack(self, msg: Msg) -> None:
        """Acknowledge through ``msg``'s reply subject (any delivery's reply acks it)."""
        if msg.reply:
            await self.nc.publish(msg.reply, b"+ACK")

    async def nak(self, msg: Msg, delay: float = 0.0) -> None:
        """Hand ``msg`` back to be delivered again in ``delay`` seconds (repeatable)."""
        if msg.reply:
            body = b"-NAK"
            if delay > 0:
                body += b" " + orjson.dumps({"delay": int(delay * 1e9)})
            await self.nc.publish(msg.reply, body)

    async def purge(self, stream: str, subject: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.js.purge_stream(stream, subject=subject)

    async def delete(self, stream: str, seq: int) -> None:
        """Delete one message (no secure erase: nothing secret in it)."""
        try:
            await self.js._api_request(  # nats-py's delete_msg always erases (4x slower)
                f"$JS.API.STREAM.MSG.DELETE.{stream}",
                orjson.dumps({"seq": seq, "no_erase": True}),
                timeout=10,
            )
        except APIError as exc:  # already gone: 404, or 10057 "no message found"
            if exc.code != 404 and exc.err_code != 10057:
                raise

    async def subject_ids(self, stream: str, prefix: str) -> list[str]:
        """The last tokens of the subjects ``<prefix>.*`` that hold a message."""
        info = await self.js.stream_info(stream, subjects_filter=f"{prefix}.*")
        return [s.rsplit(".", 1)[-1] for s in (info.state.subjects or {})]
