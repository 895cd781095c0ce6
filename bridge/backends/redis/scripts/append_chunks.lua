-- Appends chunks to a run's stream and publishes them, atomically. Entry ids are `0-<index + 1>`
-- (XADD's `0-*` picks the next sequence number), so indexes are gapless whatever the number of
-- writers, and reading from an index is one XRANGE.
-- KEYS[1]: the run's stream.
-- ARGV[1]: TTL ms; ARGV[2]: the (prefixed) channel; ARGV[3..]: the chunks.
-- Publishes "<first index>\n<chunk>\n<chunk>..." and returns the first chunk's index.
local first
for i = 3, #ARGV do
  local id = redis.call('XADD', KEYS[1], '0-*', 'd', ARGV[i])
  if not first then first = tonumber(string.match(id, '-(%d+)$')) - 1 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], tostring(first) .. '\n' .. table.concat(ARGV, '\n', 3))
return first
