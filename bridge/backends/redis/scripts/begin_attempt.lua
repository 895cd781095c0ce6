-- Makes an attempt a run's current one if it is higher than the stored one (0 when none): a
-- monotonic fence, so a worker that lost the run never takes it back. Refreshes the TTL of the
-- attempt and of the journal (they expire together).
-- KEYS[1]: the run's attempt; KEYS[2]: the run's journal.
-- ARGV[1]: the attempt; ARGV[2]: TTL ms.
-- Returns 1 when it is now the current attempt, 0 when the stored one is already at least as high.
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
