-- One slice of accept counts for a worker's view. KEYS: [1] the slice's counts, [2] its log
-- (see accept.lua). ARGV: how many log entries the worker has read (-1: none), and the log's
-- first entry when it read them ('' if there was no log yet).
-- Returns {1, log length, first entry, the counts (field, value, ...)} when the worker reads
-- the slice whole: it had read none, or the log it read is gone (Redis lost the slice: the
-- log is shorter, or begins with another entry); else {0, log length, first entry, the
-- entries it has not read}. One script, so the counts and the log are of the same moment.
local read, seen = tonumber(ARGV[1]), ARGV[2]
local length = redis.call('LLEN', KEYS[2])
local first = redis.call('LINDEX', KEYS[2], 0) or ''
if read < 0 or length < read or (seen ~= '' and first ~= seen) then
  return {1, length, first, redis.call('HGETALL', KEYS[1])}
end
return {0, length, first, redis.call('LRANGE', KEYS[2], read, -1)}
