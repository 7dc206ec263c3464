-- Fetch a ping for posting and take its post lock, unless a post finished or is running.
-- KEYS: record, post result, post lock. ARGV: lock ms, this caller's token (so a resent
-- pipeline finds the lock it took already).
-- Returns {} for an unknown ping, else {record, result or nil, 1 if the lock was taken}.
local rec = redis.call('GET', KEYS[1])
if not rec then
  return {}
end
local post = redis.call('GET', KEYS[2])
if post then
  return {rec, post, 0}
end
local taken = redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[1]) or redis.call('GET', KEYS[3]) == ARGV[2]
return {rec, false, taken and 1 or 0}
