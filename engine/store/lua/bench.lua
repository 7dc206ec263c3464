-- Campaigns that timed out in one ping. KEYS: [1] benched-until hash (campaign -> ms), then
-- per campaign its recent timeouts (zset ping id -> ms). ARGV: ping id, window ms, timeouts
-- that bench, bench ms, then the campaign ids in the order of their KEYS.
-- Returns per campaign 1 if this benched it, else 0.
local now = now_ms()
local window, threshold, bench = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local benched, any = {}, false
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= threshold then
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[1], ARGV[i + 3], now + bench)
    benched[i - 1], any = 1, true
  else
    redis.call('PEXPIRE', KEYS[i], window)
    benched[i - 1] = 0
  end
end
-- Ended benches are dropped here, and the hash lives as long as its longest bench, so
-- it holds only recent benches and disappears when none is left.
if any then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) <= now then
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
  if redis.call('PTTL', KEYS[1]) < bench then
    redis.call('PEXPIRE', KEYS[1], bench)
  end
end
return benched
