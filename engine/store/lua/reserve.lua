-- Count one lead against the campaign's caps unless it would pass one (0 = no cap; the
-- same test as engine.store.base.Limits.exceeded). ARGV: hour, day, cents, hourly, daily,
-- budget cents, reservation member, hold ms, 1 to count only with the marker and settled.
-- Returns {1 if reserved, 0 if at a cap, state after}, {-1} if the counts are gone (the
-- client refills them and asks again), or {-2, ms} while refilled counts settle (the client
-- asks again in ms). Idempotent: the client may resend a pipeline whose
-- connection broke after it ran.
if redis.call('ZSCORE', KEYS[4], ARGV[7]) then
  return {1, unpack(state())}
end
local now = now_ms()
if ARGV[9] == '1' then
  local marker = redis.call('GET', KEYS[6])
  if not marker then
    return {-1}
  end
  local settled = tonumber(string.match(marker, '@(%d+)$') or 0)
  if now < settled then
    return {-2, settled - now}
  end
end
sweep(ARGV[1], ARGV[2], now)
local s = state()
local cents, hourly, daily, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if (hourly > 0 and s[1] + 1 > hourly) or (daily > 0 and s[2] + 1 > daily)
    or (budget > 0 and s[3] + cents > budget) then
  return {0, s[1], s[2], s[3]}
end
count(1, 1, cents)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[8]), ARGV[7])
-- Only a reserve or a refresh of a capped campaign sweeps, so a campaign without caps
-- that is never posted again would otherwise keep a dead worker's reservations for ever.
redis.call('EXPIRE', KEYS[4], DAY_TTL)
return {1, s[1] + 1, s[2] + 1, s[3] + cents}
