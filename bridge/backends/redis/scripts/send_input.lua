-- Appends one value to a run's input stream (stored like an output stream, with its epoch) and
-- publishes it, refusing an unknown or finished run in the same atomic step, so a value is never
-- accepted by a run that can no longer take it. With an idempotency key, the key is remembered with the
-- value's index in the same step, and a later send with the key stores nothing and returns that index
-- (also once the run is finished: the value was accepted before).
-- KEYS[1]: the run hash; KEYS[2]: the run's input stream; KEYS[3]: the stream's idempotency keys (hash);
-- KEYS[4]: the stream's epoch.
-- ARGV[1]: TTL ms; ARGV[2]: the publish command (PUBLISH, or SPUBLISH in a cluster); ARGV[3]: the wire
-- channel; ARGV[4]: the value; ARGV[5]: a new epoch (for a stream without one); ARGV[6] (optional): the
-- idempotency key.
-- Returns the value's index, -1 for an unknown run, -2 for a finished one.
local final = redis.call('HGET', KEYS[1], 'final')
if not final then return -1 end
local key = ARGV[6]
if key then
  local first = redis.call('HGET', KEYS[3], key)
  if first then return tonumber(first) end
end
if final == '1' then return -2 end
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[4], epoch)
end
local id = redis.call('XADD', KEYS[2], '0-*', 'd', ARGV[4])
local index = tonumber(string.match(id, '-(%d+)$')) - 1
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[1])
if key then
  redis.call('HSET', KEYS[3], key, index)
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
redis.call(ARGV[2], ARGV[3], tostring(index) .. ' ' .. epoch .. '\n' .. ARGV[4])
return index
