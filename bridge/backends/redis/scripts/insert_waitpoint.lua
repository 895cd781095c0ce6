-- Stores a wait token's creation record with its TTL, atomically (a token is never kept forever).
-- KEYS[1]: the wait token's hash.
-- ARGV[1]: the creation record (spec); ARGV[2]: TTL ms.
-- Returns 1.
redis.call('HSET', KEYS[1], 'spec', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
