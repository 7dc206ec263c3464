-- One campaign timed out in one ping. KEYS: [1] recent timeouts (zset of ms), [2] bench flag.
-- ARGV: ping id, window ms, timeouts that bench, bench ms. Returns 1 if this benched it.
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[4])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
