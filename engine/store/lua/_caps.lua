-- Shared by view, reserve, settle and refill. KEYS (one hash tag per campaign):
-- [1] leads this hour, [2] leads today, [3] cents today,
-- [4] open reservations (member "token|hour|day|cents", score = deadline in ms),
-- [5] reservations the sweep gave back (so a late commit counts its sale once),
-- [6] the marker: present while the counters hold every sale since they were refilled from
--     the ledger. Redis loses it with them (a restart without data, FLUSHALL, a failover to
--     an empty node), so its absence says the counts are gone.
-- [7] the day's committed sales (hash: token -> member), so that a commit Redis finds
--     neither open nor swept (Redis lost it) counts its sale, a commit resent after it ran
--     does not count twice, and a sale a refill took from the ledger is not counted again.
-- A member is "token|hour|day|cents"; its token is the ping the lead would be sold under,
-- which the ledger's sales name too.
-- Counters outlive their bucket so a settle that arrives late still finds them. The marker
-- is renewed with them to the longest counter's TTL: an active campaign keeps it, an idle
-- one loses it after two days and is refilled, which changes nothing it had counted.
local HOUR_TTL, DAY_TTL = 7200, 172800

local function add(key, n, ttl)
  if n ~= 0 then
    redis.call('INCRBY', key, n)
    redis.call('EXPIRE', key, ttl)
  end
end

local function count(hour_n, day_n, cents)
  add(KEYS[1], hour_n, HOUR_TTL)
  add(KEYS[2], day_n, DAY_TTL)
  add(KEYS[3], cents, DAY_TTL)
  redis.call('EXPIRE', KEYS[6], DAY_TTL)
end

local function fields(member)
  local token, h, d, cents = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(%d+)$')
  return token, h, d, tonumber(cents)
end

local function primed()
  return redis.call('EXISTS', KEYS[6]) == 1
end

-- Give back reservations nobody settled before their deadline (the worker died or lost
-- Redis), so a lost worker cannot hold a campaign's cap for ever. Only counts in the
-- current buckets matter; older buckets are past and just expire.
local function sweep(hour, day, now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, member in ipairs(dead) do
    local _, h, d, cents = fields(member)
    if d == day then
      count(h == hour and -1 or 0, -1, -cents)
    end
    redis.call('SADD', KEYS[5], member)
  end
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    redis.call('EXPIRE', KEYS[5], DAY_TTL)
  end
end

-- {leads this hour, leads today, cents today}; benches live apart, under {bench}.
local function state()
  local v = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
  return {tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)}
end
