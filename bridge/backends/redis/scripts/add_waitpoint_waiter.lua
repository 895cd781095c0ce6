-- Adds a run to the set of runs parked on a wait token, with the TTL the token has now, so the set
-- never outlives the token. Nothing for an unknown token (a token always has a TTL).
-- KEYS[1]: the wait token's hash; KEYS[2]: its waiters set.
-- ARGV[1]: the run id.
-- Returns 1 when the token exists, 0 otherwise.
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
