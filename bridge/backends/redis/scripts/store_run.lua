-- Stores a run if its stored version is the expected one, then publishes it: compare-and-set,
-- expiry and notification happen atomically, so a change is never stored without being published
-- nor published unstored.
-- KEYS[1]: the run hash.
-- ARGV[1]: the expected version ("0": the run must not exist); ARGV[2]: the new version;
-- ARGV[3]: the run's storage bytes; ARGV[4]: TTL ms; ARGV[5]: "1" if its status is final else "0"
-- (read by send_input.lua); ARGV[6]: the publish command (PUBLISH, or SPUBLISH in a cluster); ARGV[7..]:
-- the wire channels to publish the data on (in a cluster, only the run's own: the others are in other slots).
-- Returns 1 when stored, 0 when the version did not match.
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'data', ARGV[3], 'final', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = 7, #ARGV do
  redis.call(ARGV[6], ARGV[i], ARGV[3])
end
return 1
