-- One capped campaign's counts for a worker's local view, and the marker's value (the
-- refill it came from) if the counts are whole, nil if Redis lost them (the worker refills
-- them). A worker that sees the value change learns that Redis lost them meanwhile and
-- another worker refilled them: it opens its own lost reservations again.
-- ARGV: current hour, current day.
sweep(ARGV[1], ARGV[2], now_ms())
local s = state()
s[4] = redis.call('GET', KEYS[6])
return s
