-- The cluster-wide per-host gate: release finished leases, then grant new ones, in one atomic call.
-- KEYS: host state hash / host leases zset, in pairs (2i-1, 2i) for host i
-- ARGV: 1 (unused: the server's clock is used), 2 lease_ttl_ms, 3 cooldown_base_ms, 4 cooldown_max_ms,
--       5 nrelease, 6 nacquire, 7 retry_after_max_ms, 8 delay margin (fraction of the delay),
--   releases: host index, lease id, outcome ('ok' | 'throttle' | 'other'), retry_after_ms   (4 each)
--   acquires: host index, want, limit, delay_ms, lease prefix                               (5 each)
-- Returns per acquire: granted, wait_ms (how long until asking again is worthwhile)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
local base, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local nrel, nacq = tonumber(ARGV[5]), tonumber(ARGV[6])
local after_cap, margin = tonumber(ARGV[7]), tonumber(ARGV[8])
local pos = 9
-- group releases by host: one ZREM per host, one penalty read per host
local by_host, order = {}, {}
for _ = 1, nrel do
  local h, lease, outcome, after = tonumber(ARGV[pos]), ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  pos = pos + 4
  local group = by_host[h]
  if group == nil then
    group = {leases = {}, throttle = false, after = 0, ok = false}
    by_host[h] = group
    order[#order + 1] = h
  end
  group.leases[#group.leases + 1] = lease
  if outcome == 'throttle' then
    group.throttle = true
    group.after = math.max(group.after, after)
  elseif outcome == 'ok' then
    group.ok = true
  end
end
for _, h in ipairs(order) do
  local group = by_host[h]
  local state, leases = KEYS[2 * h - 1], KEYS[2 * h]
  redis.call('ZREM', leases, unpack(group.leases))
  if group.throttle or group.ok then
    local st = redis.call('HMGET', state, 'penalty_ms', 'cooldown_until')
    local penalty, until_ms = tonumber(st[1] or '0'), tonumber(st[2] or '0')
    if group.throttle then
      -- a new throttle event doubles the penalty; more 429/503s during the same cooldown only extend it
      -- to their Retry-After
      local wait = math.min(group.after, after_cap)
      if until_ms <= now then
        penalty = math.min(cap, math.max(base, penalty * 2))
        wait = math.max(wait, penalty)
      end
      redis.call('HSET', state, 'penalty_ms', penalty, 'cooldown_until', math.max(until_ms, now + wait))
      redis.call('PEXPIRE', state, 86400000)
    elseif penalty > 0 then
      penalty = math.floor(penalty / 2)
      if penalty < base / 4 then penalty = 0 end
      redis.call('HSET', state, 'penalty_ms', penalty)
    end
  end
end
local out = {}
for _ = 1, nacq do
  local h, want, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  local delay, prefix = tonumber(ARGV[pos + 3]), ARGV[pos + 4]
  pos = pos + 5
  local state, leases = KEYS[2 * h - 1], KEYS[2 * h]
  local granted, wait = 0, 0
  local st = redis.call('HMGET', state, 'cooldown_until', 'next_at')
  local cooldown, next_at = tonumber(st[1] or '0'), tonumber(st[2] or '0')
  if cooldown > now then
    wait = cooldown - now
  elseif delay > 0 and next_at > now then
    wait = next_at - now
  else
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    local free = limit - redis.call('ZCARD', leases)
    granted = math.max(0, math.min(want, free))
    if delay > 0 then granted = math.min(granted, 1) end
    if granted > 0 then
      local members = {}
      for i = 1, granted do
        members[#members + 1] = now + ttl
        members[#members + 1] = prefix .. ':' .. i
      end
      redis.call('ZADD', leases, unpack(members))
      redis.call('PEXPIRE', leases, ttl)
      if delay > 0 then
        redis.call('HSET', state, 'next_at', now + delay + math.floor(delay * margin))
        redis.call('PEXPIRE', state, 86400000)
      end
    end
    if granted < want then
      if delay > 0 then wait = delay else wait = -1 end
    end
  end
  out[#out + 1] = granted
  out[#out + 1] = wait
end
return out
