-- Deadlines and windows use the server's clock, so workers on hosts whose clocks drift
-- still agree on when a reservation or a timeout is old.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
