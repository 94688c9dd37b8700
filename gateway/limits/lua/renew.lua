-- KEYS: per lease: its record, then its zsets, then its hashes
-- ARGV: ttl_ms, then (lease, nzsets, nhashes) per lease
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
