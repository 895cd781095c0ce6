-- Claims at most one queued run: reads the task streams one at a time, COUNT 1, in the given order.
-- KEYS: the task streams, in the order to try (all share the {queue} hash tag).
-- ARGV[1]: the consumer group; ARGV[2]: the consumer (the worker id).
-- Returns {index of its stream in KEYS, entry id, run id}, or nil when every stream is empty.
for i = 1, #KEYS do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[i], '>')
  if reply and reply[1] then
    local entry = reply[1][2][1]
    local fields = entry[2]
    local run = ''
    for j = 1, #fields, 2 do
      if fields[j] == 'run' then run = fields[j + 1] end
    end
    return {i, entry[1], run}
  end
end
return false
