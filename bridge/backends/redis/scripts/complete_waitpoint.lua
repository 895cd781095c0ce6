-- Completes a wait token: the first result wins (a later one is not stored), is published, and
-- keeps the token at least the given TTL more (a longer remaining TTL is kept).
-- KEYS[1]: the wait token's hash.
-- ARGV[1]: the result; ARGV[2]: TTL ms; ARGV[3]: the publish command (PUBLISH, or SPUBLISH in a cluster);
-- ARGV[4]: the wire channel.
-- Returns the stored result, or nil for an unknown token.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local existing = redis.call('HGET', KEYS[1], 'result')
if existing then return existing end
redis.call('HSET', KEYS[1], 'result', ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call(ARGV[3], ARGV[4], ARGV[1])
return ARGV[1]
