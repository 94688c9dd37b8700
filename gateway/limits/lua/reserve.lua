-- KEYS: lease, then (w, h, c) per scope, then (s, r, l) per budget
-- ARGV: lease, tokens, cost, lease_ttl_ms, window_ms, nscopes, nbudgets,
--       then (rpm, tpm, maxc) per scope (-1 = none), then (limit, baseline, ttl_ms) per budget
-- -> {allowed, reason, index, retry_ms, too_large, rq_limit, rq_left, rq_reset_ms,
--     tk_limit, tk_left, tk_reset_ms}
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
