-- Claim up to `want` ready jobs atomically: read the queue head, skip jobs that are running (their
-- in-progress key exists), and take a lease on the rest. Replaces arq's per-job WATCH/EXISTS/ZSCORE/MULTI.
-- A job that was picked up before (arq's retry counter exists: its worker crashed or it was cancelled)
-- is a suspect: it is claimed only by an idle worker, alone, so a poison URL never takes other jobs'
-- tries with it when it crashes its worker again.
-- KEYS: 1 arq queue
-- ARGV: 1 want, 2 lease_ms, 3 read_limit, 4 idle ('1' when the worker runs nothing),
--       5 arq's in-progress key prefix, 6 arq's retry key prefix (both from crawlq/keys.py)
-- Returns: job_id1, score1, suspect1, job_id2, score2, suspect2, ... (suspect: 1 for a suspect, else 0)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local want, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idle = ARGV[4] == '1'
local in_progress, retry = ARGV[5], ARGV[6]
local out = {}
-- the head of the queue is mostly jobs already running (arq removes a job only when it ends): read it
-- in pages, not all `limit` ids at once
local page = math.min(limit, math.max(16, 2 * want))
local offset, stop = 0, false
while not stop and offset < limit do
  local size = math.min(page, limit - offset)
  local ready = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, size)
  for i = 1, #ready, 2 do
    if #out >= 3 * want then stop = true break end
    local job_id = ready[i]
    if redis.call('EXISTS', in_progress .. job_id) == 0 then
      local suspect = redis.call('EXISTS', retry .. job_id) == 1
      if not suspect or (idle and #out == 0) then
        redis.call('SET', in_progress .. job_id, '1', 'PX', lease)
        out[#out + 1] = job_id
        out[#out + 1] = ready[i + 1]
        out[#out + 1] = suspect and 1 or 0
        if suspect then stop = true break end
      end
    end
  end
  if #ready < 2 * size then break end
  offset = offset + size
end
return out
