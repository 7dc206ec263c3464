-- Counters Redis lost, refilled from the ledger's sales of the day. ARGV: the hold ms, the
-- settling ms, the hour, the day, this refill's name, n, then the day's n live sales as
-- the ledger holds them, three values each (ping, 1 if of this hour else 0, the buyer's
-- cents), then the refilling worker's own open reservations of the campaign (members),
-- which Redis lost too.
--
-- Only while the marker is absent (of workers racing to refill, the first one wins and the
-- others, whose reads may be older, change nothing but their own reservations): each sale
-- the counters do not hold yet is added to them and goes in the committed hash. Held
-- already are a sale whose commit reached Redis since the loss, and one still open that was
-- counted when it was reserved (a cap added later, so counting went on without the marker).
-- A commit that arrives after the refill finds its sale committed and counts nothing, so
-- every sale counts once, in whatever order the books, the commits and the refill ran.
-- The marker's value is the refill's name and when the counts settle: reservations wait
-- until then (reserve.lua), so that every worker's refresh has opened its lost
-- reservations again before a new one can take their place under the cap.
--
-- Then every worker that saw the loss opens its own lost reservations again, whoever
-- refilled, unless they are open, swept or committed (the refill's sales among them): they
-- count, and their commit or release settles them as usual. Returns the state after, for
-- the view.
local hold, settling, hour, day, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[6])
local last = 6 + 3 * n
local now = now_ms()
if not primed() then
  local held = {}
  for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local token, _, d = fields(member)
    if d == day then
      held[token] = true
    end
  end
  local hours, leads, cents = 0, 0, 0
  for i = 7, last, 3 do
    local ping, this_hour, price = ARGV[i], ARGV[i + 1] == '1', tonumber(ARGV[i + 2])
    if not held[ping] and redis.call('HEXISTS', KEYS[7], ping) == 0 then
      hours = hours + (this_hour and 1 or 0)
      leads = leads + 1
      cents = cents + price
      redis.call('HSET', KEYS[7], ping, ping .. '|' .. (this_hour and hour or '') .. '|' .. day .. '|' .. price)
    end
  end
  if leads > 0 then
    redis.call('EXPIRE', KEYS[7], DAY_TTL)
  end
  count(hours, leads, cents)
  redis.call('SET', KEYS[6], ARGV[5] .. '@' .. (now + settling), 'EX', DAY_TTL)
end
local deadline = now + hold
for i = last + 1, #ARGV do
  local member = ARGV[i]
  if not redis.call('ZSCORE', KEYS[4], member) and redis.call('HEXISTS', KEYS[7], (fields(member))) == 0
      and redis.call('SISMEMBER', KEYS[5], member) == 0 then
    local _, h, _, price = fields(member)
    redis.call('ZADD', KEYS[4], deadline, member)
    redis.call('EXPIRE', KEYS[4], DAY_TTL)
    count(h == hour and 1 or 0, 1, price)
  end
end
return state()
