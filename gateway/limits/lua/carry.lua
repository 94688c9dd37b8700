-- KEYS: (w, h) per windowed scope, c per scope with open leases, (r, l) per budget, then one
--       lease record per open lease
-- ARGV: window_ms, lease_ttl_ms, nw, nc, nb, nl, then per windowed scope: n and n x (lease,
--       age_ms, tokens); per concurrency scope: n and n x (lease, ms left); per budget: n and
--       n x (lease, cost, ms left)
-- Idempotent: an entry already there is left as it is.
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
