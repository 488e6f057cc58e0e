"""Redis Streams job queue: consumer group delivery, job state in hashes.

Layout under ``<prefix>:`` (URL ``redis://host:6379/0?prefix=name``):

* ``job:<id>`` hash: the job record (state, attempts, result, errors, ...) and
  ``msg``, the id of the one stream entry that currently stands for the job;
* ``stream`` + group ``workers``: entries ``{id: <job id>}`` ready to run;
* ``delayed`` zset (score = run_after): retries waiting for their backoff;
* ``part:<key>`` list: the active jobs of one partition in submission order.
  Only the head of the list is ever in the stream, so a partition runs one job
  at a time, in order; finishing/dead-lettering/cancelling the head schedules
  the next one;
* ``queued`` / ``running`` / ``dead`` / ``expiry`` zsets for depth, oldest
  age, in-flight (score = lease deadline), the DLQ and result expiry;
* ``idem:<key>`` -> job id.

Every state change is one Lua script, so the hash, the zsets and the stream
acknowledgement move together. The stream only carries "run this id now";
whether to run is decided from the hash when a worker starts a delivery:
an entry whose job already finished, or that is not the job's current entry
(a duplicate or stale redelivery), is acknowledged and skipped — that is the
exactly-once effect. Lease expiry is tracked in the ``running`` zset (a
worker's heartbeat moves the deadline and re-claims the entry to reset its
idle time); expired leases are re-claimed with ``XCLAIM``, and entries left
pending by a consumer that died before starting them are picked up with
``XAUTOCLAIM`` once idle longer than the lease. Priority: jobs of priority 0 use
``stream``, every other priority its own ``stream:<priority>`` (registered in the ``bands``
zset, created with its group on first use); a claim reads the bands highest first, so a
higher-priority job always starts before a lower one that waits (FIFO within a band).
Keys are built inside scripts, so this targets a single Redis (not
Redis Cluster).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis

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
from lockgate.jobs.queue import QueueOptions, split_url_options

__all__ = ["RedisQueue"]

GROUP = "workers"
BANDS_REFRESH = 1.0
"""Seconds between re-reads of the priority bands in use."""
HOUSEKEEPING_INTERVAL = 0.1
"""Seconds between promote/reclaim sweeps of one queue client (every claim is too often)."""

_LIB = r"""
local P = ARGV[1]
local function jk(id) return P .. ':job:' .. id end
local function skey(id)
  local pr = tonumber(redis.call('HGET', jk(id), 'priority') or '0') or 0
  if pr == 0 then return P .. ':stream' end
  local key = P .. ':stream:' .. pr
  if redis.call('ZADD', P .. ':bands', 'NX', pr, key) == 1 then
    redis.pcall('XGROUP', 'CREATE', key, 'workers', '0', 'MKSTREAM')
  end
  return key
end
local function schedule(id, now)
  local k = jk(id)
  local ra = tonumber(redis.call('HGET', k, 'run_after') or '0')
  if ra > now then
    redis.call('ZADD', P .. ':delayed', ra, id)
    redis.call('HSET', k, 'msg', '')
  else
    local msg = redis.call('XADD', skey(id), '*', 'id', id)
    redis.call('HSET', k, 'msg', msg)
  end
end
local function advance(id, now)
  local pk = redis.call('HGET', jk(id), 'partition_key')
  if pk and pk ~= '' then
    local lk = P .. ':part:' .. pk
    local was_head = redis.call('LINDEX', lk, 0) == id
    redis.call('LREM', lk, 1, id)
    if was_head then
      local nxt = redis.call('LINDEX', lk, 0)
      if nxt then schedule(nxt, now) end
    end
  end
end
local function ack(id, msg)
  if msg and msg ~= '' then redis.call('XACK', skey(id), 'workers', msg) end
end
local function push_error(k, err)
  local errs = cjson.decode(redis.call('HGET', k, 'errors') or '[]')
  errs[#errs + 1] = err
  redis.call('HSET', k, 'errors', cjson.encode(errs), 'last_error', err)
end
local function outbox_add(id, event, now)
  local k = jk(id)
  local url = redis.call('HGET', k, 'webhook_url')
  if not url or url == '' then return end
  local did = 'whd_' .. string.sub(id, 5) .. '_' .. redis.call('INCR', P .. ':whseq')
  redis.call('HSET', P .. ':wh:' .. did, 'id', did, 'job_id', id, 'event', event, 'url', url,
    'state', 'pending', 'attempts', 0, 'created_at', now)
  redis.call('ZADD', P .. ':outbox', now, did)
  redis.call('HSET', k, 'webhook_status', 'pending')
end
local function to_dead(id, err, now)
  local k = jk(id)
  push_error(k, err)
  redis.call('HSET', k, 'state', 'dead', 'finished_at', now)
  redis.call('HDEL', k, 'lease_owner', 'lease_until')
  redis.call('ZREM', P .. ':running', id)
  redis.call('ZREM', P .. ':queued', id)
  redis.call('ZREM', P .. ':delayed', id)
  redis.call('ZADD', P .. ':dead', now, id)
  advance(id, now)
  outbox_add(id, 'job.failed', now)
end
"""

# ARGV: prefix, now, id, idem, max_depth, partition_key, then HSET field/value pairs
_ENQUEUE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, idem, maxd, pk = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if idem ~= '' then
  local old = redis.call('GET', P .. ':idem:' .. idem)
  if old then return {0, old} end
end
local depth = redis.call('ZCARD', P .. ':queued')
if depth >= maxd then return {-1, tostring(depth)} end
if idem ~= '' then redis.call('SET', P .. ':idem:' .. idem, id) end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local k = jk(id)
redis.call('HSET', k, unpack(fields))
redis.call('HSET', k, 'seq', redis.call('INCR', P .. ':seq'))
redis.call('ZADD', P .. ':queued', now, id)
if pk ~= '' then
  local n = redis.call('RPUSH', P .. ':part:' .. pk, id)
  if n == 1 then schedule(id, now) end
else
  schedule(id, now)
end
return {1, id}
"""
)

# ARGV: prefix, now  -> moves due delayed jobs into the stream
_PROMOTE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 500)
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':delayed', id)
  if redis.call('HGET', jk(id), 'state') == 'queued' then
    local msg = redis.call('XADD', skey(id), '*', 'id', id)
    redis.call('HSET', jk(id), 'msg', msg)
  end
end
return #ids
"""
)

# ARGV: prefix, now, id, msg, worker, lease_until, stream -> job fields or false
_START = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, msg, worker, lu = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local k = jk(id)
local state = redis.call('HGET', k, 'state')
if not state then redis.call('XACK', ARGV[7], 'workers', msg) return false end
if redis.call('HGET', k, 'msg') ~= msg then ack(id, msg) return false end
if state == 'running' then
  if tonumber(redis.call('HGET', k, 'lease_until') or '0') > now then return false end
  local attempts = tonumber(redis.call('HGET', k, 'attempts'))
  if attempts >= tonumber(redis.call('HGET', k, 'max_attempts')) then
    to_dead(id, 'lease expired on attempt ' .. attempts .. ' (worker lost)', now)
    ack(id, msg)
    return false
  end
elseif state ~= 'queued' then
  ack(id, msg)
  return false
end
redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'state', 'running', 'lease_owner', worker, 'lease_until', lu)
redis.call('ZREM', P .. ':queued', id)
redis.call('ZADD', P .. ':running', lu, id)
return redis.call('HGETALL', k)
"""
)

# ARGV: prefix, now, limit -> {id, msg, stream, ...} of expired leases (dead-letters the
# used-up ones)
_EXPIRED = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local k = jk(id)
  local attempts = tonumber(redis.call('HGET', k, 'attempts') or '0')
  local msg = redis.call('HGET', k, 'msg') or ''
  if attempts >= tonumber(redis.call('HGET', k, 'max_attempts') or '1') then
    to_dead(id, 'lease expired on attempt ' .. attempts .. ' (worker lost)', now)
    ack(id, msg)
  elseif msg ~= '' then
    out[#out + 1] = id
    out[#out + 1] = msg
    out[#out + 1] = skey(id)
  end
end
return out
"""
)

# ARGV: prefix, now, id, worker, lease_until -> 1 if still held
_HEARTBEAT = (
    _LIB
    + r"""
local k = jk(ARGV[3])
if redis.call('HGET', k, 'state') ~= 'running' or redis.call('HGET', k, 'lease_owner') ~= ARGV[4]
then return 0 end
redis.call('HSET', k, 'lease_until', ARGV[5])
redis.call('ZADD', P .. ':running', ARGV[5], ARGV[3])
return 1
"""
)

# ARGV: prefix, now, id, msg, result, expires_at -> 1 stored, 0 already finished
_COMPLETE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, msg = ARGV[3], ARGV[4]
local k = jk(id)
if redis.call('HGET', k, 'state') ~= 'running' then ack(id, msg) return 0 end
redis.call('HSET', k, 'state', 'succeeded', 'result', ARGV[5], 'finished_at', now,
  'expires_at', ARGV[6])
redis.call('HDEL', k, 'lease_owner', 'lease_until')
redis.call('ZREM', P .. ':running', id)
redis.call('ZADD', P .. ':expiry', ARGV[6], id)
ack(id, msg)
ack(id, redis.call('HGET', k, 'msg'))
advance(id, now)
outbox_add(id, 'job.completed', now)
return 1
"""
)

# ARGV: prefix, now, id, msg, worker, error, delay, permanent -> new state
_FAIL = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, msg, worker, err = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = jk(id)
local state = redis.call('HGET', k, 'state')
if not state then return 'missing' end
if state ~= 'running' or redis.call('HGET', k, 'lease_owner') ~= worker then return state end
ack(id, msg)
ack(id, redis.call('HGET', k, 'msg'))
local attempts = tonumber(redis.call('HGET', k, 'attempts'))
if ARGV[8] == '1' or attempts >= tonumber(redis.call('HGET', k, 'max_attempts')) then
  to_dead(id, err, now)
  return 'dead'
end
push_error(k, err)
local ra = now + tonumber(ARGV[7])
redis.call('HSET', k, 'state', 'queued', 'run_after', ra, 'msg', '')
redis.call('HDEL', k, 'lease_owner', 'lease_until')
redis.call('ZREM', P .. ':running', id)
redis.call('ZADD', P .. ':queued', tonumber(redis.call('HGET', k, 'created_at')), id)
redis.call('ZADD', P .. ':delayed', ra, id)
return 'queued'
"""
)

# ARGV: prefix, now, id, msg, worker
_RELEASE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, msg, worker = ARGV[3], ARGV[4], ARGV[5]
local k = jk(id)
if redis.call('HGET', k, 'state') ~= 'running' or redis.call('HGET', k, 'lease_owner') ~= worker
then return 0 end
ack(id, msg)
ack(id, redis.call('HGET', k, 'msg'))
redis.call('HINCRBY', k, 'attempts', -1)
redis.call('HSET', k, 'state', 'queued', 'run_after', now)
redis.call('HDEL', k, 'lease_owner', 'lease_until')
redis.call('ZREM', P .. ':running', id)
redis.call('ZADD', P .. ':queued', tonumber(redis.call('HGET', k, 'created_at')), id)
schedule(id, now)
return 1
"""
)

# ARGV: prefix, now, id, msg, worker, note -> 1 parked, 0 stale delivery
_PARK = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id, msg, worker = ARGV[3], ARGV[4], ARGV[5]
local k = jk(id)
if redis.call('HGET', k, 'state') ~= 'running' or redis.call('HGET', k, 'lease_owner') ~= worker
then return 0 end
redis.call('HSET', k, 'state', 'awaiting_review', 'result', ARGV[6])
redis.call('HDEL', k, 'lease_owner', 'lease_until')
redis.call('ZREM', P .. ':running', id)
ack(id, msg)
ack(id, redis.call('HGET', k, 'msg'))
advance(id, now)
return 1
"""
)

# ARGV: prefix, now, id, error ('' = success), result, expires_at -> 1 finished, 0 not parked
_FINISH_REVIEW = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id = ARGV[3]
local k = jk(id)
if redis.call('HGET', k, 'state') ~= 'awaiting_review' then return 0 end
if ARGV[4] == '' then
  redis.call('HSET', k, 'state', 'succeeded', 'result', ARGV[5], 'finished_at', now,
    'expires_at', ARGV[6])
  redis.call('ZADD', P .. ':expiry', ARGV[6], id)
  outbox_add(id, 'job.completed', now)
else
  to_dead(id, ARGV[4], now)
end
return 1
"""
)

# ARGV: prefix, now, id, expires_at -> 1 cancelled, 0 not active, -1 missing
_CANCEL = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id = ARGV[3]
local k = jk(id)
local state = redis.call('HGET', k, 'state')
if not state then return -1 end
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', k, 'state', 'cancelled', 'finished_at', now, 'expires_at', ARGV[4])
redis.call('HDEL', k, 'lease_owner', 'lease_until')
redis.call('ZREM', P .. ':queued', id)
redis.call('ZREM', P .. ':running', id)
redis.call('ZREM', P .. ':delayed', id)
redis.call('ZADD', P .. ':expiry', ARGV[4], id)
if state == 'queued' then ack(id, redis.call('HGET', k, 'msg')) end
advance(id, now)
outbox_add(id, 'job.cancelled', now)
return 1
"""
)

# ARGV: prefix, now, id -> 1 requeued, 0 not dead, -1 missing
_DLQ_RETRY = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local id = ARGV[3]
local k = jk(id)
local state = redis.call('HGET', k, 'state')
if not state then return -1 end
if state ~= 'dead' then return 0 end
redis.call('HSET', k, 'state', 'queued', 'attempts', 0, 'run_after', now)
redis.call('HDEL', k, 'finished_at')
redis.call('ZREM', P .. ':dead', id)
redis.call('ZADD', P .. ':queued', tonumber(redis.call('HGET', k, 'created_at')), id)
local pk = redis.call('HGET', k, 'partition_key')
if pk and pk ~= '' then
  if redis.call('RPUSH', P .. ':part:' .. pk, id) == 1 then schedule(id, now) end
else
  schedule(id, now)
end
return 1
"""
)

# ARGV: prefix, now, id or '' -> number purged
_DLQ_PURGE = (
    _LIB
    + r"""
local ids
if ARGV[3] ~= '' then
  if redis.call('ZSCORE', P .. ':dead', ARGV[3]) then ids = {ARGV[3]} else ids = {} end
else
  ids = redis.call('ZRANGE', P .. ':dead', 0, -1)
end
for _, id in ipairs(ids) do
  local idem = redis.call('HGET', jk(id), 'idempotency_key')
  if idem and idem ~= '' then redis.call('DEL', P .. ':idem:' .. idem) end
  redis.call('DEL', jk(id))
  redis.call('ZREM', P .. ':dead', id)
end
return #ids
"""
)

# ARGV: prefix, now -> number expired
_EXPIRE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  local at = tonumber(redis.call('HGET', jk(id), 'expires_at') or now)
  redis.call('HSET', jk(id), 'state', 'expired', 'input', 'null')
  redis.call('HDEL', jk(id), 'result')
  redis.call('ZREM', P .. ':expiry', id)
  redis.call('ZADD', P .. ':gone', at, id)
end
return #ids
"""
)


# ARGV: prefix, now, limit, lease_until -> flat hashes of the outbox entries taken
_WH_DUE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. ':outbox', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, did in ipairs(ids) do
  local wk = P .. ':wh:' .. did
  if redis.call('HGET', wk, 'state') == 'pending' then
    redis.call('ZADD', P .. ':outbox', tonumber(ARGV[4]), did)
    redis.call('HINCRBY', wk, 'attempts', 1)
    out[#out + 1] = redis.call('HGETALL', wk)
  else
    redis.call('ZREM', P .. ':outbox', did)
  end
end
return out
"""
)

# ARGV: prefix, now, delivery id, state, retry_at, error, status -> 1 recorded
_WH_SETTLE = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local did, state = ARGV[3], ARGV[4]
local wk = P .. ':wh:' .. did
if redis.call('HGET', wk, 'state') ~= 'pending' then return 0 end
redis.call('HSET', wk, 'state', state, 'last_error', ARGV[6], 'updated_at', now)
if state == 'pending' then
  redis.call('ZADD', P .. ':outbox', tonumber(ARGV[5]), did)
else
  redis.call('ZREM', P .. ':outbox', did)
  if state == 'dead' then
    redis.call('ZADD', P .. ':whdead', now, did)
  else
    redis.call('EXPIRE', wk, 7 * 24 * 3600)
  end
end
local k = jk(redis.call('HGET', wk, 'job_id'))
if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'webhook_status', ARGV[7]) end
return 1
"""
)

# ARGV: prefix, now, delivery id -> flat hash, or false when not dead-lettered
_WH_RETRY = (
    _LIB
    + r"""
local now = tonumber(ARGV[2])
local did = ARGV[3]
local wk = P .. ':wh:' .. did
if redis.call('HGET', wk, 'state') ~= 'dead' then return false end
redis.call('HSET', wk, 'state', 'pending', 'attempts', 0)
redis.call('ZREM', P .. ':whdead', did)
redis.call('ZADD', P .. ':outbox', now, did)
local k = jk(redis.call('HGET', wk, 'job_id'))
if redis.call('EXISTS', k) == 1 then redis.call('HSET', k, 'webhook_status', 'pending') end
return redis.call('HGETALL', wk)
"""
)

# ARGV: prefix, now, before -> number forgotten
_FORGET = (
    _LIB
    + r"""
local ids = redis.call('ZRANGEBYSCORE', P .. ':gone', '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  local idem = redis.call('HGET', jk(id), 'idempotency_key')
  if idem and idem ~= '' then redis.call('DEL', P .. ':idem:' .. idem) end
  redis.call('DEL', jk(id))
  redis.call('ZREM', P .. ':gone', id)
end
return #ids
"""
)


def _num(value: str | None) -> float | None:
    return None if value is None or value == "" else float(value)


def _hash_to_job(h: dict[str, str]) -> Job:
    return Job(
        id=h["id"],
        task=h["task"],
        input=orjson.loads(h.get("input") or "null"),
        state=h["state"],  # type: ignore[arg-type]
        attempts=int(h.get("attempts") or 0),
        max_attempts=int(h.get("max_attempts") or 1),
        created_at=float(h["created_at"]),
        idempotency_key=h.get("idempotency_key") or None,
        partition_key=h.get("partition_key") or None,
        priority=int(h.get("priority") or 0),
        run_after=float(h.get("run_after") or 0),
        lease_owner=h.get("lease_owner") or None,
        lease_until=_num(h.get("lease_until")),
        result=orjson.loads(h["result"]) if h.get("result") else None,
        last_error=h.get("last_error") or None,
        errors=list(orjson.loads(h.get("errors") or "[]")),
        finished_at=_num(h.get("finished_at")),
        expires_at=_num(h.get("expires_at")),
        webhook_url=h.get("webhook_url") or None,
        webhook_status=h.get("webhook_status") or None,
        meta=dict(orjson.loads(h.get("meta") or "{}")),
    )


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _hash_to_delivery(h: dict[str, str]) -> WebhookDelivery:
    return WebhookDelivery(
        id=h["id"],
        job_id=h["job_id"],
        event=h["event"],
        url=h["url"],
        attempts=int(h.get("attempts") or 0),
        state=h.get("state", "pending"),
        last_error=h.get("last_error") or None,
        created_at=float(h.get("created_at") or 0),
    )


class RedisQueue:
    """A :class:`~lockgate.jobs.queue.JobQueue` on Redis Streams."""

    def __init__(self, url: str, options: QueueOptions) -> None:
        base, params = split_url_options(url)
        self.url = url
        self.options = options
        self.prefix = params.get("prefix", "lockgate:jobs")
        self._base = base
        self._r: aioredis.Redis | None = None
        self._stream = f"{self.prefix}:stream"
        self._last_housekeeping = 0.0
        self._bands: list[str] = [self._stream]
        self._bands_at = 0.0

    @property
    def r(self) -> aioredis.Redis:
        if self._r is None:
            raise RuntimeError("queue is not open: await queue.open() first")
        return self._r

    async def open(self) -> None:
        if self._r is not None:
            return
        self._r = aioredis.Redis.from_url(self._base, decode_responses=True)
        try:
            await self._r.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._scripts = {
            name: self._r.register_script(src)
            for name, src in {
                "enqueue": _ENQUEUE,
                "promote": _PROMOTE,
                "start": _START,
                "expired": _EXPIRED,
                "heartbeat": _HEARTBEAT,
                "complete": _COMPLETE,
                "fail": _FAIL,
                "release": _RELEASE,
                "cancel": _CANCEL,
                "park": _PARK,
                "finish_review": _FINISH_REVIEW,
                "dlq_retry": _DLQ_RETRY,
                "dlq_purge": _DLQ_PURGE,
                "expire": _EXPIRE,
                "forget": _FORGET,
                "wh_due": _WH_DUE,
                "wh_settle": _WH_SETTLE,
                "wh_retry": _WH_RETRY,
            }.items()
        }

    async def aclose(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def drop(self) -> None:
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await self.r.delete(*keys[i : i + 500])

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=[self.prefix, time.time(), *args])

    # ------------------------------------------------------------ enqueue / read

    async def enqueue(self, new: NewJob) -> EnqueueResult:
        now = time.time()
        job_id = new_job_id()
        fields: dict[str, Any] = {
            "id": job_id,
            "task": new.task,
            "input": orjson.dumps(new.input).decode(),
            "idempotency_key": new.idempotency_key or "",
            "partition_key": new.partition_key or "",
            "priority": int(new.priority),
            "state": "queued",
            "attempts": 0,
            "max_attempts": int(new.max_attempts),
            "run_after": float(new.run_after if new.run_after is not None else now),
            "errors": "[]",
            "created_at": now,
            "webhook_url": new.webhook_url or "",
            "webhook_status": "waiting" if new.webhook_url else "",
            "meta": orjson.dumps(new.meta).decode(),
            "msg": "",
        }
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        if new.priority and self._stream_for(new.priority) not in self._bands:
            self._bands_at = 0.0  # a new band: claims from this client see it at once
        code, value = await self._run(
            "enqueue",
            job_id,
            new.idempotency_key or "",
            self.options.max_depth,
            new.partition_key or "",
            *flat,
        )
        if int(code) == -1:
            raise QueueFull(int(value), self.options.max_depth, self.options.full_retry_after)
        if int(code) == 1:  # created: the record is what we just wrote
            return EnqueueResult(_hash_to_job({k: str(v) for k, v in fields.items()}), True)
        return EnqueueResult(await self._load(str(value)), created=False)

    async def _load(self, job_id: str) -> Job:
        h = await self.r.hgetall(f"{self.prefix}:job:{job_id}")
        if not h:
            raise JobNotFound(job_id)
        return _hash_to_job({str(k): str(v) for k, v in h.items()})

    async def get(self, job_id: str) -> Job:
        job = await self._load(job_id)
        if job.state == "expired" or (job.expires_at is not None and job.expires_at <= time.time()):
            raise JobGone(job_id)
        return job

    # ------------------------------------------------------------ claim / lease

    def _stream_for(self, priority: int) -> str:
        """Priority 0 keeps the original stream; other priorities get one stream each."""
        return self._stream if priority == 0 else f"{self._stream}:{priority}"

    async def _streams(self) -> list[str]:
        """Every band's stream, highest priority first (re-read once a second: other
        producers add bands)."""
        now = time.monotonic()
        if now - self._bands_at >= BANDS_REFRESH:
            bands: Any = await self.r.zrange(f"{self.prefix}:bands", 0, -1, withscores=True)
            order = [(float(b[1]), str(b[0])) for b in bands] + [(0.0, self._stream)]
            self._bands = [key for _, key in sorted(order, key=lambda b: -b[0])]
            self._bands_at = now
        return self._bands

    async def _start_many(
        self, entries: list[tuple[str, str, str]], worker_id: str, until: float
    ) -> list[Delivery]:
        """Run the start script for many (stream, msg, job id) entries in one round trip."""
        if not entries:
            return []
        now = time.time()
        script = self._scripts["start"]
        async with self.r.pipeline(transaction=False) as pipe:
            for stream, msg, job_id in entries:
                await script(
                    keys=[],
                    args=[self.prefix, now, job_id, msg, worker_id, until, stream],
                    client=pipe,
                )
            results = await pipe.execute()
        return [
            Delivery(_hash_to_job(_pairs(flat)), worker_id, until, token=msg)
            for (_, msg, _), flat in zip(entries, results, strict=True)
            if flat
        ]

    async def _housekeeping(
        self, worker_id: str, limit: int, lease: float
    ) -> list[tuple[str, str, str]]:
        """Due retries into the streams; expired leases and orphaned entries to re-run."""
        now = time.monotonic()
        if now - self._last_housekeeping < HOUSEKEEPING_INTERVAL:
            return []
        self._last_housekeeping = now
        await self._run("promote")
        entries: list[tuple[str, str, str]] = []
        # 1. leases that expired (authoritative deadline: the ``running`` zset)
        expired = await self._run("expired", limit)
        for i in range(0, len(expired), 3):
            job_id, msg, stream = str(expired[i]), str(expired[i + 1]), str(expired[i + 2])
            await self.r.xclaim(stream, GROUP, worker_id, 0, [msg], justid=True)
            entries.append((stream, msg, job_id))
        # 2. entries left pending by a consumer that vanished before starting them
        for stream in await self._streams():
            if len(entries) >= limit:
                break
            res = await self.r.xautoclaim(
                stream,
                GROUP,
                worker_id,
                int(lease * 1000),
                "0-0",
                count=limit - len(entries),
            )
            entries.extend((stream, msg, f["id"]) for msg, f in res[1] if f and "id" in f)
        return entries

    async def claim(self, worker_id: str, *, limit: int = 1, lease: float = 30.0) -> list[Delivery]:
        until = time.time() + lease
        out = await self._start_many(
            await self._housekeeping(worker_id, limit, lease), worker_id, until
        )
        # 3. new entries, highest priority band first
        for stream in await self._streams():
            while len(out) < limit:
                need = limit - len(out)
                fresh: Any = await self.r.xreadgroup(GROUP, worker_id, {stream: ">"}, count=need)
                entries = [
                    (stream, msg, fields.get("id", ""))
                    for _s, batch in fresh or []
                    for msg, fields in batch
                ]
                out += await self._start_many(entries, worker_id, until)
                if len(entries) < need:
                    break
            if len(out) >= limit:
                break
        return out

    async def heartbeat(self, delivery: Delivery, lease: float) -> bool:
        until = time.time() + lease
        ok = await self._run("heartbeat", delivery.job.id, delivery.worker_id, until)
        if int(ok):
            delivery.lease_until = until
            await self.r.xclaim(
                self._stream_for(delivery.job.priority), GROUP, delivery.worker_id, 0,
                [delivery.token], justid=True,
            )
        return bool(int(ok))

    async def complete(self, delivery: Delivery, result: Any) -> bool:
        stored = await self._run(
            "complete",
            delivery.job.id,
            delivery.token,
            orjson.dumps(result).decode(),
            time.time() + self.options.result_ttl,
        )
        return bool(int(stored))

    async def fail(
        self, delivery: Delivery, error: str, *, retry_in: float = 0.0, permanent: bool = False
    ) -> JobState:
        delay = max(
            retry_in,
            backoff_delay(
                max(1, delivery.job.attempts),
                base=self.options.backoff_base,
                cap=self.options.backoff_cap,
            ),
        )
        state = await self._run(
            "fail",
            delivery.job.id,
            delivery.token,
            delivery.worker_id,
            error,
            delay,
            "1" if permanent else "0",
        )
        if state == "missing":
            raise JobNotFound(delivery.job.id)
        return str(state)  # type: ignore[return-value]

    async def park(self, delivery: Delivery, note: Any) -> bool:
        done = await self._run("park", delivery.job.id, delivery.token, delivery.worker_id,
                               orjson.dumps(note).decode())
        return bool(int(done))

    async def finish_review(self, job_id: str, result: Any, error: str | None) -> Job | None:
        done = await self._run(
            "finish_review", job_id, error or "", orjson.dumps(result).decode(),
            time.time() + self.options.result_ttl,
        )
        return await self.get(job_id) if int(done) else None

    async def release(self, delivery: Delivery) -> None:
        await self._run("release", delivery.job.id, delivery.token, delivery.worker_id)

    async def cancel(self, job_id: str) -> Job:
        code = await self._run("cancel", job_id, time.time() + self.options.result_ttl)
        if int(code) == -1:
            raise JobNotFound(job_id)
        return await self._load(job_id)

    # ------------------------------------------------------------ dead letters

    async def dlq_list(self, limit: int = 100) -> list[Job]:
        ids = await self.r.zrevrange(f"{self.prefix}:dead", 0, max(0, limit - 1))
        return [await self._load(str(i)) for i in ids]

    async def dlq_retry(self, job_id: str) -> Job:
        code = await self._run("dlq_retry", job_id)
        if int(code) == -1:
            raise JobNotFound(job_id)
        return await self._load(job_id)

    async def dlq_purge(self, job_id: str | None = None) -> int:
        return int(await self._run("dlq_purge", job_id or ""))

    # ------------------------------------------------------------ housekeeping

    async def expire_results(self) -> int:
        return int(await self._run("expire"))

    async def forget(self, before: float) -> int:
        return int(await self._run("forget", before))

    async def set_webhook_status(self, job_id: str, status: str) -> None:
        await self.r.hset(f"{self.prefix}:job:{job_id}", "webhook_status", status)

    # ------------------------------------------------------------ webhook outbox

    async def webhooks_due(
        self, owner: str, *, limit: int = 10, lease: float = 30.0
    ) -> list[WebhookDelivery]:
        flat = await self._run("wh_due", int(limit), time.time() + lease)
        return [_hash_to_delivery(_pairs(h)) for h in flat or []]

    async def webhook_settle(
        self,
        delivery: WebhookDelivery,
        outcome: WebhookOutcome,
        status: str,
        *,
        retry_at: float = 0.0,
        error: str | None = None,
    ) -> None:
        state = "pending" if outcome == "retry" else outcome
        await self._run("wh_settle", delivery.id, state, retry_at, error or "", status)

    async def webhook_dlq_list(self, limit: int = 100) -> list[WebhookDelivery]:
        ids = await self.r.zrevrange(f"{self.prefix}:whdead", 0, max(0, limit - 1))
        out = []
        for did in ids:
            h = await self.r.hgetall(f"{self.prefix}:wh:{did!s}")
            if h:
                out.append(_hash_to_delivery({str(k): str(v) for k, v in h.items()}))
        return out

    async def webhook_dlq_retry(self, delivery_id: str) -> WebhookDelivery:
        flat = await self._run("wh_retry", delivery_id)
        if not flat:
            raise JobNotFound(delivery_id)
        return _hash_to_delivery(_pairs(flat))

    async def stats(self) -> QueueStats:
        p = self.prefix
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(f"{p}:queued")
            pipe.zrange(f"{p}:queued", 0, 0, withscores=True)
            pipe.zcard(f"{p}:running")
            pipe.zcard(f"{p}:dead")
            depth, oldest, running, dead = await pipe.execute()
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(depth=int(depth), oldest_age=age, in_flight=int(running), dlq=int(dead))
