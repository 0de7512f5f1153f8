-- Add the links found on pages to their batch and enqueue jobs for them, atomically: called before the
-- pages' results are committed, so the batch's total grows before its done count can reach it.
-- A page adds its links once (the parents set), a URL joins the batch once (the manifest), and the
-- batch's total never passes the follow options' max_pages (links beyond it are not added).
-- KEYS: 1 meta, 2 urls, 3 jobs, 4 arq queue, 5 found, 6 parents, 7 options, 8 wake channel,
--       9 the batch's ready queue (claim.lua picks jobs there), 10 sched zset (batch -> priority)
-- ARGV: 1 now_ms, 2 ttl_s, 3 job_ttl_ms, 4 nparents,
--       then per parent: parent url id, depth of its links, njobs, then njobs times: job_id, payload, score,
--       and last, the batch's name and arq's job key prefix (crawlq/keys.py)
--       (a page's links are split into jobs of chunk_size; they are read from the arq payloads, msgpack: {f, a = {batch, {{url_id, url, attempts, depth}, ...}}})
-- meta fields (mirrored from crawlq/stats.py; tests/test_stats.py checks): cancelled_at, total, d:, discovered,
--   priority
-- Returns {added, parents}: URLs added, pages whose links were taken (the others had been, or the batch is gone)
local now, ttl, job_ttl, nparents = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local batch_name, job_prefix = ARGV[#ARGV - 1], ARGV[#ARGV]
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
if redis.call('HEXISTS', KEYS[1], 'cancelled_at') == 1 then return {0, 0} end  -- a cancelled batch grows no more
local max_pages = nil
local raw_options = redis.call('GET', KEYS[7])
if raw_options then
  local follow = cjson.decode(raw_options)['follow']
  if type(follow) == 'table' and type(follow['max_pages']) == 'number' then max_pages = follow['max_pages'] end
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or 0)
local added, parents, jobs = 0, 0, 0
local pos = 5
local function add(parent, depth, job_id, payload, score)
  local entries = cmsgpack.unpack(payload)['a'][2]
  local ids = {}
  for i, entry in ipairs(entries) do ids[i] = entry[1] end
  local known = redis.call('HMGET', KEYS[2], unpack(ids))
  local fresh, found, fresh_ids, seen = {}, {}, {}, {}
  for i, entry in ipairs(entries) do
    if max_pages ~= nil and total + #fresh_ids >= max_pages then break end
    if known[i] == false and not seen[entry[1]] then
      seen[entry[1]] = true
      fresh[#fresh + 1] = entry[1]
      fresh[#fresh + 1] = entry[2]
      found[#found + 1] = entry[1]
      found[#found + 1] = depth .. ',' .. parent
      fresh_ids[#fresh_ids + 1] = entry[1]
    end
  end
  if #fresh_ids > 0 then
    redis.call('HSET', KEYS[2], unpack(fresh))
    redis.call('HSET', KEYS[5], unpack(found))
    redis.call('SET', job_prefix .. job_id, payload, 'PX', job_ttl, 'NX')
    redis.call('ZADD', KEYS[4], 'NX', score, job_id)
    redis.call('ZADD', KEYS[9], 'NX', score, job_id)
    redis.call('HSET', KEYS[3], job_id, table.concat(fresh_ids, ','))
    redis.call('HINCRBY', KEYS[1], 'd:' .. depth, #fresh_ids)
    total = total + #fresh_ids
    added = added + #fresh_ids
    jobs = jobs + 1
  end
end

for _ = 1, nparents do
  local parent, depth, njobs = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local take = redis.call('SADD', KEYS[6], parent) == 1
  if take then parents = parents + 1 end
  pos = pos + 3
  for _ = 1, njobs do
    if take then add(parent, depth, ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]) end
    pos = pos + 3
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[1], 'total', added)
  redis.call('HINCRBY', KEYS[1], 'discovered', added)
end
for i = 1, 6 do if i ~= 4 then redis.call('EXPIRE', KEYS[i], ttl) end end
if jobs > 0 then
  redis.call('EXPIRE', KEYS[9], ttl)
  redis.call('ZADD', KEYS[10], 'NX', redis.call('HGET', KEYS[1], 'priority') or 0, batch_name)
  redis.call('PUBLISH', KEYS[8], '1')
end
return {added, parents}
