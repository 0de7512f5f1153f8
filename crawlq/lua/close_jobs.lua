-- Remove a cancelled batch's queued jobs, so that no worker fetches them: a job not running (no in-progress
-- key) leaves the arq queue, its payload, the batch's ready queue and the batch's job table, atomically.
-- A running job is left alone: its URLs all have results by now, so its commits add nothing, and it closes
-- its own row when it ends.
-- KEYS: 1 arq queue, 2 the batch's ready queue, 3 the batch's job table
-- ARGV: 1 arq's in-progress key prefix, 2 arq's job key prefix (crawlq.keys.ARQ_*_PREFIX), then job ids
-- Returns the number of jobs removed.
local in_progress, job_prefix = ARGV[1], ARGV[2]
local removed = 0
for i = 3, #ARGV do
  local job_id = ARGV[i]
  if redis.call('EXISTS', in_progress .. job_id) == 0 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('ZREM', KEYS[2], job_id)
    redis.call('DEL', job_prefix .. job_id)
    removed = removed + redis.call('HDEL', KEYS[3], job_id)
  end
end
return removed
