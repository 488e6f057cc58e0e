"""Lua scripts run atomically inside Redis by :class:`~lockgate.state.redis_state.RedisState`.

Each script mirrors the Python logic of :mod:`lockgate.state.memory` (GCRA in
:mod:`lockgate.state.gcra`); the same tests run against both backends.
Arguments travel as one comma-joined string (``ARGV[1]``) and replies come back
as one, which keeps packing and parsing cheap on the Python side; numbers are
written ``%.17g`` (Redis would truncate Lua floats in replies).
"""

from __future__ import annotations

__all__ = ["ADMIT", "BREAKER", "SETTLE", "USAGE"]

_COMMON = r"""
local EPS = 1e-6
local function fmt(x) return string.format('%.17g', x) end
local function num(v, default) if v then return tonumber(v) end return default end
-- all arguments travel as one comma-joined string (cheap to pack and parse)
local function split(s)
  local t = {}
  for v in string.gmatch(s .. ',', '([^,]*),') do t[#t + 1] = v end
  return t
end
local ARGV = split(ARGV[1])
-- and the reply goes back as one comma-joined string
local function pack(out)
  for i = 1, #out do
    if type(out[i]) == 'number' then out[i] = fmt(out[i]) end
  end
  return table.concat(out, ',')
end
"""

_PURGE = r"""
local function purge(h, x, now)
  local gone = redis.call('ZRANGEBYSCORE', x, '-inf', now, 'LIMIT', 0, 512)
  for _, id in ipairs(gone) do
    local amt = redis.call('HGET', h, 'a:' .. id)
    if amt then
      redis.call('HINCRBY', h, 'reserved', -tonumber(amt))
      redis.call('HDEL', h, 'a:' .. id)
    end
    redis.call('ZREM', x, id)
  end
end
"""

ADMIT = (
    _COMMON
    + _PURGE
    + r"""
-- KEYS: rate keys (nr), then per budget line: hash, holds zset; then version key (optional)
-- ARGV: now, nr, nb, reservation id, reservation expiry, has_version,
--       per rate: limit, period, cost; per budget: limit, amount, expire_at
local now = tonumber(ARGV[1])
local nr = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
local rid = ARGV[4]
local rexp = tonumber(ARGV[5])
local hasv = ARGV[6] == '1'
local denied = 0
local index = -1
local tats, newt, retry, lims, pers = {}, {}, {}, {}, {}
for i = 1, nr do
  local a = 6 + (i - 1) * 3
  local limit = tonumber(ARGV[a + 1])
  local period = tonumber(ARGV[a + 2])
  local cost = tonumber(ARGV[a + 3])
  lims[i] = limit
  pers[i] = period
  local tat = num(redis.call('GET', KEYS[i]), now)
  tats[i] = tat
  if limit <= 0 or cost > limit then
    newt[i] = tat
    retry[i] = -1
  else
    local nt = math.max(tat, now) + cost * (period / limit)
    local allow_at = nt - period
    if allow_at - now > EPS then
      newt[i] = tat
      retry[i] = allow_at - now
    else
      newt[i] = nt
      retry[i] = 0
    end
  end
  if retry[i] ~= 0 and denied == 0 then
    denied = 1
    index = i - 1
  end
end
local spent, reserved = {}, {}
local boff = 6 + nr * 3
for j = 1, nb do
  local h = KEYS[nr + (j - 1) * 2 + 1]
  local x = KEYS[nr + (j - 1) * 2 + 2]
  purge(h, x, now)
  local vals = redis.call('HMGET', h, 'spent', 'reserved')
  spent[j] = num(vals[1], 0)
  reserved[j] = num(vals[2], 0)
  if denied == 0 then
    local limit = tonumber(ARGV[boff + (j - 1) * 3 + 1])
    local amount = tonumber(ARGV[boff + (j - 1) * 3 + 2])
    if spent[j] + reserved[j] + amount > limit then
      denied = 2
      index = j - 1
    end
  end
end
if denied == 0 then
  for i = 1, nr do
    local ms = math.ceil((newt[i] - now) * 1000)
    if ms > 0 then
      redis.call('SET', KEYS[i], fmt(newt[i]), 'PX', ms + 1)
    end
  end
  for j = 1, nb do
    local h = KEYS[nr + (j - 1) * 2 + 1]
    local x = KEYS[nr + (j - 1) * 2 + 2]
    local amount = tonumber(ARGV[boff + (j - 1) * 3 + 2])
    local exp_at = ARGV[boff + (j - 1) * 3 + 3]
    local prev = redis.call('HGET', h, 'a:' .. rid)
    if prev then
      redis.call('HINCRBY', h, 'reserved', -tonumber(prev))
      reserved[j] = reserved[j] - tonumber(prev)
    end
    redis.call('HINCRBY', h, 'reserved', amount)
    reserved[j] = reserved[j] + amount
    redis.call('HSET', h, 'a:' .. rid, amount)
    redis.call('ZADD', x, rexp, rid)
    redis.call('EXPIREAT', h, exp_at)
    redis.call('EXPIREAT', x, exp_at)
  end
end
local ver = -1
if hasv then ver = num(redis.call('GET', KEYS[nr + nb * 2 + 1]), 0) end
local out = {denied == 0 and 1 or 0, denied, index, ver}
for i = 1, nr do
  local t = tats[i]
  if denied == 0 then t = newt[i] end
  local remaining = 0
  local used = math.max(0, t - now)
  if lims[i] > 0 then
    remaining = math.floor((pers[i] - used) / (pers[i] / lims[i]) + EPS)
    remaining = math.max(0, math.min(lims[i], remaining))
  else
    used = pers[i]
  end
  local r = retry[i]
  if denied ~= 1 then r = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = fmt(used)
  out[#out + 1] = fmt(r)
end
for j = 1, nb do
  out[#out + 1] = spent[j]
  out[#out + 1] = reserved[j]
end
return pack(out)
"""
)

SETTLE = (
    _COMMON
    + r"""
-- KEYS: per budget line: hash, holds zset; then rate keys
-- ARGV: now, reservation id, nb, nr, per budget: actual ('' = release), expire_at;
--       per rate: limit, period, delta
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local nb = tonumber(ARGV[3])
local nr = tonumber(ARGV[4])
for j = 1, nb do
  local h = KEYS[(j - 1) * 2 + 1]
  local x = KEYS[(j - 1) * 2 + 2]
  local actual = ARGV[4 + (j - 1) * 2 + 1]
  local exp_at = ARGV[4 + (j - 1) * 2 + 2]
  local prev = redis.call('HGET', h, 'a:' .. rid)
  if prev then
    redis.call('HINCRBY', h, 'reserved', -tonumber(prev))
    redis.call('HDEL', h, 'a:' .. rid)
  end
  redis.call('ZREM', x, rid)
  if actual ~= '' then
    redis.call('HINCRBY', h, 'spent', tonumber(actual))
    redis.call('EXPIREAT', h, exp_at)
  end
end
local roff = 4 + nb * 2
for i = 1, nr do
  local k = KEYS[nb * 2 + i]
  local limit = tonumber(ARGV[roff + (i - 1) * 3 + 1])
  local period = tonumber(ARGV[roff + (i - 1) * 3 + 2])
  local delta = tonumber(ARGV[roff + (i - 1) * 3 + 3])
  if limit > 0 then
    local interval = period / limit
    local tat = num(redis.call('GET', k), now)
    local nt
    if delta < 0 then
      if tat > now then nt = math.max(now, tat + delta * interval) else nt = tat end
    else
      nt = math.max(tat, now) + delta * interval
    end
    local ms = math.ceil((nt - now) * 1000)
    if ms > 0 then
      redis.call('SET', k, fmt(nt), 'PX', ms + 1)
    else
      redis.call('DEL', k)
    end
  end
end
return 1
"""
)

USAGE = (
    _COMMON
    + _PURGE
    + r"""
-- KEYS: hash, holds zset. ARGV: now
purge(KEYS[1], KEYS[2], tonumber(ARGV[1]))
local vals = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
return pack({num(vals[1], 0), num(vals[2], 0)})
"""
)

BREAKER = (
    _COMMON
    + r"""
-- KEYS: state hash, probe zset
-- ARGV: op, now, window, buckets, min_requests, failure_rate, open_seconds,
--       half_open_probes, half_open_successes, probe_ttl, half_open_retry, then op args:
--       acquire: probe id | record: ok ('1'/'0'), probe id ('' none) | cooldown: seconds
local h, p = KEYS[1], KEYS[2]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local nbk = tonumber(ARGV[4])
local minreq = tonumber(ARGV[5])
local rate = tonumber(ARGV[6])
local open_s = tonumber(ARGV[7])
local max_probes = tonumber(ARGV[8])
local need = tonumber(ARGV[9])
local probe_ttl = tonumber(ARGV[10])
local half_retry = tonumber(ARGV[11])
local cur = math.floor(now / (window / nbk))
local ttl = math.ceil((window + open_s + probe_ttl) * 1000) + 60000
local state = redis.call('HGET', h, 'st') or 'closed'
local untl = num(redis.call('HGET', h, 'until'), 0)

local function counts()
  local s, f = 0, 0
  local all = redis.call('HGETALL', h)
  for i = 1, #all, 2 do
    local name = all[i]
    local kind = string.sub(name, 1, 2)
    if kind == 's:' or kind == 'f:' then
      local idx = tonumber(string.sub(name, 3))
      if idx <= cur - nbk then
        redis.call('HDEL', h, name)
      elseif kind == 's:' then
        s = s + tonumber(all[i + 1])
      else
        f = f + tonumber(all[i + 1])
      end
    end
  end
  return s, f
end

local function reply(allowed, probe)
  local s, f = counts()
  local name = state
  local retry = 0
  local ou = 0
  if state == 'half' then
    name = 'half_open'
    if allowed == 0 then retry = half_retry end
  elseif state == 'open' then
    retry = math.max(0, untl - now)
    ou = untl
  end
  return pack({name, allowed, probe, ou, retry, s, f, redis.call('ZCARD', p)})
end

local function touch()
  redis.call('PEXPIRE', h, ttl)
  redis.call('PEXPIRE', p, ttl)
end

local function open_until(t)
  state = 'open'
  untl = t
  redis.call('DEL', h, p)
  redis.call('HSET', h, 'st', 'open', 'until', fmt(t))
  touch()
end

if op == 'acquire' then
  if state == 'closed' then return reply(1, 0) end
  if state == 'open' then
    if now < untl then return reply(0, 0) end
    state = 'half'
    redis.call('HSET', h, 'st', 'half', 'hs', 0)
    redis.call('DEL', p)
  end
  redis.call('ZREMRANGEBYSCORE', p, '-inf', now)
  if redis.call('ZCARD', p) < max_probes then
    redis.call('ZADD', p, now + probe_ttl, ARGV[12])
    touch()
    return reply(1, 1)
  end
  return reply(0, 0)
elseif op == 'record' then
  local ok = ARGV[12] == '1'
  local pid = ARGV[13]
  if pid ~= '' then redis.call('ZREM', p, pid) end
  if state == 'half' then
    if pid ~= '' then
      if ok then
        local hs = redis.call('HINCRBY', h, 'hs', 1)
        if hs >= need then
          redis.call('DEL', h, p)
          state = 'closed'
        end
      else
        open_until(now + open_s)
      end
    end
    return reply(1, 0)
  end
  if state == 'open' then return reply(1, 0) end
  local fld = 'f:' .. cur
  if ok then fld = 's:' .. cur end
  redis.call('HINCRBY', h, fld, 1)
  local s, f = counts()
  if s + f >= minreq and f >= rate * (s + f) then
    open_until(now + open_s)
  else
    touch()
  end
  return reply(1, 0)
elseif op == 'cooldown' then
  local t = now + tonumber(ARGV[12])
  if state == 'open' and untl > t then t = untl end
  open_until(t)
  return reply(1, 0)
end
return reply(1, 0)
"""
)
