-- Register URLs in a batch and enqueue the arq jobs that carry them, one chunk at a time, atomically.
-- KEYS: 1 meta, 2 urls, 3 jobs, 4 arq queue, 5 submitters, 6 batches zset, 7 active set, 8 wake channel,
--       9 the batch's ready queue, 10 sched zset (batch -> priority), 11 this call's reply (crawlq/keys.py)
-- ARGV: 1 batch, 2 now_ms, 3 ttl_s, 4 job_ttl_ms, 5 token, 6 lease_ms, 7 nchunks,
--       8 expect_batch ('1': an earlier call of this submit wrote the batch, so its counters must exist),
--       then per chunk: job_id, payload, score (the URLs are read from the arq payload, msgpack:
--       {f, a = {batch, {{url_id, url, attempts}, ...}}, ...}),
--       and last, arq's job key prefix (crawlq/keys.py)
-- meta fields (mirrored from crawlq/stats.py; tests/test_stats.py checks): cancelled_at, created_at, total, done,
--   priority
local batch, now, ttl, job_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local token, lease, nchunks = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local job_prefix = ARGV[#ARGV]
-- Returns {added, duplicates, jobs}, or {-1, 0, 0} when the batch's counters vanished during the submit
-- (an evicting or flushed Redis): nothing is written, so the batch is not silently re-created smaller;
-- {-2, 0, 0} when the batch was cancelled.
-- A call sent again after its reply was lost (a dropped connection: the client's retry sends the same call)
-- answers what its first run did, and writes nothing more.
local replay = redis.call('GET', KEYS[11])
if replay then
  local a, d, j = string.match(replay, '^(%d+),(%d+),(%d+)$')
  return {tonumber(a), tonumber(d), tonumber(j)}
end
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0} end
if redis.call('HEXISTS', KEYS[1], 'cancelled_at') == 1 then return {-2, 0, 0} end
local added, dups, jobs = 0, 0, 0
local pos = 9
for _ = 1, nchunks do
  local job_id, payload, score = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  local entries = cmsgpack.unpack(payload)['a'][2]
  local ids = {}
  for i, entry in ipairs(entries) do ids[i] = entry[1] end
  local known = redis.call('HMGET', KEYS[2], unpack(ids))
  local fresh, fresh_ids, seen = {}, {}, {}
  for i, entry in ipairs(entries) do
    if known[i] == false and not seen[entry[1]] then
      seen[entry[1]] = true
      fresh[#fresh + 1] = entry[1]
      fresh[#fresh + 1] = entry[2]
      fresh_ids[#fresh_ids + 1] = entry[1]
    else
      dups = dups + 1
    end
  end
  if #fresh_ids > 0 then
    redis.call('HSET', KEYS[2], unpack(fresh))
    redis.call('SET', job_prefix .. job_id, payload, 'PX', job_ttl, 'NX')
    redis.call('ZADD', KEYS[4], 'NX', score, job_id)
    redis.call('ZADD', KEYS[9], 'NX', score, job_id)
    redis.call('HSET', KEYS[3], job_id, table.concat(fresh_ids, ','))
    added = added + #fresh_ids
    jobs = jobs + 1
  end
end
if redis.call('HSETNX', KEYS[1], 'created_at', now) == 1 then
  redis.call('HSET', KEYS[1], 'total', 0, 'done', 0, 'priority', redis.call('ZSCORE', KEYS[10], batch) or 0)
  redis.call('ZADD', KEYS[6], now, batch)
end
if jobs > 0 then redis.call('ZADD', KEYS[10], 'NX', redis.call('HGET', KEYS[1], 'priority') or 0, batch) end
if added > 0 then redis.call('HINCRBY', KEYS[1], 'total', added) end
if token ~= '' then redis.call('ZADD', KEYS[5], now + lease, token) end
redis.call('SADD', KEYS[7], batch)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
redis.call('EXPIRE', KEYS[9], ttl)
redis.call('EXPIRE', KEYS[5], ttl)
if jobs > 0 then redis.call('PUBLISH', KEYS[8], '1') end
redis.call('SET', KEYS[11], added .. ',' .. dups .. ',' .. jobs, 'PX', job_ttl)
return {added, dups, jobs}
