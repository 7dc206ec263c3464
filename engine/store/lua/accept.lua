-- One live offer's outcome, for the accept rates. KEYS (tag {accept}), one slice's: [1] its
-- counts (hash: "o:<campaign>" offers, "a:<campaign>" of them accepted), [2] the offers it
-- counted (set of "<ping>|<campaign>"), [3] its log, one entry per offer in the order they
-- were counted ("1<campaign>" accepted, "0<campaign>" not), which workers read from where
-- they left off, after a first entry "#<the first offer's mark>" that names the log: one
-- that Redis lost and began again starts with another name. ARGV: campaign, 1 if accepted
-- else 0, how long the slice is kept (ms), the offer's mark. An offer counted before (a
-- pipeline sent twice, a sale's writes retried by the journal) finds its mark and changes
-- nothing.
if redis.call('SADD', KEYS[2], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'o:' .. ARGV[1], 1)
  if ARGV[2] == '1' then
    redis.call('HINCRBY', KEYS[1], 'a:' .. ARGV[1], 1)
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('RPUSH', KEYS[3], '#' .. ARGV[4])
  end
  redis.call('RPUSH', KEYS[3], ARGV[2] .. ARGV[1])
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 0
