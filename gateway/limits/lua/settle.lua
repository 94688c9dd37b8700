-- KEYS: lease, then (w, h, c) per scope, then (s, r, l) per budget
-- ARGV: lease, tokens, cost, nscopes, nbudgets, tail_ms, then (baseline, ttl_ms) per budget
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
