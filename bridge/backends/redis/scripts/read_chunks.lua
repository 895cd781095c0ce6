-- Reads a page of a run's stream: in batches of 100, stopping before the chunk that would pass
-- the byte bound (the first is always returned), so neither Redis nor the reader ever holds more
-- than a bounded page; with the stream's epoch and length, read in the same step.
-- KEYS[1]: the run's stream; KEYS[2]: the stream's epoch.
-- ARGV[1]: the first entry id; ARGV[2]: the most chunks (0: only the epoch and length); ARGV[3]: the most bytes.
-- Returns {epoch (nil when none), length, chunk, chunk, ...}, the chunks in order.
local page = {redis.call('GET', KEYS[2]), redis.call('XLEN', KEYS[1])}
local size, start, taken = 0, ARGV[1], 0
local wanted, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
while taken < wanted do
  local batch = math.min(100, wanted - taken)
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', batch)
  for _, entry in ipairs(entries) do
    local data = entry[2][2]
    if taken > 0 and size + #data > budget then return page end
    size = size + #data
    taken = taken + 1
    page[taken + 2] = data
  end
  if #entries < batch then break end
  start = '(' .. entries[#entries][1]
end
return page
