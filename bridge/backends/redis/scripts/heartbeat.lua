-- Resets the idle time of a worker's deliveries still pending for it (never takes back an entry
-- another worker reclaimed meanwhile).
-- KEYS[i]: the task stream of delivery i (all share the {queue} hash tag).
-- ARGV[1]: the consumer group; ARGV[2]: the consumer (the worker id); ARGV[2 + i]: delivery i's entry id.
-- Returns how many deliveries were still the worker's.
local kept = 0
for i = 1, #KEYS do
  local id = ARGV[2 + i]
  local pending = redis.pcall('XPENDING', KEYS[i], ARGV[1], id, id, 1, ARGV[2])
  if type(pending) == 'table' and not pending.err and pending[1] then
    redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    kept = kept + 1
  end
end
return kept
