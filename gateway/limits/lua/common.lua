-- Shared helpers, prepended to each script that says so in redis_store.py.
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
