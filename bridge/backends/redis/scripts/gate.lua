-- A concurrency gate's admission or release, and the admission of its next waiting runs, in one step: a
-- crash can neither lose a slot between a release and the next run's admission, nor a run between them.
-- KEYS[1]: the set of run ids holding a slot; KEYS[2]: the sorted set of waiting members (`<run id>|<task id>`,
-- scored by (queued-at ms - priority ms) * 1000 + a sequence); KEYS[3]: the gate's limit; KEYS[4]: its sequence;
-- KEYS[5]: the set of the gates that have waiting runs (what the sweep of lost slots reads).
-- Every key, and every task stream it queues into, shares the {queue} hash tag (one slot).
-- ARGV[1]: "admit" or "release"; ARGV[2]: the run id; ARGV[3]: its task id; ARGV[4]: the task streams' key
-- prefix; ARGV[5]: the gate's name in KEYS[5]; admit only: ARGV[6]: the limit to store; ARGV[7]: the run's
-- score before its sequence.
-- Returns the ids of the runs queued (XADD to their task stream) by this call.
local member = ARGV[2] .. '|' .. ARGV[3]
if ARGV[1] == 'admit' then
  redis.call('SET', KEYS[3], ARGV[6])
  if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then
    redis.call('XADD', ARGV[4] .. ARGV[3], '*', 'run', ARGV[2])
    return {ARGV[2]}
  end
  if not redis.call('ZSCORE', KEYS[2], member) then
    local sequence = redis.call('INCR', KEYS[4]) % 1000
    redis.call('ZADD', KEYS[2], tonumber(ARGV[7]) * 1000 + sequence, member)
  end
else
  redis.call('SREM', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], member)
end
local limit = tonumber(redis.call('GET', KEYS[3]) or '0')
local queued = {}
while redis.call('SCARD', KEYS[1]) < limit do
  local next = redis.call('ZPOPMIN', KEYS[2])
  if #next == 0 then break end
  local separator = string.find(next[1], '|', 1, true)
  local run, task = string.sub(next[1], 1, separator - 1), string.sub(next[1], separator + 1)
  redis.call('SADD', KEYS[1], run)
  redis.call('XADD', ARGV[4] .. task, '*', 'run', run)
  queued[#queued + 1] = run
end
if redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('SADD', KEYS[5], ARGV[5])
else
  redis.call('SREM', KEYS[5], ARGV[5])
  if redis.call('SCARD', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[3], KEYS[4])  -- an unused gate (one per concurrency key value) leaves nothing behind
  end
end
return queued
