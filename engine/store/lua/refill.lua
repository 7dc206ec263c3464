-- Counters Redis lost, refilled from the ledger's sales of the hour and day. ARGV: leads
-- this hour, leads today, cents today, as the ledger counted them, the hold ms, the hour,
-- this refill's name (the marker's value), then the refilling worker's own open reservations of the campaign (members), which Redis lost
-- too: they are open again and counted, so their offers still in flight count against the
-- caps and their commit or release settles them as usual (every worker that saw the loss
-- does this for its own). The ledger's counts only while the marker is absent: of workers
-- racing to refill, the first one wins and the others (whose counts may be older) change
-- nothing else. A counter already higher is kept (it holds open reservations
-- the ledger cannot know). Returns the state after, for the view.
local function raise_to(key, n, ttl)
  if n > tonumber(redis.call('GET', key) or 0) then
    redis.call('SET', key, n, 'EX', ttl)
  end
end

if not primed() then
  raise_to(KEYS[1], tonumber(ARGV[1]), HOUR_TTL)
  raise_to(KEYS[2], tonumber(ARGV[2]), DAY_TTL)
  raise_to(KEYS[3], tonumber(ARGV[3]), DAY_TTL)
  redis.call('SET', KEYS[6], ARGV[6], 'EX', DAY_TTL)
end
-- Every worker that saw the loss opens its own lost reservations again, whoever refilled.
local deadline = now_ms() + tonumber(ARGV[4])
local hour = ARGV[5]
for i = 7, #ARGV do
  local member = ARGV[i]
  if not redis.call('ZSCORE', KEYS[4], member) and redis.call('SISMEMBER', KEYS[7], member) == 0
      and redis.call('SISMEMBER', KEYS[5], member) == 0 then
    local h, cents = string.match(member, '^[^|]*|([^|]*)|[^|]*|(%d+)$')
    redis.call('ZADD', KEYS[4], deadline, member)
    redis.call('EXPIRE', KEYS[4], DAY_TTL)
    count(h == hour and 1 or 0, 1, tonumber(cents))
  end
end
return state()
