-- Claim up to `want` ready jobs atomically, by batch priority, round-robin between batches of equal priority.
-- Every job sits in the arq queue (scored by run time; arq removes it when it ends) and, until claimed, in its
-- batch's ready queue (crawlq:b:{batch}:queue, same score). The script reads the batch queues of the highest
-- priority first (crawlq:sched: batch -> priority), skipping paused batches (crawlq:paused; looked at only when
-- not empty), takes a lease on each job it picks (arq's in-progress key), moves it from its batch queue to the
-- claimed set (job -> lease expiry), and so reads only jobs it may claim: its cost grows with the jobs claimed
-- and the batches running, not with the jobs running.
-- A claimed job whose lease lapsed (its worker died, or arq put it back for a retry) goes back to its batch
-- queue: it is looked at when its claimed-set entry expires. A job that was picked up before (arq's retry
-- counter exists) is a suspect: it is claimed only by an idle worker, alone, so a poison URL never takes other
-- jobs' tries with it when it crashes its worker again.
-- KEYS: 1 arq queue, 2 sched zset, 3 paused set, 4 claimed zset, 5 active set, 6 round-robin counter
-- ARGV: 1 want, 2 lease_ms, 3 read_limit (queue entries and lapsed claims read at most per call), 4 idle ('1' when the worker runs nothing),
--       5 arq's in-progress key prefix, 6 arq's retry key prefix (crawlq.keys.ARQ_*_PREFIX),
--       7 the per-batch key prefix (crawlq.keys.BATCH_PREFIX)
-- Returns: job_id1, score1, suspect1, job_id2, score2, suspect2, ... (suspect: 1 for a suspect, else 0)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local want, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idle = ARGV[4] == '1'
local in_progress, retry, batch_prefix = ARGV[5], ARGV[6], ARGV[7]
local queue, sched, paused, claimed, active, turn = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local function batch_of(job_id) return string.match(job_id, '^(.*):[^:]*$') end
local function batch_queue(batch) return batch_prefix .. batch .. ':queue' end

-- claims whose lease entry is due: still leased (renewed) -> move the entry; lapsed -> back to the batch queue
for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', claimed, '-inf', now, 'LIMIT', 0, limit)) do
  local ttl = redis.call('PTTL', in_progress .. job_id)
  if ttl > 0 then
    redis.call('ZADD', claimed, now + ttl, job_id)
  else
    redis.call('ZREM', claimed, job_id)
    local score, batch = redis.call('ZSCORE', queue, job_id), batch_of(job_id)
    if score and batch then
      redis.call('ZADD', batch_queue(batch), score, job_id)
      redis.call('ZADD', sched, 'NX', 0, batch)
    end
  end
end

local out = {}
local stop = false

local budget = limit  -- queue entries read at most (entries dropped on the way cost reads)
local function head(batch)
  local n = math.min(want + 4, budget)
  if n <= 0 then return {} end
  local ids = redis.call('ZRANGEBYSCORE', batch_queue(batch), '-inf', now, 'LIMIT', 0, n)
  budget = budget - #ids
  return ids
end

-- claim the next job of a batch from its queue head (`candidate.ids`, read again when used up);
-- drops entries whose job is gone or already claimed; false when it has none to claim
local function pick(candidate)
  local batch, ready = candidate.batch, candidate.ids
  local bq = batch_queue(batch)
  while true do
    if #ready == 0 then
      if candidate.skipped > 0 then return false end  -- the rest are suspects this worker may not take now
      ready = head(batch)
      candidate.ids = ready
      if #ready == 0 then return false end
    end
    local job_id = table.remove(ready, 1)
    local score = redis.call('ZSCORE', queue, job_id)
    if not score then
      redis.call('ZREM', bq, job_id)
    elseif redis.call('EXISTS', in_progress .. job_id) == 1 then
      redis.call('ZREM', bq, job_id)
      redis.call('ZADD', claimed, 'NX', now, job_id)
    else
      local suspect = redis.call('EXISTS', retry .. job_id) == 1
      if not suspect or (idle and #out == 0) then
        redis.call('ZREM', bq, job_id)
        redis.call('SET', in_progress .. job_id, '1', 'PX', lease)
        redis.call('ZADD', claimed, now + lease, job_id)
        out[#out + 1] = job_id
        out[#out + 1] = score
        out[#out + 1] = suspect and 1 or 0
        if suspect then stop = true end
        return true
      end
      candidate.skipped = candidate.skipped + 1
    end
  end
end

-- batches by priority (highest first), paused ones left out
local any_paused = redis.call('SCARD', paused) > 0
local levels = {}
local entries = redis.call('ZREVRANGE', sched, 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local batch, priority = entries[i], entries[i + 1]
  if not (any_paused and redis.call('SISMEMBER', paused, batch) == 1) then
    if #levels == 0 or levels[#levels].priority ~= priority then
      levels[#levels + 1] = {priority = priority, batches = {}}
    end
    table.insert(levels[#levels].batches, batch)
  end
end

for _, level in ipairs(levels) do
  if stop or #out >= 3 * want then break end
  local batches = level.batches
  local first = 0
  if #batches > 1 then first = redis.call('INCR', turn) % #batches end
  local ready = {}
  for i = 1, #batches do
    local batch = batches[(first + i - 1) % #batches + 1]
    local ids = head(batch)
    if #ids > 0 then
      ready[#ready + 1] = {batch = batch, ids = ids, skipped = 0}
    elseif redis.call('EXISTS', batch_queue(batch)) == 0 and redis.call('SISMEMBER', active, batch) == 0 then
      redis.call('ZREM', sched, batch)  -- a finished (or never started) batch leaves the schedule
    end
  end
  -- one job per batch per round, until enough are claimed or the level has none ready
  local progress = true
  while progress and not stop and #out < 3 * want do
    progress = false
    for _, candidate in ipairs(ready) do
      if stop or #out >= 3 * want then break end
      if pick(candidate) then progress = true end
    end
  end
end
return out
