-- Record one page of a cancelled batch's URLs as `cancelled`, for those without a result (first write wins,
-- as in commit.lua: a worker committing the same URL at the same time is counted once, whichever is first).
-- KEYS: 1 meta, 2 results, 3 stats_all
-- ARGV: 1 ttl_s, 2 ncounts, then ncounts pairs: counter field, increment per URL; then url id, record pairs
-- meta fields (mirrored from crawlq/stats.py; tests/test_stats.py checks): finished_at
-- Returns the number of URLs recorded, -1 for an unknown batch, -2 for a complete one.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return -2 end
local ncounts = tonumber(ARGV[2])
local first = 3 + 2 * ncounts
local added = 0
for i = first, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
if added > 0 then
  for i = 3, first - 1, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1]) * added)
    redis.call('HINCRBY', KEYS[3], ARGV[i], tonumber(ARGV[i + 1]) * added)
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
end
return added
