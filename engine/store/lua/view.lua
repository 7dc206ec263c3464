-- One capped campaign's counts for a worker's local view. ARGV: current hour, current day.
sweep(ARGV[1], ARGV[2], now_ms())
return state()
