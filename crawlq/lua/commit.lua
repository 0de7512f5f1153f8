-- Commit URL results (first write wins), hand URLs to new jobs, and complete the batch, atomically.
-- The caller counts its results (done, succeeded, s:<status>, h:<bucket>, ...) and sends the sums; they
-- apply only if every result is new. If one is not (already recorded, or not in the batch), nothing is
-- written and the reply says which are new, so the caller counts those and calls again: a result and
-- its counts are recorded together, once.
-- KEYS: 1 meta, 2 urls, 3 results, 4 jobs, 5 arq queue, 6 submitters, 7 active set, 8 stats_all, 9 events channel,
--       10 the batch's ready queue
-- ARGV: 1 batch, 2 now_ms, 3 ttl_s, 4 job_ttl_ms, 5 done_job (job ids to close, comma separated; with
--       require_job a single id), 6 require_job (1/0), 7 token,
--       8 nresults, 9 ncounts, 10 latency_sum_ms,
--       then ncounts pairs: counter field, increment; then nresults pairs: url id, record;
--       then ndeferrals, then deferrals: job_id, payload, score, ids (comma separated)  (4 each),
--       and last, arq's job key prefix (crawlq/keys.py)
-- meta fields (mirrored from crawlq/stats.py; tests/test_stats.py checks): latency_sum_ms, total, done, finished_at,
--   completions
-- Returns {added, completed}; {-1, 0} unknown batch; {-2, 0} job no longer open;
--         {-3, 0, new_1, ..., new_n} (1/0 per result) when some result is not new.
local batch, now, ttl, job_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local done_job, require_job, token = ARGV[5], ARGV[6] == '1', ARGV[7]
local nres, ncounts, latency_sum = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local job_prefix = ARGV[#ARGV]
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if require_job and done_job ~= '' and redis.call('HEXISTS', KEYS[4], done_job) == 0 then return {-2, 0} end

local counts_at = 11
local results_at = counts_at + 2 * ncounts
local pos = results_at + 2 * nres
if nres > 0 then
  local ids = {}
  for i = 1, nres do ids[i] = ARGV[results_at + 2 * (i - 1)] end
  local known = redis.call('HMGET', KEYS[2], unpack(ids))
  local have = redis.call('HMGET', KEYS[3], unpack(ids))
  local all_new = true
  for i = 1, nres do
    if known[i] == false or have[i] ~= false then all_new = false break end
  end
  if not all_new then
    local reply = {-3, 0}
    for i = 1, nres do reply[i + 2] = (known[i] ~= false and have[i] == false) and 1 or 0 end
    return reply
  end
  for first = results_at, pos - 1, 2000 do
    redis.call('HSET', KEYS[3], unpack(ARGV, first, math.min(first + 1999, pos - 1)))
  end
  redis.call('EXPIRE', KEYS[3], ttl)
  for i = counts_at, results_at - 1, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[8], ARGV[i], ARGV[i + 1])
  end
  if latency_sum > 0 then
    redis.call('HINCRBYFLOAT', KEYS[1], 'latency_sum_ms', ARGV[10])
    redis.call('HINCRBYFLOAT', KEYS[8], 'latency_sum_ms', ARGV[10])
  end
end

local ndef = tonumber(ARGV[pos])
for _ = 1, ndef do
  local job_id, payload, score, csv = ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3], ARGV[pos + 4]
  pos = pos + 4
  local ids = {}
  for id in string.gmatch(csv, '[^,]+') do ids[#ids + 1] = id end
  local have = redis.call('HMGET', KEYS[3], unpack(ids))
  local open = {}
  for i = 1, #ids do if have[i] == false then open[#open + 1] = ids[i] end end
  if #open > 0 then
    redis.call('SET', job_prefix .. job_id, payload, 'PX', job_ttl + math.max(0, tonumber(score) - now), 'NX')
    redis.call('ZADD', KEYS[5], 'NX', score, job_id)
    redis.call('ZADD', KEYS[10], 'NX', score, job_id)
    redis.call('HSET', KEYS[4], job_id, table.concat(open, ','))
  end
end
if ndef > 0 then redis.call('EXPIRE', KEYS[10], ttl) end
if done_job ~= '' then
  local jobs = {}
  for job in string.gmatch(done_job, '[^,]+') do jobs[#jobs + 1] = job end
  redis.call('HDEL', KEYS[4], unpack(jobs))
end
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
return {nres, completed}
