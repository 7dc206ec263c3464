-- Commit (ARGV[3] = 1) or release (-1) a reservation. ARGV: member, cents, sign.
-- The reservation was counted when made, so a release takes the counts back and a commit
-- keeps them. If the sweep already took them back (the reservation outlived its deadline),
-- a commit counts the sale again and a release has nothing left to do. Settling twice
-- changes nothing, so a resent pipeline is harmless.
local sign = tonumber(ARGV[3])
local held = redis.call('ZREM', KEYS[4], ARGV[1]) == 1
local swept = not held and redis.call('SREM', KEYS[5], ARGV[1]) == 1
if (sign < 0 and held) or (sign > 0 and swept) then
  count(sign, sign, sign * tonumber(ARGV[2]))
end
return state()
