-- Appends chunks to a run's stream and publishes them, atomically. Entry ids are `0-<index + 1>`
-- (XADD's `0-*` picks the next sequence number), so indexes are gapless whatever the number of
-- writers, and reading from an index is one XRANGE.
-- Idempotent with an expected first index: the chunks are stored only when the stream holds exactly
-- that many; when it already holds these very chunks there (a retry whose first reply was lost),
-- nothing is stored again and their index is returned. A failed stream (fail_stream.lua) takes no chunk.
-- A stream without an epoch gets the one given (its first chunk, or its storage was lost), in this step.
-- KEYS[1]: the run's stream; KEYS[2]: the stream's failure record; KEYS[3]: the stream's epoch.
-- ARGV[1]: TTL ms; ARGV[2]: the publish command (PUBLISH, or SPUBLISH in a cluster); ARGV[3]: the wire
-- channel; ARGV[4]: the index the first chunk must get, or '' for the next one; ARGV[5]: a new epoch;
-- ARGV[6..]: the chunks.
-- Publishes "<first index> <epoch>\n<chunk>\n<chunk>..." and returns the first chunk's index; -1 when
-- the stream failed, -2 when it holds fewer chunks than expected, -3 when it holds other chunks there.
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if ARGV[4] ~= '' then
  local expected, length, count = tonumber(ARGV[4]), redis.call('XLEN', KEYS[1]), #ARGV - 5
  if length < expected then return -2 end
  if length > expected then
    if length < expected + count then return -3 end
    local entries = redis.call(
      'XRANGE', KEYS[1], string.format('0-%d', expected + 1), string.format('0-%d', expected + count)
    )
    if #entries ~= count then return -3 end
    for i, entry in ipairs(entries) do
      if entry[2][2] ~= ARGV[i + 5] then return -3 end
    end
    return expected
  end
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
local first
for i = 6, #ARGV do
  local id = redis.call('XADD', KEYS[1], '0-*', 'd', ARGV[i])
  if not first then first = tonumber(string.match(id, '-(%d+)$')) - 1 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
redis.call(ARGV[2], ARGV[3], tostring(first) .. ' ' .. epoch .. '\n' .. table.concat(ARGV, '\n', 6))
return first
