-- Appends one value to a run's input stream (stored like an output stream) and publishes it,
-- refusing an unknown or finished run in the same atomic step, so a value is never accepted by a
-- run that can no longer take it.
-- KEYS[1]: the run hash; KEYS[2]: the run's input stream.
-- ARGV[1]: TTL ms; ARGV[2]: the (prefixed) channel; ARGV[3]: the value.
-- Returns the value's index, -1 for an unknown run, -2 for a finished one.
local final = redis.call('HGET', KEYS[1], 'final')
if not final then return -1 end
if final == '1' then return -2 end
local id = redis.call('XADD', KEYS[2], '0-*', 'd', ARGV[3])
local index = tonumber(string.match(id, '-(%d+)$')) - 1
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], tostring(index) .. '\n' .. ARGV[3])
return index
