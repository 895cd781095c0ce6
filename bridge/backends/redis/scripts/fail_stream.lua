-- Marks a run's stream failed where it stands, atomically: no chunk is appended after it
-- (append_chunks.lua refuses), and readers end with an error once they read that far. A stream without
-- an epoch (nothing of it stored) gets the one given, in this step.
-- KEYS[1]: the run's stream; KEYS[2]: the stream's failure record; KEYS[3]: the stream's epoch.
-- ARGV[1]: TTL ms; ARGV[2]: the publish command (PUBLISH, or SPUBLISH in a cluster); ARGV[3]: the wire
-- channel; ARGV[4]: the reason; ARGV[5]: a new epoch.
-- Publishes "<next index> <epoch>" (a stream message without chunks: the stream failed) and returns the
-- index the stream stops at; when it had failed already, that one's index, unchanged.
local stopped = redis.call('HGET', KEYS[2], 'next')
if stopped then return tonumber(stopped) end
local length = redis.call('XLEN', KEYS[1])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
redis.call('HSET', KEYS[2], 'next', length, 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
redis.call(ARGV[2], ARGV[3], tostring(length) .. ' ' .. epoch)
return length
