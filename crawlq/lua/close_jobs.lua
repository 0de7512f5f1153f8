-- Remove a cancelled batch's queued jobs, so that no worker fetches them: a job not running (no in-progress
-- key) leaves the arq queue, its payload, the batch's ready queue and the batch's job table, atomically.
-- A running job is left alone: its URLs all have results by now, so its commits add nothing, and it closes
-- its own row when it ends.
-- KEYS: 1 arq queue, 2 the batch's ready queue, 3 the batch's job table
-- ARGV: job ids
-- Returns the number of jobs removed.
local removed = 0
for _, job_id in ipairs(ARGV) do
  if redis.call('EXISTS', 'arq:in-progress:' .. job_id) == 0 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('ZREM', KEYS[2], job_id)
    redis.call('DEL', 'arq:job:' .. job_id)
    removed = removed + redis.call('HDEL', KEYS[3], job_id)
  end
end
return removed
