-- Takes an idempotency scope for a run or wait token, unless another owner holds it.
-- KEYS[1]: the idempotency key.
-- ARGV[1]: the owner's id; ARGV[2]: TTL ms; ARGV[3]: a stale owner to take over (or "").
-- Returns nil when the scope is now ARGV[1]'s, else the id owning it.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[3] then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
