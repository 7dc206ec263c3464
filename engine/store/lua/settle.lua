-- Commit (ARGV[3] = 1) or release (-1) a reservation. ARGV: member, cents, sign.
-- The reservation was counted when made, so a release takes the counts back and a commit
-- keeps them. If the sweep already took them back (the reservation outlived its deadline),
-- or Redis lost it (neither open, nor swept, nor committed before), a commit counts the sale
-- again and a release has nothing left to do. A sale that a refill took from the ledger is
-- committed already, so its commit counts nothing more. Settling twice changes nothing, so a
-- resent pipeline is harmless.
local sign = tonumber(ARGV[3])
local held = redis.call('ZREM', KEYS[4], ARGV[1]) == 1
if sign > 0 then
  if redis.call('HSETNX', KEYS[7], (fields(ARGV[1])), ARGV[1]) == 0 then
    return state()
  end
  redis.call('EXPIRE', KEYS[7], DAY_TTL)
end
if not held then
  redis.call('SREM', KEYS[5], ARGV[1])
end
if sign < 0 and held then
  count(-1, -1, -tonumber(ARGV[2]))
elseif sign > 0 and not held then
  count(1, 1, tonumber(ARGV[2]))
end
return state()
