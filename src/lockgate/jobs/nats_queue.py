"""NATS JetStream job queue: job records in a KV bucket, work in streams, timers by ``-NAK``.

URL ``nats://host:4222?prefix=name`` (``prefix``: letters, digits, ``_``, ``-``; default
``lockgate_jobs``). What it keeps, for prefix ``P``:

* KV bucket ``P_kv``: ``j.<job id>`` the job record (JSON; every state change is a
  compare-and-set on the record's revision, so exactly one of two racing writers wins —
  the role the Lua scripts play on Redis); ``i.<sha256(idempotency key)>`` -> job id;
  ``p.<sha256(partition key)>`` the partition's active jobs in submission order;
  ``w.<delivery id>`` completion-webhook outbox entries; ``m.bands`` the priorities in use;
* stream ``P_Q`` (work queue, file storage like every stream here): ``P.r.<band>.<id>``
  when a job may run (one durable pull consumer per priority band; a claim drains the
  highest band first, so priority is honoured), ``P.w.<id>`` while it waits behind the head
  of its partition (no consumer: the finisher of the head promotes the next one),
  ``P.t.<id>`` while it waits for its ``run_after`` (the *delay lane*: retries in backoff,
  scheduled jobs; consumer ``t``, nak'd until due, then moved to its ready subject). One
  message per subject, so a repeated publish replaces instead of duplicating;
* records written at start: a job without idempotency key, partition key or webhook, due
  at once (the common case), is enqueued as its ready message alone, the record riding in
  it (``lazy``); the start's compare-and-set "on revision 0" (expected last subject
  sequence 0) creates the record, so exactly one start wins, as for any revision. While
  it waits, ``get`` reads the job from that message and ``cancel`` first writes the record
  from it (a start then loses its compare-and-set and sees the job cancelled). The message
  is stored (file storage, acknowledged publish) before ``enqueue`` returns, so the job is
  as durable as with the record written first; this saves a KV append and a round trip
  per job;
* the ready message that starts a job is its *timer*: starting does not acknowledge it but
  ``-NAK``s it with the lease as delay (its stream sequence ``run_q`` and the reply subject
  of that delivery ``run_ack`` go into the record by the start's compare-and-set), so
  JetStream hands it back when the lease would end: a claimer that finds the lease renewed
  (heartbeat) naks again, one that finds it expired re-runs the job (a new attempt) or
  dead-letters it when the attempts are used up. This is the SIGKILL-safe redelivery: no
  sweep and no clock but the broker's. The job leaving ``running`` acknowledges it (through
  ``run_ack``: any client can); a release republishes the same subject, which replaces it.
  So a ready consumer's pending (delivered, unacknowledged) messages are the running jobs:
  ``stats().in_flight`` is their count and the depth is the stream's messages minus them;
* streams ``P_D`` (dead letters), ``P_X`` (results to expire, in expiry order, read from
  the front), ``P_G`` (tombstones to forget, likewise), ``P_W`` / ``P_WD`` (webhook outbox
  and its dead letters); ``P_R``, the per-job *watcher* stream of earlier versions, is only
  drained (``_watch``) until empty, for jobs started before an upgrade. Stop the workers of
  the earlier version before starting these: an earlier-version claimer acknowledges a
  timer it does not know (the job would then depend on its worker finishing it).

Per plain job the server now does 3 stream/KV appends with an answer (ready publish, two
compare-and-sets, the first creating the record), one delivery, one nak, one ack, and 1/n of
an expiry-index append; earlier versions also wrote the record at enqueue, published a
watcher (an append with an answer), deleted it (a
JetStream API request: the costliest kind of operation on the server) and had it delivered
and nak'd once more whenever a housekeeping look came while the job ran, and wrote one
expiry-index entry per job. Every guarantee holds as before:

* SIGKILL-safe redelivery: the timer is the message itself, nak'd by the start before the
  worker sees the job; a worker killed at any later point leaves it pending in the
  consumer, and JetStream redelivers it at the lease's end (or ``ACK_WAIT`` after a
  claimer died between pulling and nak'ing, as before);
* exactly one winner: every change is still a compare-and-set on the record; a message
  that is not the job's ``run_q`` is acknowledged as a duplicate, never run;
* retries: ``fail`` writes the record, publishes to the delay lane, and only then lets the
  timer go; killed in between, the timer comes due and finds its job queued: a job is
  never restarted through its old timer (``run_q`` is still that message), the timer puts
  it in the delay lane and goes, so a late acknowledgement of it takes nothing from a new
  run. Delay-lane messages, partition promotions, idempotent resubmissions ("heal") and
  DLQ retries publish a ready message only if the ready subject is empty (expected last
  subject sequence 0): whatever message is there already leads to the job, and replacing a
  running job's timer would take its redelivery away. The one exception: a due retry
  that finds its job's old timer still there (the fire-and-forget acknowledgement has not
  reached the server yet) waits for it to go instead of counting it as the carrier. Only
  ``release`` replaces on purpose (its own timer, so the job is handed out again at once);
* per-key ordering, DLQ, priority, idempotency: unchanged (partition lists, ``P_D``, the
  band consumers and the ``i.`` keys work as before).

The completions of one client within ``FINISH_BATCH_WINDOW`` share ONE ``P_X`` entry
(``{"ids": [...], "at": the latest expiry}``: every job in it is due when the entry is),
sent just before their timers' acknowledgements on the same connection. That stays
crash-safe for the same reason as every other after-step: until its timer is acknowledged,
a finished job's timer comes due at the end of its lease and its reader writes the entry
again.

Crash safety: every step after the winning compare-and-set (promote the next job of a
partition, write the webhook outbox entry, index the result for expiry, acknowledge the
timer) is idempotent and is redone by whoever next sees the job's timer, so a worker killed
between two steps loses nothing. Leases use wall-clock time, as on the other backends.

Partial: a partition key's list stays in the bucket (empty) after its last job; delivered
webhook outbox entries are kept, as on SQL. A producer killed between writing a job and
publishing it leaves a ``queued`` job that never runs — submitting again with the same
idempotency key republishes it (jobs without a partition key). ``stats().oldest_age``
counts from the job's ``created_at`` like the SQL backends. Targets one NATS server or
cluster (JetStream on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from lockgate.jobs.model import (
    Delivery,
    EnqueueResult,
    Job,
    JobGone,
    JobNotFound,
    JobState,
    NewJob,
    QueueFull,
    QueueStats,
    WebhookDelivery,
    WebhookOutcome,
    backoff_delay,
    new_job_id,
)
from lockgate.jobs.nats_outbox import EVENTS, NatsOutbox
from lockgate.jobs.nats_wire import (
    Cas,
    Conn,
    Doc,
    Pulls,
    ensure_consumer,
    ensure_stream,
    msg_age,
)
from lockgate.jobs.queue import QueueOptions, split_url_options

__all__ = ["NatsQueue"]

HOUSEKEEPING_INTERVAL = 0.1
"""Seconds between two looks at due watchers by one queue client."""
RUNNING_TTL = 0.1
"""Seconds ``stats()`` may reuse the ready consumers' counts when this client did not act
on a job meanwhile (so ``in_flight`` may lag other clients' starts and finishes by that)."""
FINISH_BATCH_WINDOW = 0.004
"""Seconds a completion's expiry-index entry and timer acknowledgement wait for others to
batch with (one index message per batch instead of one per job)."""
ACK_WAIT = 5.0
"""Seconds a pulled message may stay unanswered before JetStream hands it out again (a
client killed between pulling and answering). Answers take milliseconds; one that comes
later than this only means a second reader also looks at the message, and the record's
compare-and-set lets one of them act."""
BANDS_REFRESH = 1.0
"""Seconds between re-reads of the priorities in use (other producers add bands)."""
MOVED_WAIT = 0.05
"""Seconds a claim waits, at most, for a band it has just moved due jobs into to show them
(the server tells its consumers about new messages after acknowledging the publish)."""
START_GRACE = 10.0
"""Seconds a message may point at a record not yet written (a producer mid-enqueue)."""
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _band(priority: int) -> str:
    return f"p{priority}" if priority >= 0 else f"m{-priority}"


def _job(doc: Doc) -> Job:
    return Job(**{k: doc[k] for k in _JOB_FIELDS if k in doc})



def _bury_expired(error: str, now: float) -> Callable[[Doc], bool]:
    """The change that dead-letters a running job whose lease ran out (no-op otherwise)."""
    def bury(d: Doc) -> bool:
        if d["state"] != "running" or float(d["lease_until"] or 0) > now:
            return False
        _to_dead(d, error, now)
        return True
    return bury


def _take_over_expired(worker_id: str, until: float, now: float) -> Callable[[Doc], bool]:
    """The change that gives a running job whose lease ran out to ``worker_id`` as a new
    attempt (no-op otherwise)."""
    def take_over(d: Doc) -> bool:
        if d["state"] != "running" or float(d["lease_until"] or 0) > now:
            return False
        d.update(attempts=int(d["attempts"]) + 1, lease_owner=worker_id, lease_until=until)
        return True
    return take_over

class NatsQueue:
    """A :class:`~lockgate.jobs.queue.JobQueue` on NATS JetStream."""

    def __init__(self, url: str, options: QueueOptions) -> None:
        base, params = split_url_options(url)
        prefix = params.get("prefix", "lockgate_jobs")
        if not _PREFIX.match(prefix):
            raise ValueError(f"NATS job queue prefix {prefix!r}: use letters, digits, _ and -")
        self.url = url
        self.options = options
        self.prefix = prefix
        self._base = base
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._cas: Cas | None = None
        self._pulls: Pulls | None = None
        self._bands: list[int] = []
        self._bands_at = 0.0
        self._consumers: set[str] = set()
        self._held: dict[str, tuple[Doc, int]] = {}
        """Records of the jobs this client runs, as last written (saves a read per step)."""
        self._outbox: NatsOutbox | None = None
        self._conn: Conn | None = None
        self._depth_cache: tuple[int, float] | None = None
        self._last_housekeeping = 0.0
        self._moved: set[int] = set()
        """Priorities this client has just moved due delay-lane jobs into (see ``claim``)."""
        self._finishing: list[tuple[str, float | None, Doc]] = []
        """Completed jobs whose expiry entry and timer acknowledgement wait for the next
        batch: (job id, expires_at or None, record)."""
        self._flush_task: asyncio.Task[None] | None = None
        self._legacy_gone = False
        """True once ``P_R`` held no watcher (see :meth:`_legacy_watchers`)."""
        self._acked: dict[str, str] = {}
        """Consumer name -> the last reply subject this client acknowledged through."""
        self._running_cache: tuple[float, list[Any]] | None = None
        """(monotonic time, the ready consumers' infos) — see :meth:`_running`."""
        p = prefix
        self.s_queue, self.s_run, self.s_dead = f"{p}_Q", f"{p}_R", f"{p}_D"
        self.s_expiry, self.s_gone = f"{p}_X", f"{p}_G"
        self.s_hooks, self.s_hooks_dead = f"{p}_W", f"{p}_WD"
        self.bucket = f"{p}_kv"

    # ------------------------------------------------------------ connection

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._js

    @property
    def cas(self) -> Cas:
        if self._cas is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._cas

    @property
    def pulls(self) -> Pulls:
        if self._pulls is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._pulls

    async def open(self) -> None:
        if self._nc is not None:
            return

        async def quiet(_exc: Exception) -> None:
            return None

        try:  # the first connection must work (then reconnects are retried forever)
            nc = await asyncio.wait_for(nats.connect(
                servers=[self._base],
                name="lockgate-jobs",
                connect_timeout=3,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # nats-py: 0 would retry the first connect forever
                error_cb=quiet,
            ), timeout=10)
        except Exception as exc:
            raise OSError(f"cannot reach NATS at {self._base}: {str(exc) or type(exc).__name__}"
                          ) from None
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=10)
        p = self.prefix
        js = self._js
        await ensure_stream(js, self.s_queue, [f"{p}.r.*.*", f"{p}.w.*", f"{p}.t.*"],
                            work_queue=True)
        await ensure_stream(js, self.s_run, [f"{p}.run.*"], work_queue=True)
        await ensure_stream(js, self.s_dead, [f"{p}.d.*"], work_queue=False)
        await ensure_stream(js, self.s_expiry, [f"{p}.x.*"], work_queue=False)
        await ensure_stream(js, self.s_gone, [f"{p}.g.*"], work_queue=False)
        await ensure_stream(js, self.s_hooks, [f"{p}.wh.*"], work_queue=True)
        await ensure_stream(js, self.s_hooks_dead, [f"{p}.whd.*"], work_queue=False)
        await ensure_consumer(js, self.s_run, "run", f"{p}.run.*", ACK_WAIT)
        await ensure_consumer(js, self.s_queue, "t", f"{p}.t.*", ACK_WAIT)
        await ensure_consumer(js, self.s_hooks, "wh", f"{p}.wh.*", ACK_WAIT)
        from nats.js.api import KeyValueConfig

        try:
            kv = await js.key_value(self.bucket)
        except Exception:
            kv = await js.create_key_value(KeyValueConfig(bucket=self.bucket, history=1))
        self._cas = Cas(kv)
        self._pulls = Pulls(nc)
        self._conn = Conn(nc, js, self._cas, self._pulls)
        self._outbox = NatsOutbox(self._conn, p, self.set_webhook_status)

    async def aclose(self) -> None:
        if self._nc is not None:
            await self._flush_pending()
            nc, self._nc = self._nc, None
            self._js = self._cas = self._pulls = self._conn = self._outbox = None
            await nc.close()

    async def _flush_pending(self) -> None:
        """Send the batched after-steps of completions now (before counting or closing)."""
        task = self._flush_task
        if task is not None and not task.done():
            await asyncio.wait({task})  # (never cancelled: one mid-way would lose its acks)
        if self._finishing:
            await self._flush_finished()

    async def drop(self) -> None:
        streams = [
            self.s_queue, self.s_run, self.s_dead, self.s_expiry, self.s_gone, self.s_hooks,
            self.s_hooks_dead,
        ]
        for name in streams:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_stream(name)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_key_value(self.bucket)

    # ------------------------------------------------------------ subjects, small steps

    def _ready_subject(self, doc: Doc) -> str:
        return f"{self.prefix}.r.{_band(int(doc['priority']))}.{doc['id']}"

    def _wait_subject(self, job_id: str) -> str:
        return f"{self.prefix}.w.{job_id}"

    def _delay_subject(self, job_id: str) -> str:
        return f"{self.prefix}.t.{job_id}"

    async def _publish_ready(self, doc: Doc, rev: int, lazy: bool = False,
                             if_empty: bool = False) -> None:
        """The job may run: its record (as of revision ``rev``) rides along, so the taker
        can compare-and-set without reading it first (a stale copy just costs a read).
        ``lazy``: the record is not written yet; the message is the only copy of the job.
        ``if_empty``: only if the ready subject holds no message (expected last subject
        sequence 0) — a message there, waiting or a timer, already leads to the job, and
        replacing a running job's timer would take its redelivery away; the job's own old
        timer, acknowledged late, does not: then the job goes to the delay lane, which
        waits for that timer to go."""
        from nats.js.errors import BadRequestError

        await self._ensure_band(int(doc["priority"]))
        if not lazy and float(doc["run_after"]) > time.time() + 0.05:
            await self._publish_delayed(doc)  # not due yet: the delay lane
            return
        self._running_cache = None  # (a release replaces a running job's timer)
        msg: Doc = {"id": doc["id"], "c": doc["created_at"], "rev": rev, "doc": doc}
        if lazy:
            msg["lazy"] = True
        headers = {"Nats-Expected-Last-Subject-Sequence": "0"} if if_empty else None
        subject = self._ready_subject(doc)
        try:
            await self.js.publish(subject, orjson.dumps(msg), headers=headers)
        except BadRequestError:  # (if_empty) 10071: the subject is taken
            if await self._old_timer_in(subject, doc["id"]):
                await self._publish_delayed(doc)  # due: moved once that timer has gone

    async def _queued_doc(self, job_id: str) -> Doc | None:
        """The job a ready message holds whose record is not written yet (``lazy``)."""
        for band in await self._current_bands():
            try:
                raw = await self.js.get_msg(self.s_queue,
                                            subject=f"{self.prefix}.r.{_band(band)}.{job_id}")
            except APIError:  # no message on that subject (404)
                continue
            body = orjson.loads(raw.data or b"{}")
            if body.get("lazy"):
                return body["doc"]  # type: ignore[no-any-return]
        return None

    async def _load_or_write(self, job_id: str) -> tuple[Doc, int] | None:
        """The job's record; written first from its ready message if it is not yet."""
        cur = await self._load(job_id)
        if cur is None:
            doc = await self._queued_doc(job_id)
            if doc is not None:
                await self.cas.create(f"j.{job_id}", doc)  # None: a start wrote it meanwhile
                cur = await self._load(job_id)
        return cur

    @property
    def conn(self) -> Conn:
        if self._conn is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._conn

    async def _ack(self, msg: Msg) -> None:
        if msg.reply:
            await self._ack_via(msg.reply)

    async def _ack_via(self, reply: str) -> None:
        """Acknowledge through a delivery's reply subject (fire-and-forget), remembering the
        last one per consumer for :meth:`_acks_done`."""
        if self._nc is not None:
            self._running_cache = None
            await self._nc.publish(reply, b"+ACK")
            self._acked[reply.split(".", 4)[3]] = reply

    async def _acks_done(self) -> None:
        """Wait until the server has applied this client's acknowledgements: JetStream
        applies a consumer's acks in order, off the connection's read loop (so a flush is
        not enough); answering an ack with a reply comes after all earlier ones."""
        acked, self._acked = self._acked, {}
        if self._nc is not None and acked:
            nc = self._nc
            with contextlib.suppress(Exception):  # an answer lost: the counts may lag
                await asyncio.gather(*(nc.request(r, b"+ACK", timeout=2) for r in acked.values()))

    async def _nak(self, msg: Msg, delay: float = 0.0) -> None:
        self._running_cache = None
        await self.conn.nak(msg, delay)

    async def _purge(self, stream: str, subject: str) -> None:
        await self.conn.purge(stream, subject)

    async def _delete_watcher(self, seq: int, wait: bool = True) -> None:
        """Delete a running job's watcher by its sequence (never a newer one). ``wait=False``
        sends the request without waiting for the answer (the hot path of ``complete``: a
        watcher that survives a lost request finds the job finished and goes)."""
        if seq and not wait and self._nc is not None:
            # no reply subject at all: the server deletes all the same and skips composing
            # an answer nobody reads (measured: 22 vs 30 us of server CPU per deletion)
            await self._nc.publish(f"$JS.API.STREAM.MSG.DELETE.{self.s_run}",
                                   orjson.dumps({"seq": seq, "no_erase": True}))
            return
        if seq:
            await self._delete(self.s_run, seq)

    async def _load(self, job_id: str) -> tuple[Doc, int] | None:
        return await self.cas.load(f"j.{job_id}")

    async def _change(self, job_id: str, edit: Any, known: tuple[Doc, int] | None = None
                      ) -> tuple[tuple[Doc, int] | None, bool]:
        return await self.cas.change(f"j.{job_id}", edit, known)

    # ------------------------------------------------------------ priority bands

    async def _ensure_band(self, priority: int) -> None:
        if priority in self._bands:
            return
        added = False

        def add(doc: Doc) -> bool:
            nonlocal added
            if priority in doc["bands"]:
                return False
            doc["bands"] = sorted({*doc["bands"], priority}, reverse=True)
            added = True
            return True

        await self.cas.create("m.bands", {"bands": []})
        cur, _ = await self.cas.change("m.bands", add)
        await self._ensure_consumer(priority)
        self._bands = list(cur[0]["bands"]) if cur else [priority]
        self._bands_at = time.monotonic()

    async def _ensure_consumer(self, priority: int) -> None:
        name = "b_" + _band(priority)
        if name not in self._consumers:
            subject = f"{self.prefix}.r.{_band(priority)}.*"
            await ensure_consumer(self.js, self.s_queue, name, subject, ACK_WAIT)
            self._consumers.add(name)

    async def _current_bands(self) -> list[int]:
        if time.monotonic() - self._bands_at >= BANDS_REFRESH:
            cur = await self.cas.load("m.bands")
            self._bands = list(cur[0]["bands"]) if cur else []
            self._bands_at = time.monotonic()
            for b in self._bands:
                await self._ensure_consumer(b)
        return self._bands

    # ------------------------------------------------------------ enqueue / read

    async def _depth(self) -> int:
        now = time.monotonic()
        cached = self._depth_cache
        if cached is not None and now - cached[1] < 0.5:
            return cached[0]
        info, running = await asyncio.gather(self.js.stream_info(self.s_queue),
                                             self._running())
        depth = max(0, int(info.state.messages) - sum(int(c.num_ack_pending) for c in running))
        self._depth_cache = (depth, now)
        return depth

    async def _running(self) -> list[Any]:
        """The ready consumers' states: a consumer's pending (delivered, unacknowledged)
        messages are the timers of its running jobs (plus, for a moment, messages being
        looked at by a claim), since a job not due yet waits in the delay lane instead.

        Kept for ``RUNNING_TTL`` seconds unless this client acted on a job meanwhile: on the
        NATS 2.9 server a filtered consumer's info costs time in proportion to the stream
        (~1.1 ms of server CPU at 4,000 waiting jobs, against ~0.15 ms for a stream's), and
        monitors poll it."""
        now = time.monotonic()
        cached = self._running_cache
        if cached is not None and now - cached[0] < RUNNING_TTL:
            return cached[1]
        bands = await self._current_bands()
        cons = list(await asyncio.gather(*(
            self.js.consumer_info(self.s_queue, "b_" + _band(b)) for b in bands)))
        self._running_cache = (now, cons)
        return cons

    def _bump_depth(self, delta: int) -> None:
        if self._depth_cache is not None:
            self._depth_cache = (max(0, self._depth_cache[0] + delta), self._depth_cache[1])

    async def _by_idempotency(self, key: str) -> tuple[Job | None, int]:
        """The job an idempotency key names (waits for a producer mid-enqueue), and the
        key's revision; (None, rev) when it points at nothing (a producer died)."""
        for _ in range(40):
            entry = await self.cas.kv.get(f"i.{_h(key)}")
            job_id = str(orjson.loads(entry.value or b'""'))
            cur = await self._load(job_id) if job_id else None
            if cur is not None:
                doc = cur[0]
                if (doc["state"] == "queued" and not doc["partition_key"]
                        and doc["created_at"] < time.time() - 2 and not doc["attempts"]):
                    await self._publish_ready(doc, cur[1], if_empty=True)  # heal: its
                    # producer died before publishing
                return _job(doc), int(entry.revision or 0)
            await asyncio.sleep(0.05)
        return None, int(entry.revision or 0)

    async def enqueue(self, new: NewJob) -> EnqueueResult:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        now = time.time()
        if await self._depth() >= self.options.max_depth:
            if new.idempotency_key is not None:
                try:
                    job, _ = await self._by_idempotency(new.idempotency_key)
                except KeyNotFoundError:
                    job = None
                if job is not None:
                    return EnqueueResult(job, created=False)
            raise QueueFull(await self._depth(), self.options.max_depth,
                            self.options.full_retry_after)
        job_id = new_job_id()
        doc: Doc = {
            "id": job_id,
            "task": new.task,
            "input": new.input,
            "state": "queued",
            "attempts": 0,
            "max_attempts": int(new.max_attempts),
            "created_at": now,
            "idempotency_key": new.idempotency_key,
            "partition_key": new.partition_key,
            "priority": int(new.priority),
            "run_after": float(new.run_after if new.run_after is not None else now),
            "lease_owner": None,
            "lease_until": None,
            "result": None,
            "last_error": None,
            "errors": [],
            "finished_at": None,
            "expires_at": None,
            "webhook_url": new.webhook_url,
            "webhook_status": "waiting" if new.webhook_url else None,
            "meta": new.meta,
            "run_msg": 0,
            "run_q": 0,
            "run_ack": None,
            "finish_no": 0,
        }
        if new.idempotency_key is not None:
            ikey = f"i.{_h(new.idempotency_key)}"
            while True:
                if await self.cas.create(ikey, job_id) is not None:
                    break
                try:
                    job, rev = await self._by_idempotency(new.idempotency_key)
                except KeyNotFoundError:
                    continue  # purged meanwhile: try to take it again
                if job is not None:
                    return EnqueueResult(job, created=False)
                try:  # the key names a job that was never written: take it over
                    await self.cas.kv.update(ikey, orjson.dumps(job_id), last=rev)
                    break
                except KeyWrongLastSequenceError:
                    continue
        if (new.idempotency_key is None and not new.partition_key and not new.webhook_url
                and float(doc["run_after"]) <= now):
            # the plain case: the ready message alone holds the job until it starts (the
            # start's compare-and-set creates the record; see "Records written at start")
            await self._publish_ready(doc, 0, lazy=True)
            self._bump_depth(1)
            return EnqueueResult(_job(doc), created=True)
        rev = await self.cas.create(f"j.{job_id}", doc) or 0
        if new.partition_key:
            await self._join_partition(doc, rev)
        else:
            await self._publish_ready(doc, rev)
        self._bump_depth(1)
        return EnqueueResult(_job(doc), created=True)

    async def _join_partition(self, doc: Doc, rev: int) -> None:
        """Queue behind the partition's earlier jobs: a waiting entry first, then the list
        (so the finisher of the head, promoting us, always finds the entry to remove)."""
        body = orjson.dumps({"id": doc["id"], "c": doc["created_at"]})
        await self.js.publish(self._wait_subject(doc["id"]), body)
        key = f"p.{_h(doc['partition_key'])}"
        await self.cas.create(key, {"ids": []})
        head = False

        def append(part: Doc) -> bool:
            nonlocal head
            if doc["id"] not in part["ids"]:
                part["ids"] = [*part["ids"], doc["id"]]
            head = part["ids"][0] == doc["id"]
            return True

        await self.cas.change(key, append)
        if head:
            await self._publish_ready(doc, rev)
            await self._purge(self.s_queue, self._wait_subject(doc["id"]))

    async def _advance(self, doc: Doc) -> None:
        """Take a finished/parked job out of its partition; promote the new head."""
        key = f"p.{_h(doc['partition_key'])}"

        def remove(part: Doc) -> bool:
            if doc["id"] not in part["ids"]:
                return False
            part["ids"] = [i for i in part["ids"] if i != doc["id"]]
            return True

        cur, _ = await self.cas.change(key, remove)
        if cur is None or not cur[0]["ids"]:
            return
        head = await self._load(cur[0]["ids"][0])
        if head is not None and head[0]["state"] == "queued":
            await self._publish_ready(head[0], head[1], if_empty=True)
            await self._purge(self.s_queue, self._wait_subject(head[0]["id"]))

    async def get(self, job_id: str) -> Job:
        cur = await self._load(job_id)
        if cur is None:
            doc = await self._queued_doc(job_id)
            if doc is not None:
                return _job(doc)  # waiting, its record not written yet
            cur = await self._load(job_id)  # started (and its message gone) meanwhile
        if cur is None:
            raise JobNotFound(job_id)
        job = _job(cur[0])
        if job.state == "expired" or (job.expires_at is not None and job.expires_at <= time.time()):
            raise JobGone(job_id)
        return job

    # ------------------------------------------------------------ claim / lease

    async def _start(self, msg: Msg, worker_id: str, until: float) -> Delivery | None:
        """A ready message: run its job if it is queued and due (exactly one taker wins).

        Starting does not acknowledge the message: it is nak'd with the lease as delay and
        so becomes the running job's timer (see :meth:`_timer`), acknowledged when the job
        leaves ``running``. A message delivered again is such a timer, or a duplicate."""
        now = time.time()
        body = orjson.loads(msg.data)
        job_id = body["id"]
        seq = msg.metadata.sequence.stream
        fresh = msg.metadata.num_delivered == 1 and body.get("rev")
        if body.get("lazy"):  # the record does not exist unless some step wrote it: the
            # start's compare-and-set "on revision 0" creates it, or loses and re-reads
            again = msg.metadata.num_delivered > 1  # (then likely a timer: read the record)
            cur: tuple[Doc, int] | None = (
                (await self._load(job_id) if again else None) or (body["doc"], 0))
        else:
            cur = (body["doc"], int(body["rev"])) if fresh else await self._load(job_id)
        if cur is None:
            if msg_age(msg, now) < START_GRACE:
                await self._nak(msg, delay=0.2)  # its producer is still writing the record
            else:
                await self._ack(msg)
            return None
        doc = cur[0]
        if doc["state"] == "queued":
            # (a lazy job is due when enqueued: its run_after is the producer's clock, and
            # only a clock ahead of ours makes it look early; it starts like the others)
            if cur[1] and (float(doc["run_after"]) > now or doc.get("run_q") == seq):
                # not due; or this message is the timer of a run that ended in a retry or
                # release whose worker may still be letting it go (or died doing so): a job
                # is never restarted through its old timer, it goes to the delay lane
                await self._defer(msg, doc)
                return None
            reply = msg.reply

            def start(d: Doc) -> bool:
                if d["state"] != "queued" or d.get("run_q") == seq:  # (see above)
                    return False
                d.update(state="running", attempts=int(d["attempts"]) + 1, lease_owner=worker_id,
                         lease_until=until, run_q=seq, run_ack=reply)
                return True

            after, won = await self._change(job_id, start, cur)
            if after is None:
                await self._ack(msg)
                return None
            if won:
                await self._nak(msg, delay=max(0.0, until - time.time()))  # the lease's timer
                self._held[job_id] = after
                return Delivery(_job(after[0]), worker_id, until, token=str(seq))
            cur = after  # changed meanwhile (cancelled, started through another message)
        return await self._timer(msg, cur, worker_id, until)

    async def _timer(self, msg: Msg, cur: tuple[Doc, int], worker_id: str, until: float
                     ) -> Delivery | None:
        """A ready message whose job is not waiting to start. If it is the message that
        started the job (``run_q``), it is the job's timer, due when the lease would end:
        renewed (heartbeat) -> nak again; expired -> re-run the job (a new attempt) or
        dead-letter it when the attempts are used up; finished or parked -> the finisher died
        before its after-steps: redo them (they acknowledge it). Any other message of the
        job is a duplicate: acknowledged."""
        now = time.time()
        doc = cur[0]
        job_id, seq = doc["id"], msg.metadata.sequence.stream
        if doc.get("run_q") != seq:
            await self._ack(msg)  # cancelled, or started through a duplicate message
            return None
        state = doc["state"]
        if state == "queued":  # its own old timer (see _start): the next look defers it
            await self._nak(msg, delay=0.05)
            return None
        if state != "running":
            await self._after_finish(doc)  # finished or parked: redo the idempotent after-steps
            await self._ack(msg)
            return None
        if await self._lease_handled(msg, cur, now, ack_buried=True):
            return None

        after, won = await self._change(job_id, _take_over_expired(worker_id, until, now), cur)
        await self._nak(msg, delay=max(0.0, until - time.time()) if won else 0.05)
        if not won or after is None:
            return None
        self._held[job_id] = after
        return Delivery(_job(after[0]), worker_id, until, token=str(seq))

    async def _lease_handled(self, msg: Msg, cur: tuple[Doc, int], now: float, *,
                             ack_buried: bool) -> bool:
        """A running job's timer (or legacy watcher) came due. True when that is all:
        the lease was renewed (nak again until it ends) or the attempts are used up
        (dead-lettered; ``ack_buried``: acknowledge the message then). False: the lease
        ran out with attempts left, the caller may take the job over."""
        doc = cur[0]
        lease_until = float(doc["lease_until"] or 0)
        if lease_until > now:
            await self._nak(msg, delay=lease_until - now + 0.01)
            return True
        attempts = int(doc["attempts"])
        if attempts < int(doc["max_attempts"]):
            return False
        error = f"lease expired on attempt {attempts} (worker lost)"
        after, won = await self._change(doc["id"], _bury_expired(error, now), cur)
        if won and after is not None:
            await self._after_finish(after[0])
            if ack_buried:
                await self._ack(msg)
        else:
            await self._nak(msg, delay=0.05)
        return True

    async def _defer(self, msg: Msg, doc: Doc) -> None:
        """A ready message of a job not due yet: wait in the delay lane instead (so a
        ready consumer's pending messages are only running jobs: see :meth:`stats`)."""
        await self._publish_delayed(doc)
        await self._ack(msg)

    async def _publish_delayed(self, doc: Doc) -> None:
        body = orjson.dumps({"id": doc["id"], "c": doc["created_at"],
                             "p": int(doc["priority"]), "at": float(doc["run_after"])})
        await self.js.publish(self._delay_subject(doc["id"]), body)

    async def _delays(self) -> None:
        """Due messages of the delay lane go to their ready subject. Only if that subject
        is empty (expected last subject sequence 0): a message there (waiting, or the
        timer of a start that raced this one) already carries the job — unless it is the
        job's own old timer, acknowledged late (:meth:`_old_timer_in`): then later."""
        from nats.js.errors import BadRequestError

        for _ in range(8):
            msgs = await self.pulls.pull(self.s_queue, "t", 256)
            now = time.time()
            for m in msgs:
                body = orjson.loads(m.data)
                at = float(body.get("at") or 0)
                if at > now:
                    await self._nak(m, delay=at - now)
                    continue
                priority = int(body.get("p") or 0)
                await self._ensure_band(priority)
                ready = f"{self.prefix}.r.{_band(priority)}.{body['id']}"
                try:
                    await self.js.publish(
                        ready, orjson.dumps({"id": body["id"], "c": body["c"]}),
                        headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                    )
                    self._moved.add(priority)
                except BadRequestError:  # 10071: the subject is taken
                    if await self._old_timer_in(ready, body["id"]):
                        # its worker's acknowledgement of it is still on the way (or the
                        # worker died: the timer then comes due and defers the job anew)
                        await self._nak(m, delay=min(2.0, 0.2 * m.metadata.num_delivered))
                        continue
                await self._ack(m)
            if len(msgs) < 256:
                break

    async def _old_timer_in(self, ready: str, job_id: str) -> bool:
        """Whether the message in a due retry's ready subject is the timer of the job's
        previous run, not yet acknowledged: it does not carry the retry (a start ignores
        it) and will be gone once acknowledged, so the retry must not be dropped."""
        cur = await self._load(job_id)
        if cur is None or cur[0]["state"] != "queued" or not cur[0].get("run_q"):
            return False
        try:
            last = await self.js.get_last_msg(self.s_queue, ready)
        except NotFoundError:
            return True  # gone meanwhile: publish on the next look
        return int(last.seq or 0) == int(cur[0]["run_q"])

    async def _watch(self, msg: Msg, worker_id: str, lease: float, take: bool
                     ) -> Delivery | None:
        """A due watcher: renew, re-run (lease expired) or dead-letter its job."""
        now = time.time()
        body = orjson.loads(msg.data)
        job_id, seq = body["id"], msg.metadata.sequence.stream
        if msg.metadata.num_delivered == 1 and float(body["until"]) > now:
            await self._nak(msg, delay=float(body["until"]) - now + 0.01)  # its first lease
            return None
        cur = await self._load(job_id)
        if cur is None:
            await self._ack(msg)
            return None
        doc = cur[0]
        if doc["run_msg"] != seq:
            if doc["state"] == "queued" and msg_age(msg, now) < lease + START_GRACE:
                await self._nak(msg, delay=1.0)  # a start still writing its record
            else:
                await self._ack(msg)  # a watcher left behind by a start that lost its race
            return None
        state = doc["state"]
        if state == "running":
            if await self._lease_handled(msg, cur, now, ack_buried=False):
                return None
            if not take:
                await self._nak(msg, delay=0.05)
                return None
            until = now + lease

            after, won = await self._change(job_id, _take_over_expired(worker_id, until, now),
                                            cur)
            await self._nak(msg, delay=lease + 0.01 if won else 0.05)
            if not won or after is None:
                return None
            self._held[job_id] = after
            return Delivery(_job(after[0]), worker_id, until, token=str(seq))
        if state == "queued":  # failed/released, its worker died before republishing it
            await self._publish_ready(doc, cur[1], if_empty=True)
            await self._delete_watcher(seq)
            return None
        await self._after_finish(doc)  # finished or parked: redo the idempotent after-steps
        return None

    async def _housekeeping(self, worker_id: str, limit: int, lease: float) -> list[Delivery]:
        now = time.monotonic()
        if now - self._last_housekeeping < HOUSEKEEPING_INTERVAL:
            return []
        self._last_housekeeping = now
        await self._delays()
        out: list[Delivery] = []
        if self._legacy_gone or not await self._legacy_watchers():
            return out
        for _ in range(8):  # bounded: a watcher handed back at once could come round again
            msgs = await self.pulls.pull(self.s_run, "run", 256)
            for m in msgs:
                d = await self._watch(m, worker_id, lease, take=len(out) < limit)
                if d is not None:
                    out.append(d)
            if len(msgs) < 256:
                break
        return out

    async def claim(self, worker_id: str, *, limit: int = 1, lease: float = 30.0) -> list[Delivery]:
        out = await self._housekeeping(worker_id, limit, lease)
        until = time.time() + lease
        taken = len(out)
        moved, self._moved = self._moved, set()
        for band in await self._current_bands():
            for i in range(16):  # bounded: timers nak'd again are not redelivered at once
                if len(out) >= limit:
                    break
                need = limit - len(out)
                # a band this claim has just moved due jobs into: its consumer may not know
                # of them yet, and a lower band must not go first (priority)
                wait = MOVED_WAIT if i == 0 and band in moved else 0.0
                msgs = await self.pulls.pull(self.s_queue, "b_" + _band(band), need, wait=wait)
                started = await asyncio.gather(*(self._start(m, worker_id, until) for m in msgs))
                out += [d for d in started if d is not None]
                if len(msgs) < need and not (wait and msgs):  # (a waited pull answers at
                    break  # its first message: look again for more)
            if len(out) >= limit:
                break
        self._bump_depth(taken - len(out))
        return out

    async def heartbeat(self, delivery: Delivery, lease: float) -> bool:
        until = time.time() + lease
        job_id = delivery.job.id

        def renew(d: Doc) -> bool:
            if d["state"] != "running" or d["lease_owner"] != delivery.worker_id:
                return False
            d["lease_until"] = until
            return True

        after, won = await self._change(job_id, renew, self._held.get(job_id))
        if won and after is not None:
            self._held[job_id] = after
            delivery.lease_until = until
            return True
        self._held.pop(job_id, None)
        return False

    async def _after_finish(self, doc: Doc, wait: bool = True) -> None:
        """Everything that follows a job leaving ``running``/``queued``; idempotent, so a
        watcher can redo it after the worker died half way."""
        state = doc["state"]
        if doc["partition_key"]:
            await self._advance(doc)
        p = self.prefix
        expiring = state in ("succeeded", "cancelled") and doc["expires_at"] is not None
        if state == "dead":
            await self.js.publish(f"{p}.d.{doc['id']}", orjson.dumps({"id": doc["id"]}))
        if doc["webhook_url"] and state in EVENTS and doc["finish_no"]:
            await self.outbox.add(doc)
        if not wait:  # the last two steps, batched with other completions (see _flush_finished)
            at = float(doc["expires_at"]) if expiring else None
            self._finishing.append((doc["id"], at, doc))
            if self._flush_task is None or self._flush_task.done():
                self._flush_task = asyncio.create_task(self._flush_finished(FINISH_BATCH_WINDOW))
            return
        if expiring and self._nc:
            body = orjson.dumps({"id": doc["id"], "at": doc["expires_at"]})
            # no wait for the stream's ack: a lost entry only delays dropping the result
            # (``get`` answers 410 from the record's expires_at anyway)
            await self._nc.publish(f"{p}.x.{doc['id']}", body)
        await self._let_go(doc)

    async def _let_go(self, doc: Doc, wait: bool = True) -> None:
        """The job no longer runs: acknowledge the message that started it (its timer; an
        acknowledgement through the reply subject of any delivery of it, so any client can),
        or delete the watcher of a job started by an older version (``run_msg``)."""
        if doc.get("run_ack") and self._nc is not None:
            await self._ack_via(doc["run_ack"])
        if doc.get("run_msg"):
            await self._delete_watcher(int(doc["run_msg"]), wait=wait)

    async def _flush_finished(self, after: float = 0.0) -> None:
        """The expiry-index entry and the timer acknowledgement of the jobs completed in the
        last ``after`` seconds: ONE index message for all of them (``{"ids": [...], "at":
        the latest expiry}``), then their timers' acknowledgements, fire-and-forget, in that
        order on the one connection. A client killed before this runs leaves the timers in
        place, so each job's after-steps are redone when its lease would have ended."""
        if after > 0:
            await asyncio.sleep(after)
        if self._flush_task is asyncio.current_task():
            self._flush_task = None
        batch, self._finishing = self._finishing, []
        nc = self._nc
        if not batch or nc is None:
            return
        due = [(job_id, at) for job_id, at, _ in batch if at is not None]
        if due:
            body = orjson.dumps({"ids": [i for i, _ in due], "at": max(at for _, at in due)})
            # a subject of its own (not ``x.<job id>``): a single entry written later for
            # one of these jobs must not replace the batch
            await nc.publish(f"{self.prefix}.x.b{nc.new_inbox().rsplit('.', 1)[-1]}", body)
        for _, _, doc in batch:
            await self._let_go(doc, wait=False)

    async def complete(self, delivery: Delivery, result: Any) -> bool:
        now = time.time()
        job_id = delivery.job.id
        ttl = self.options.result_ttl

        def finish(d: Doc) -> bool:
            if d["state"] != "running":
                return False
            d.update(state="succeeded", result=result, finished_at=now, expires_at=now + ttl,
                     lease_owner=None, lease_until=None, finish_no=int(d["finish_no"]) + 1)
            if d["webhook_url"]:
                d["webhook_status"] = "pending"
            return True

        after, won = await self._change(job_id, finish, self._held.pop(job_id, None))
        if after is not None and after[0]["state"] != "queued":
            await self._after_finish(after[0], wait=False)
        return won

    async def fail(
        self, delivery: Delivery, error: str, *, retry_in: float = 0.0, permanent: bool = False
    ) -> JobState:
        now = time.time()
        job_id = delivery.job.id
        opts = self.options

        def failed(d: Doc) -> bool:
            if d["state"] != "running" or d["lease_owner"] != delivery.worker_id:
                return False
            attempts = int(d["attempts"])
            if permanent or attempts >= int(d["max_attempts"]):
                _to_dead(d, error, now)
                return True
            delay = max(retry_in, backoff_delay(attempts, base=opts.backoff_base,
                                                cap=opts.backoff_cap))
            d.update(state="queued", run_after=now + delay, lease_owner=None, lease_until=None,
                     last_error=error, errors=[*d["errors"], error])
            return True

        after, won = await self._change(job_id, failed, self._held.pop(job_id, None))
        if after is None:
            raise JobNotFound(job_id)
        doc = after[0]
        if not won:
            return doc["state"]  # type: ignore[no-any-return]  # a stale delivery
        if doc["state"] == "dead":
            await self._after_finish(doc)
            return "dead"
        # waits in the delay lane until the backoff ends; only then is the timer let go
        # (killed in between: the timer comes due, finds the job queued and starts it)
        await self._publish_delayed(doc)
        await self._let_go(doc)
        self._bump_depth(1)
        return "queued"

    async def release(self, delivery: Delivery) -> None:
        now = time.time()
        job_id = delivery.job.id

        def back(d: Doc) -> bool:
            if d["state"] != "running" or d["lease_owner"] != delivery.worker_id:
                return False
            d.update(state="queued", attempts=int(d["attempts"]) - 1, run_after=now,
                     lease_owner=None, lease_until=None)
            return True

        after, won = await self._change(job_id, back, self._held.pop(job_id, None))
        if won and after is not None:
            # the same subject: the new message replaces the timer (one step, nothing lost)
            await self._publish_ready(after[0], after[1])
            if after[0].get("run_msg"):
                await self._delete_watcher(int(after[0]["run_msg"]))
            self._bump_depth(1)

    async def park(self, delivery: Delivery, note: Any) -> bool:
        job_id = delivery.job.id

        def parked(d: Doc) -> bool:
            if d["state"] != "running" or d["lease_owner"] != delivery.worker_id:
                return False
            d.update(state="awaiting_review", result=note, lease_owner=None, lease_until=None)
            return True

        after, won = await self._change(job_id, parked, self._held.pop(job_id, None))
        if won and after is not None:
            await self._after_finish(after[0])
        return won

    async def finish_review(self, job_id: str, result: Any, error: str | None) -> Job | None:
        now = time.time()
        ttl = self.options.result_ttl

        def decided(d: Doc) -> bool:
            if d["state"] != "awaiting_review":
                return False
            if error is None:
                d.update(state="succeeded", result=result, finished_at=now, expires_at=now + ttl,
                         finish_no=int(d["finish_no"]) + 1)
            else:
                _to_dead(d, error, now)
            if d["webhook_url"]:
                d["webhook_status"] = "pending"
            return True

        after, won = await self._change(job_id, decided)
        if not won or after is None:
            return None
        await self._after_finish(after[0])
        return await self.get(job_id)

    async def cancel(self, job_id: str) -> Job:
        now = time.time()
        ttl = self.options.result_ttl
        was = ""

        def cancelled(d: Doc) -> bool:
            nonlocal was
            if d["state"] not in ("queued", "running"):
                return False
            was = d["state"]
            d.update(state="cancelled", finished_at=now, expires_at=now + ttl, lease_owner=None,
                     lease_until=None, finish_no=int(d["finish_no"]) + 1)
            if d["webhook_url"]:
                d["webhook_status"] = "pending"
            return True

        after, won = await self._change(job_id, cancelled, await self._load_or_write(job_id))
        if after is None:
            raise JobNotFound(job_id)
        doc = after[0]
        if won:
            if was == "queued":
                await self._purge(self.s_queue, self._ready_subject(doc))
                await self._purge(self.s_queue, self._wait_subject(job_id))
                await self._purge(self.s_queue, self._delay_subject(job_id))
                self._depth_cache = None
            await self._after_finish(doc)
        return _job(doc)

    # ------------------------------------------------------------ dead letters

    async def dlq_list(self, limit: int = 100) -> list[Job]:
        ids = await self.conn.subject_ids(self.s_dead, f"{self.prefix}.d")
        docs = [c[0] for c in await asyncio.gather(*(self._load(i) for i in ids)) if c]
        dead = [d for d in docs if d["state"] == "dead"]
        dead.sort(key=lambda d: float(d["finished_at"] or 0), reverse=True)
        return [_job(d) for d in dead[:limit]]

    async def dlq_retry(self, job_id: str) -> Job:
        now = time.time()

        def again(d: Doc) -> bool:
            if d["state"] != "dead":
                return False
            d.update(state="queued", attempts=0, run_after=now, finished_at=None)
            return True

        after, won = await self._change(job_id, again)
        if after is None:
            raise JobNotFound(job_id)
        doc = after[0]
        if won:
            await self._purge(self.s_dead, f"{self.prefix}.d.{job_id}")
            if doc["partition_key"]:
                await self._join_partition(doc, after[1])
            else:
                await self._publish_ready(doc, after[1], if_empty=True)
            self._bump_depth(1)
        return _job(doc)

    async def _forget_one(self, doc: Doc) -> None:
        """Erase a job for good (its record and idempotency key, no tombstones left)."""
        if doc["idempotency_key"]:
            await self.cas.erase(self.js, self.bucket, f"i.{_h(doc['idempotency_key'])}")
        await self.cas.erase(self.js, self.bucket, f"j.{doc['id']}")

    async def dlq_purge(self, job_id: str | None = None) -> int:
        ids = [job_id] if job_id else await self.conn.subject_ids(self.s_dead, f"{self.prefix}.d")
        n = 0
        for i in ids:
            cur = await self._load(i)
            if cur is not None and cur[0]["state"] == "dead":
                await self._forget_one(cur[0])
                n += 1
            if cur is not None or job_id is None:
                await self._purge(self.s_dead, f"{self.prefix}.d.{i}")
        return n

    # ------------------------------------------------------------ housekeeping

    async def _due(self, stream: str, cutoff: float, limit: int = 1000) -> list[tuple[int, Doc]]:
        """(sequence, ``{id, at}``) of the first messages of an expiry-ordered stream whose
        ``at`` is before ``cutoff`` (read in order, not consumed: the caller deletes)."""
        info = await self.js.stream_info(stream)
        out: list[tuple[int, Doc]] = []
        seq = int(info.state.first_seq or 0)
        last = int(info.state.last_seq or 0)
        while seq and seq <= last and len(out) < limit:
            try:
                raw = await self.js.get_msg(stream, seq=seq)
            except APIError:  # a gap (replaced or deleted meanwhile)
                seq += 1
                continue
            body = orjson.loads(raw.data or b"{}")
            if float(body["at"]) >= cutoff:
                break
            out.append((seq, body))
            seq += 1
        return out

    async def _delete(self, stream: str, seq: int) -> None:
        await self.conn.delete(stream, seq)

    async def expire_results(self) -> int:
        now = time.time()
        n = 0
        for seq, body in await self._due(self.s_expiry, now + 1e-6):

            def expired(d: Doc) -> bool:
                if d["state"] not in ("succeeded", "cancelled"):
                    return False
                if d["expires_at"] is None or float(d["expires_at"]) > now:
                    return False
                d.update(state="expired", input=None, result=None)
                return True

            for job_id in body.get("ids") or [body["id"]]:  # a batch entry, or one job's
                after, won = await self._change(job_id, expired)
                if won and after is not None:
                    n += 1
                    gone = orjson.dumps({"id": job_id, "at": after[0]["expires_at"]})
                    await self.js.publish(f"{self.prefix}.g.{job_id}", gone)
            await self._delete(self.s_expiry, seq)
        return n

    async def forget(self, before: float) -> int:
        n = 0
        for seq, body in await self._due(self.s_gone, before):
            cur = await self._load(body["id"])
            if cur is not None and cur[0]["state"] == "expired":
                await self._forget_one(cur[0])
                n += 1
            await self._delete(self.s_gone, seq)
        return n

    async def set_webhook_status(self, job_id: str, status: str) -> None:
        def mark(d: Doc) -> bool:
            d["webhook_status"] = status
            return True

        await self._change(job_id, mark)

    # ------------------------------------------------------------ webhook outbox

    @property
    def outbox(self) -> NatsOutbox:
        if self._outbox is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._outbox

    async def webhooks_due(
        self, owner: str, *, limit: int = 10, lease: float = 30.0
    ) -> list[WebhookDelivery]:
        return await self.outbox.due(limit=limit, lease=lease)

    async def webhook_settle(
        self,
        delivery: WebhookDelivery,
        outcome: WebhookOutcome,
        status: str,
        *,
        retry_at: float = 0.0,
        error: str | None = None,
    ) -> None:
        await self.outbox.settle(delivery, outcome, status, retry_at=retry_at, error=error)

    async def webhook_dlq_list(self, limit: int = 100) -> list[WebhookDelivery]:
        return await self.outbox.dlq_list(limit)

    async def webhook_dlq_retry(self, delivery_id: str) -> WebhookDelivery:
        return await self.outbox.dlq_retry(delivery_id)

    async def stats(self) -> QueueStats:
        nc = self._nc
        if nc is not None:
            await self._flush_pending()
            await nc.flush()  # our acks before the counts
            await self._acks_done()
        # every JetStream API call costs the server ~150 us: as few as possible here
        q, d, cons, legacy = await asyncio.gather(
            self.js.stream_info(self.s_queue),
            self.js.stream_info(self.s_dead),
            self._running(),
            self._legacy_watchers(),
        )
        running = sum(int(c.num_ack_pending) for c in cons)
        depth = max(0, int(q.state.messages) - running)
        age = 0.0
        if depth:
            p = self.prefix
            # the oldest waiting job: the first undelivered message of each ready consumer;
            # if there are more waiting messages than those, also the first one waiting
            # behind its partition and the first one in the delay lane
            first = int(q.state.first_seq or 0)
            firsts = [(int(c.delivered.stream_seq or 0) + 1, str(c.config.filter_subject))
                      for c in cons if c.num_pending]
            if depth > sum(int(c.num_pending) for c in cons):
                firsts += [(first, f"{p}.w.*"), (first, f"{p}.t.*")]
            oldest = await asyncio.gather(*(self._first_created(seq, subj) for seq, subj in firsts))
            if any(c is not None for c in oldest):
                age = max(0.0, time.time() - min(c for c in oldest if c is not None))
        return QueueStats(
            depth=depth, oldest_age=age, in_flight=running + legacy,
            dlq=int(d.state.messages),
        )

    async def _legacy_watchers(self) -> int:
        """Watchers in ``P_R`` of jobs started by a version before the ready message became
        the timer; looked at until this client once sees none (this version writes none)."""
        if self._legacy_gone:
            return 0
        n = int((await self.js.stream_info(self.s_run)).state.messages)
        self._legacy_gone = n == 0
        return n

    async def _first_created(self, seq: int, subject: str) -> float | None:
        """``created_at`` of the first job message on ``subject`` from sequence ``seq``."""
        try:
            first = await self.js.get_msg(self.s_queue, seq=max(1, seq), subject=subject,
                                          next=True)
        except APIError:  # none (404)
            return None
        return float(orjson.loads(first.data or b"{}")["c"])


def _to_dead(d: Doc, error: str, now: float) -> None:
    d.update(state="dead", last_error=error, errors=[*d["errors"], error], finished_at=now,
             lease_owner=None, lease_until=None, finish_no=int(d["finish_no"]) + 1)
    if d["webhook_url"]:
        d["webhook_status"] = "pending"
