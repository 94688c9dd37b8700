"""The shared store: counters in Redis, one Lua script per reserve and one per settle.

Each script checks and updates every scope and budget of a request in one atomic step on
the Redis server, with the server's clock, so several replicas share exact counters. Keys
(prefix `gw:`):

  <scope>:w  ZSET   lease -> admitted at (ms): the 60 s window (rpm = its size)
  <scope>:h  HASH   lease -> tokens, `_sum` -> tokens in the window (tpm)
  <scope>:c  ZSET   lease -> lease expiry (ms): open requests (max_concurrent)
  b:<counter>:s     spent nano-dollars in the budget window (seeded from SQL when missing)
  b:<counter>:r     HASH lease -> reserved nano-dollars, `_sum`
  b:<counter>:l     ZSET lease -> lease expiry (ms)
  lease:<id>        HASH `s` = r (reserved) | d (settled): makes both scripts idempotent

`carry` puts what a replica counted while Redis was away into these keys (see shared.py).

A lease that is neither settled nor renewed (its replica crashed) expires after the lease
TTL: its concurrency slot and reserved cost are freed by the next script that looks.
Not for Redis Cluster: a request's keys span hash slots (use one primary, or Sentinel).
"""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.limits.model import WINDOW_S, BudgetLimit, Decision, Reservation, Room
from gateway.limits.store import Carry

PREFIX = "gw:"
SETTLED_TAIL_MS = 60_000  # a settled lease's record stays this long (absorbs a retried settle)

# Shared helpers, prepended to each script.
_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function each_chunk(list, fn)
  local n = #list
  local i = 1
  while i <= n do
    local j = math.min(i + 999, n)
    fn({unpack(list, i, j)})
    i = j + 1
  end
end
-- drop members scored <= cutoff from zset z, and their amounts from hash h (and its _sum)
local function drop(z, h, cutoff)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #old == 0 then return end
  each_chunk(old, function(ids)
    local vals = redis.call('HMGET', h, unpack(ids))
    for k = 1, #ids do
      local v = vals[k]
      if v and v ~= '0' then redis.call('HINCRBY', h, '_sum', '-' .. v) end
    end
    redis.call('HDEL', h, unpack(ids))
    redis.call('ZREM', z, unpack(ids))
  end)
end
"""

# KEYS: lease, then (w, h, c) per scope, then (s, r, l) per budget
# ARGV: lease, tokens, cost, lease_ttl_ms, window_ms, nscopes, nbudgets,
#       then (rpm, tpm, maxc) per scope (-1 = none), then (limit, baseline, ttl_ms) per budget
# -> {allowed, reason, index, retry_ms, too_large, rq_limit, rq_left, rq_reset_ms,
#     tk_limit, tk_left, tk_reset_ms}
_RESERVE = _LUA_COMMON + """
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local win = tonumber(ARGV[5])
local ns = tonumber(ARGV[6])
local nb = tonumber(ARGV[7])
local rq = {-1, -1, -1}
local tk = {-1, -1, -1}
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {1, 'again', -1, 0, 0, -1, -1, -1, -1, -1, -1}
end
local now = now_ms()
local function result(ok, reason, i, retry, large)
  return {ok, reason, i, math.ceil(retry), large, rq[1], rq[2], rq[3], tk[1], tk[2], tk[3]}
end
local function tighter(room, limit, left, reset)
  if room[1] < 0 or left < room[2] then
    room[1] = limit; room[2] = left; room[3] = reset
  end
end
local a = 8
for i = 0, ns - 1 do
  local rpm, tpm, maxc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local w, h, c = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  if rpm >= 0 or tpm >= 0 then
    drop(w, h, now - win)
    local reset = win
    local first = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
    if #first > 0 then reset = tonumber(first[2]) + win - now end
    if rpm >= 0 then
      local count = redis.call('ZCARD', w)
      if count + 1 > rpm then
        local nth = redis.call('ZRANGE', w, count - rpm, count - rpm, 'WITHSCORES')
        rq = {rpm, 0, reset}
        return result(0, 'rpm', i, tonumber(nth[2]) + win - now, 0)
      end
      tighter(rq, rpm, rpm - count - 1, reset)
    end
    if tpm >= 0 then
      local used = tonumber(redis.call('HGET', h, '_sum') or '0')
      local left = math.max(0, tpm - used - tokens)
      if tokens > tpm then
        tk = {tpm, left, reset}
        return result(0, 'tpm', i, win, 1)
      end
      if used + tokens > tpm then
        local excess = used + tokens - tpm
        local retry = win
        local offset = 0
        local found = false
        while not found and offset < 5000 do
          local batch = redis.call('ZRANGE', w, offset, offset + 199, 'WITHSCORES')
          if #batch == 0 then break end
          local ids = {}
          for k = 1, #batch, 2 do ids[#ids + 1] = batch[k] end
          local vals = redis.call('HMGET', h, unpack(ids))
          for k = 1, #ids do
            excess = excess - (tonumber(vals[k]) or 0)
            if excess <= 0 then
              retry = tonumber(batch[2 * k]) + win - now
              found = true
              break
            end
          end
          offset = offset + 200
        end
        tk = {tpm, left, reset}
        return result(0, 'tpm', i, retry, 0)
      end
      tighter(tk, tpm, left, reset)
    end
  end
  if maxc >= 0 then
    redis.call('ZREMRANGEBYSCORE', c, '-inf', now)
    if redis.call('ZCARD', c) >= maxc then
      return result(0, 'concurrency', i, 1000, 0)
    end
  end
end
local bk = 2 + 3 * ns
for j = 0, nb - 1 do
  local limit, baseline, cttl = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local s, r, l = KEYS[bk + 3 * j], KEYS[bk + 3 * j + 1], KEYS[bk + 3 * j + 2]
  local spent = redis.call('GET', s)
  if not spent then
    if cttl > 0 then
      redis.call('SET', s, baseline, 'PX', cttl)
    else
      redis.call('SET', s, baseline)
    end
    spent = baseline
  end
  drop(l, r, now)
  local reserved = tonumber(redis.call('HGET', r, '_sum') or '0')
  if tonumber(spent) + reserved + cost > limit then
    return result(0, 'budget', ns + j, 0, 0)
  end
end
a = 8
for i = 0, ns - 1 do
  local rpm, tpm, maxc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local w, h, c = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  if rpm >= 0 or tpm >= 0 then
    redis.call('ZADD', w, now, lease)
    redis.call('HSET', h, lease, ARGV[2])
    if tokens ~= 0 then redis.call('HINCRBY', h, '_sum', ARGV[2]) end
    redis.call('PEXPIRE', w, win + 1000)
    redis.call('PEXPIRE', h, win + 1000)
  end
  if maxc >= 0 then
    redis.call('ZADD', c, now + ttl, lease)
    redis.call('PEXPIRE', c, 2 * ttl)
  end
end
for j = 0, nb - 1 do
  local r, l = KEYS[bk + 3 * j + 1], KEYS[bk + 3 * j + 2]
  redis.call('HSET', r, lease, ARGV[3])
  if cost ~= 0 then redis.call('HINCRBY', r, '_sum', ARGV[3]) end
  redis.call('ZADD', l, now + ttl, lease)
  redis.call('PEXPIRE', r, 2 * ttl)
  redis.call('PEXPIRE', l, 2 * ttl)
end
redis.call('HSET', KEYS[1], 's', 'r')
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
return result(1, '', -1, 0, 0)
"""

# KEYS: lease, then (w, h, c) per scope, then (s, r, l) per budget
# ARGV: lease, tokens, cost, nscopes, nbudgets, tail_ms, then (baseline, ttl_ms) per budget
_SETTLE = """
local lease = ARGV[1]
if redis.call('HGET', KEYS[1], 's') == 'd' then return 0 end
local ns, nb = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 0, ns - 1 do
  local h, c = KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local old = redis.call('HGET', h, lease)
  if old then
    redis.call('HSET', h, lease, ARGV[2])
    local diff = tonumber(ARGV[2]) - tonumber(old)
    if diff ~= 0 then redis.call('HINCRBY', h, '_sum', diff) end
  end
  redis.call('ZREM', c, lease)
end
local bk = 2 + 3 * ns
local a = 7
for j = 0, nb - 1 do
  local s, r, l = KEYS[bk + 3 * j], KEYS[bk + 3 * j + 1], KEYS[bk + 3 * j + 2]
  local held = redis.call('HGET', r, lease)
  if held then
    redis.call('HDEL', r, lease)
    if held ~= '0' then redis.call('HINCRBY', r, '_sum', '-' .. held) end
    redis.call('ZREM', l, lease)
  end
  if redis.call('EXISTS', s) == 0 then
    local cttl = tonumber(ARGV[a + 1])
    if cttl > 0 then
      redis.call('SET', s, ARGV[a], 'PX', cttl)
    else
      redis.call('SET', s, ARGV[a])
    end
  end
  if ARGV[3] ~= '0' then redis.call('INCRBY', s, ARGV[3]) end
  a = a + 2
end
redis.call('HSET', KEYS[1], 's', 'd')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
"""

# KEYS: per lease: its record, then its zsets, then its hashes
# ARGV: ttl_ms, then (lease, nzsets, nhashes) per lease
_RENEW = _LUA_COMMON + """
local now = now_ms()
local ttl = tonumber(ARGV[1])
local k = 1
local a = 2
local renewed = 0
while a <= #ARGV do
  local lease, nz, nh = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if redis.call('HGET', KEYS[k], 's') == 'r' then
    renewed = renewed + 1
    redis.call('PEXPIRE', KEYS[k], 2 * ttl)
    for i = 1, nz do
      if redis.call('ZADD', KEYS[k + i], 'XX', 'CH', now + ttl, lease) == 1 then
        redis.call('PEXPIRE', KEYS[k + i], 2 * ttl)
      end
    end
    for i = nz + 1, nz + nh do redis.call('PEXPIRE', KEYS[k + i], 2 * ttl) end
  end
  k = k + 1 + nz + nh
end
return renewed
"""

# KEYS: marker, then s per counter; ARGV: marker_ttl_ms, then (amount, baseline, ttl_ms) each
_ADD_SPEND = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', tonumber(ARGV[1])) then return 0 end
for i = 2, #KEYS do
  local a = 2 + 3 * (i - 2)
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local cttl = tonumber(ARGV[a + 2])
    if cttl > 0 then
      redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', cttl)
    else
      redis.call('SET', KEYS[i], ARGV[a + 1])
    end
  end
  redis.call('INCRBY', KEYS[i], ARGV[a])
end
return 1
"""


# KEYS: (w, h) per windowed scope, c per scope with open leases, (r, l) per budget, then one
#       lease record per open lease
# ARGV: window_ms, lease_ttl_ms, nw, nc, nb, nl, then per windowed scope: n and n x (lease,
#       age_ms, tokens); per concurrency scope: n and n x (lease, ms left); per budget: n and
#       n x (lease, cost, ms left)
# Idempotent: an entry already there is left as it is.
_CARRY = _LUA_COMMON + """
local now = now_ms()
local win, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local nw, nc, nb, nl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local a, k = 7, 1
for i = 1, nw do
  local w, h = KEYS[k], KEYS[k + 1]
  k = k + 2
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local lease, age, tokens = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
    a = a + 3
    if age < win and redis.call('ZADD', w, 'NX', now - age, lease) == 1 then
      redis.call('HSET', h, lease, tokens)
      if tokens ~= '0' then redis.call('HINCRBY', h, '_sum', tokens) end
    end
  end
  redis.call('PEXPIRE', w, win + 1000)
  redis.call('PEXPIRE', h, win + 1000)
end
for i = 1, nc do
  local c = KEYS[k]
  k = k + 1
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    redis.call('ZADD', c, now + tonumber(ARGV[a + 1]), ARGV[a])
    a = a + 2
  end
  redis.call('PEXPIRE', c, 2 * ttl)
end
for i = 1, nb do
  local r, l = KEYS[k], KEYS[k + 1]
  k = k + 2
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local lease, cost, left = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    a = a + 3
    if redis.call('HSETNX', r, lease, cost) == 1 then
      if cost ~= '0' then redis.call('HINCRBY', r, '_sum', cost) end
      redis.call('ZADD', l, now + left, lease)
    end
  end
  redis.call('PEXPIRE', r, 2 * ttl)
  redis.call('PEXPIRE', l, 2 * ttl)
end
for i = 1, nl do
  if redis.call('HSETNX', KEYS[k], 's', 'r') == 1 then
    redis.call('PEXPIRE', KEYS[k], 2 * ttl)
  end
  k = k + 1
end
return 1
"""
_CARRY_ARGS_PER_CALL = 30_000  # entries are sent in calls of about this many arguments


def _scope_keys(scope_id: str) -> tuple[str, str, str]:
    base = PREFIX + scope_id
    return base + ":w", base + ":h", base + ":c"


def _budget_keys(counter: str) -> tuple[str, str, str]:
    base = PREFIX + "b:" + counter
    return base + ":s", base + ":r", base + ":l"


def _lim(value: int | None) -> int:
    return -1 if value is None else value


def _room(limit: int, left: int, reset_ms: int) -> Room | None:
    return None if limit < 0 else Room(limit, left, max(0, reset_ms) / 1000)


def connect(url: str, *, timeout_s: float = 0.5, max_connections: int = 64) -> Redis:
    """A client that fails fast (one quick retry for a stale pooled connection)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s,
        socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1), health_check_interval=0)
    return Redis(connection_pool=pool)


class RedisStore:
    def __init__(self, client: Redis, *, lease_ttl_s: float = 60.0) -> None:
        self.client = client
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._renew = client.register_script(_RENEW)
        self._add_spend = client.register_script(_ADD_SPEND)
        self._carry = client.register_script(_CARRY)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    @staticmethod
    def _keys(r: Reservation) -> list[str]:
        keys = [PREFIX + "lease:" + r.lease_id]
        for s in r.scopes:
            keys.extend(_scope_keys(s.id))
        for b in r.budgets:
            keys.extend(_budget_keys(b.counter))
        return keys

    async def reserve(self, r: Reservation) -> Decision:
        args: list[Any] = [r.lease_id, r.tokens, r.cost_nanos, self.lease_ttl_ms,
                           int(WINDOW_S * 1000), len(r.scopes), len(r.budgets)]
        for s in r.scopes:
            args += [_lim(s.rpm), _lim(s.tpm), _lim(s.max_concurrent)]
        for b in r.budgets:
            args += [b.limit_nanos, b.baseline_nanos, b.ttl_s * 1000]
        out = await self._reserve(keys=self._keys(r), args=args)
        ok, reason, index, retry_ms, large = (int(out[0]), out[1], int(out[2]), int(out[3]),
                                              int(out[4]))
        requests = _room(int(out[5]), int(out[6]), int(out[7]))
        tokens = _room(int(out[8]), int(out[9]), int(out[10]))
        if ok:
            r.store = self
            return Decision(True, requests=requests, tokens=tokens)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        ns = len(r.scopes)
        kind = r.scopes[index].kind if index < ns else r.budgets[index - ns].kind
        retry = None if reason == "budget" else max(0, retry_ms) / 1000
        return Decision(False, reason, kind, retry, too_large=bool(large), requests=requests,
                        tokens=tokens)

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        args: list[Any] = [r.lease_id, tokens, cost_nanos, len(r.scopes), len(r.budgets),
                           SETTLED_TAIL_MS]
        for b in r.budgets:
            args += [b.baseline_nanos, b.ttl_s * 1000]
        await self._settle(keys=self._keys(r), args=args)
        r.settled = True

    async def renew(self, reservations: list[Reservation]) -> int:
        """Extend the leases of requests still running (one round trip for all of them)."""
        if not reservations:
            return 0
        keys: list[str] = []
        args: list[Any] = [self.lease_ttl_ms]
        for r in reservations:
            zsets = [_scope_keys(s.id)[2] for s in r.scopes if s.max_concurrent is not None]
            hashes: list[str] = []
            for b in r.budgets:
                _, held, leases = _budget_keys(b.counter)
                zsets.append(leases)
                hashes.append(held)
            keys += [PREFIX + "lease:" + r.lease_id, *zsets, *hashes]
            args += [r.lease_id, len(zsets), len(hashes)]
        return int(await self._renew(keys=keys, args=args))

    async def add_spend(self, amounts: list[tuple[BudgetLimit, int]]) -> None:
        """Add spend counted elsewhere (while Redis was down); safe to retry."""
        if not amounts:
            return
        keys = [PREFIX + "replay:" + os.urandom(8).hex()]
        args: list[Any] = [SETTLED_TAIL_MS]
        for b, amount in amounts:
            keys.append(_budget_keys(b.counter)[0])
            args += [amount, b.baseline_nanos, b.ttl_s * 1000]
        await self._add_spend(keys=keys, args=args)

    async def carry(self, counted: Carry, open_leases: list[str]) -> None:
        """Add what another store counted (see `_CARRY`); `open_leases` become Redis leases
        (settled and renewed here from now on). Safe to retry."""
        items: list[tuple[int, tuple[str, ...], list[Any]]] = []  # (kind, keys, n + entries)

        def add(kind: int, keys: tuple[str, ...], entries: list[tuple[Any, ...]]) -> None:
            flat: list[Any] = [len(entries)]
            for entry in entries:
                flat.extend(entry)
            items.append((kind, keys, flat))

        for scope_id, windowed in counted.windows.items():
            add(0, _scope_keys(scope_id)[:2],
                [(lease, int(age * 1000), tokens) for lease, age, tokens in windowed])
        for scope_id, active in counted.active.items():
            add(1, _scope_keys(scope_id)[2:],
                [(lease, max(1, int(left * 1000))) for lease, left in active])
        for counter, holds in counted.holds.items():
            add(2, _budget_keys(counter)[1:],
                [(lease, cost, max(1, int(left * 1000))) for lease, cost, left in holds])
        calls: list[list[tuple[int, tuple[str, ...], list[Any]]]] = [[]]
        size = 0
        for item in items:  # in calls of about _CARRY_ARGS_PER_CALL arguments, kinds in order
            if size and size + len(item[2]) > _CARRY_ARGS_PER_CALL:
                calls.append([])
                size = 0
            calls[-1].append(item)
            size += len(item[2])
        for i, call in enumerate(calls):
            leases = open_leases if i == len(calls) - 1 else []
            if not call and not leases:
                continue
            keys = [key for _, item_keys, _ in call for key in item_keys]
            keys += [PREFIX + "lease:" + lease for lease in leases]
            args: list[Any] = [int(WINDOW_S * 1000), self.lease_ttl_ms,
                               *(sum(1 for kind, _, _ in call if kind == k) for k in range(3)),
                               len(leases)]
            for _, _, flat in call:
                args.extend(flat)
            await self._carry(keys=keys, args=args)

    async def spent(self, counter: str) -> int | None:
        value = await self.client.get(_budget_keys(counter)[0])
        return None if value is None else int(value)
