-- Fetch a ping for posting and take its post lock, unless a post finished or is running.
-- KEYS: record, post result, post lock, "tried" (set while a lock was taken and no result
-- stored: a cascade may have finished whose result never arrived). ARGV: lock ms, this
-- caller's token (so a resent pipeline finds the lock it took already).
-- Returns {} for an unknown ping, else {record, result or nil, 1 if the lock was taken,
-- 1 if a post took the lock before (or it cannot tell: a resent pipeline)}.
local rec = redis.call('GET', KEYS[1])
if not rec then
  return {}
end
local post = redis.call('GET', KEYS[2])
if post then
  return {rec, post, 0, 0}
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[1]) then
  local tried = redis.call('EXISTS', KEYS[4])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[4], '1', 'PX', ttl)
  end
  return {rec, false, 1, tried}
end
if redis.call('GET', KEYS[3]) == ARGV[2] then
  return {rec, false, 1, 1}
end
return {rec, false, 0, 0}
