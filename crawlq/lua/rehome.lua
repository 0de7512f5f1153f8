-- Give a job that sits in the arq queue but in no batch's ready queue (and is not claimed) a place where
-- claim.lua looks: its own batch's ready queue when the batch is known, else the orphans' queue. Such a
-- job was put there by hand, or by a crawlq before batch ready queues; without this it would never run.
-- Run by the reconciler; the common case (every job in its place) writes nothing.
-- KEYS: 1 arq queue, 2 claimed zset, 3 sched zset
-- ARGV: 1 now_ms, 2 how many queue entries to read, 3 batch key prefix ('crawlq:b:'), 4 the orphans' batch name
-- Returns how many jobs were re-homed.
local now, limit, prefix, orphans = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local moved = 0
local ready = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #ready, 2 do
  local job_id, score = ready[i], ready[i + 1]
  if redis.call('ZSCORE', KEYS[2], job_id) == false then
    local batch = string.match(job_id, '^(.*):[^:]*$')
    if batch == nil or redis.call('EXISTS', prefix .. batch .. ':meta') == 0 then batch = orphans end
    local queue = prefix .. batch .. ':queue'
    if redis.call('ZSCORE', queue, job_id) == false then
      redis.call('ZADD', queue, score, job_id)
      local priority = 0
      if batch ~= orphans then priority = redis.call('HGET', prefix .. batch .. ':meta', 'priority') or 0 end
      redis.call('ZADD', KEYS[3], 'NX', priority, batch)
      moved = moved + 1
    end
  end
end
return moved
