-- KEYS: marker, then s per counter; ARGV: marker_ttl_ms, then (amount, baseline, ttl_ms) each
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
