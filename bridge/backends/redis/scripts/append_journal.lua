-- Appends one entry to a run's journal only if the attempt is the run's current one and the entry
-- goes exactly at the given position, atomically: a stale worker, or a second writer of the same
-- position, stores nothing. Refreshes the TTL of the attempt and of the journal.
-- KEYS[1]: the run's attempt; KEYS[2]: the run's journal.
-- ARGV[1]: the attempt; ARGV[2]: the position (the entries the journal must hold); ARGV[3]: the
-- entry; ARGV[4]: TTL ms.
-- Returns 1 when stored, 0 otherwise.
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
