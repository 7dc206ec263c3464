-- Keep a post's result beside its ping, expiring with it, and release the post lock.
-- KEYS: record, post result, post lock. ARGV: the encoded result.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
end
redis.call('DEL', KEYS[3])
return ttl > 0 and 1 or 0
