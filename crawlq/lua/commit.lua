-- Commit URL results (first write wins), hand URLs to new jobs, and complete the batch, atomically.
-- KEYS: 1 meta, 2 urls, 3 results, 4 jobs, 5 arq queue, 6 submitters, 7 active set, 8 stats_all, 9 events channel
-- ARGV: 1 batch, 2 now_ms, 3 ttl_s, 4 job_ttl_ms, 5 done_job, 6 require_job (1/0), 7 token,
--       8 results: msgpack list of {id, record, ok (1/0), status (0 = none), error ('' = none),
--                  latency_ms (< 0 = none), bucket, bytes, attempts}, or ''
--       9 ndeferrals, then deferrals: job_id, payload, score, ids (comma separated)  (4 each)
local batch, now, ttl, job_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local done_job, require_job, token = ARGV[5], ARGV[6] == '1', ARGV[7]
local rows = {}
if ARGV[8] ~= '' then rows = cmsgpack.unpack(ARGV[8]) end
local nres, ndef = #rows, tonumber(ARGV[9])
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if require_job and done_job ~= '' and redis.call('HEXISTS', KEYS[4], done_job) == 0 then return {-2, 0} end

local added = 0
if nres > 0 then
  local ids = {}
  for i = 1, nres do ids[i] = rows[i][1] end
  local known = redis.call('HMGET', KEYS[2], unpack(ids))
  local have = redis.call('HMGET', KEYS[3], unpack(ids))
  local writes, counts, seen = {}, {}, {}
  local latency_sum = 0
  local function bump(field, by) counts[field] = (counts[field] or 0) + by end
  for i = 1, nres do
    local row = rows[i]
    local id = row[1]
    if known[i] ~= false and have[i] == false and not seen[id] then
      seen[id] = true
      writes[#writes + 1] = id
      writes[#writes + 1] = row[2]
      added = added + 1
      bump('done', 1)
      if row[3] == 1 then bump('succeeded', 1) else bump('failed', 1) end
      if row[4] ~= 0 then bump('s:' .. row[4], 1) end
      if row[5] ~= '' then bump('e:' .. row[5], 1) end
      if row[6] >= 0 then
        latency_sum = latency_sum + row[6]
        bump('latency_n', 1)
        bump('h:' .. row[7], 1)
      end
      bump('bytes', row[8])
      bump('attempts', row[9])
    end
  end
  if added > 0 then
    redis.call('HSET', KEYS[3], unpack(writes))
    redis.call('EXPIRE', KEYS[3], ttl)
    for field, by in pairs(counts) do
      redis.call('HINCRBY', KEYS[1], field, by)
      redis.call('HINCRBY', KEYS[8], field, by)
    end
    if latency_sum > 0 then
      redis.call('HINCRBYFLOAT', KEYS[1], 'latency_sum_ms', latency_sum)
      redis.call('HINCRBYFLOAT', KEYS[8], 'latency_sum_ms', latency_sum)
    end
  end
end

local pos = 9
for _ = 1, ndef do
  local job_id, payload, score, csv = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4]
  pos = pos + 4
  local ids = {}
  for id in string.gmatch(csv, '[^,]+') do ids[#ids + 1] = id end
  local have = redis.call('HMGET', KEYS[3], unpack(ids))
  local open = {}
  for i = 1, #ids do if have[i] == false then open[#open + 1] = ids[i] end end
  if #open > 0 then
    redis.call('SET', 'arq:job:' .. job_id, payload, 'PX', job_ttl + math.max(0, tonumber(score) - now), 'NX')
    redis.call('ZADD', KEYS[5], 'NX', score, job_id)
    redis.call('HSET', KEYS[4], job_id, table.concat(open, ','))
  end
end
if done_job ~= '' then redis.call('HDEL', KEYS[4], done_job) end
if token ~= '' then redis.call('ZREM', KEYS[6], token) end

local completed = 0
local state = redis.call('HMGET', KEYS[1], 'total', 'done', 'finished_at')
if state[3] == false and tonumber(state[2] or 0) >= tonumber(state[1] or 0) then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if redis.call('ZCARD', KEYS[6]) == 0 then
    redis.call('HSET', KEYS[1], 'finished_at', now)
    redis.call('HINCRBY', KEYS[1], 'completions', 1)
    redis.call('SREM', KEYS[7], batch)
    for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
    redis.call('PUBLISH', KEYS[9], 'complete')
    completed = 1
  end
end
return {added, completed}
