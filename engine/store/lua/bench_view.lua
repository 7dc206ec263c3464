-- The campaigns benched now, for a worker's view: one call for every campaign, since all
-- benches share one hash tag. KEYS: [1] benched-until hash (campaign -> ms). Compared with
-- the server's clock, as bench.lua wrote it; ended entries are left for bench.lua to drop.
local now = now_ms()
local benched = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > now then
    benched[#benched + 1] = all[i]
  end
end
return benched
