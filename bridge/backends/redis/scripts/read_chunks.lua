-- Reads a page of a run's stream: in batches of 100, stopping before the chunk that would pass
-- the byte bound (the first is always returned), so neither Redis nor the reader ever holds more
-- than a bounded page.
-- KEYS[1]: the run's stream.
-- ARGV[1]: the first entry id; ARGV[2]: the most chunks; ARGV[3]: the most bytes.
-- Returns the chunks, in order.
local page, size, start = {}, 0, ARGV[1]
local wanted, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
while #page < wanted do
  local batch = math.min(100, wanted - #page)
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', batch)
  for _, entry in ipairs(entries) do
    local data = entry[2][2]
    if #page > 0 and size + #data > budget then return page end
    size = size + #data
    page[#page + 1] = data
  end
  if #entries < batch then break end
  start = '(' .. entries[#entries][1]
end
return page
