-- Puts a claimed entry back in its queue (at its end), atomically, so it is never lost nor held
-- by a worker that did not ask for it.
-- KEYS[1]: the task stream.
-- ARGV[1]: the consumer group; ARGV[2]: the entry id; ARGV[3]: the run id.
-- Returns 1 when requeued, 0 when the entry was no longer pending.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[1], '*', 'run', ARGV[3])
  return 1
end
return 0
