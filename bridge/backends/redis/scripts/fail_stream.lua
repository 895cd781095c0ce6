-- Marks a run's stream failed where it stands, atomically: no chunk is appended after it
-- (append_chunks.lua refuses), and readers end with an error once they read that far.
-- KEYS[1]: the run's stream; KEYS[2]: the stream's failure record.
-- ARGV[1]: TTL ms; ARGV[2]: the publish command (PUBLISH, or SPUBLISH in a cluster); ARGV[3]: the wire
-- channel; ARGV[4]: the reason.
-- Publishes "<next index>" (a stream message without chunks: the stream failed) and returns the index
-- the stream stops at; when it had failed already, that one's index, unchanged.
local stopped = redis.call('HGET', KEYS[2], 'next')
if stopped then return tonumber(stopped) end
local length = redis.call('XLEN', KEYS[1])
redis.call('HSET', KEYS[2], 'next', length, 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call(ARGV[2], ARGV[3], tostring(length))
return length
