-- The cluster-wide per-host gate: release leases, then grant new ones, in one atomic call.
-- KEYS: host state hash / host leases zset / host waiters set, in triples (3i-2, 3i-1, 3i) for host i
-- ARGV: 1 a placeholder, sent as 0 (the server's clock is used), 2 lease_ttl_ms, 3 cooldown_base_ms, 4 cooldown_max_ms,
--       5 nrelease, 6 nacquire, 7 retry_after_max_ms, 8 delay margin (fraction of the delay),
--       9 this worker's wake channel, 10 the cooldown channel (every worker listens),
--       11 the prefix of wake channels (a lease id is '<worker id>:<n>:<n>'; its holder's channel is prefix..id)
-- Wake messages: 'f:<host>' a lease of a host you wait for was released; 'w:<host>' another worker waits
-- for a host you hold leases of and holds less than its share (give back those you keep unused). Host names
-- come from the state key.
--   releases: host index, lease id, outcome ('ok' | 'throttle' | 'other'), retry_after_ms   (4 each)
--   acquires: host index, want, limit, delay_ms, lease prefix                               (5 each)
-- Returns per acquire: granted, wait_ms, full. full = 1: the host is at its limit cluster-wide; this
-- worker is registered as a waiter and is told on its wake channel when a lease of the host is
-- released (wait_ms is then the time until the earliest lease expires: the fallback if a holder died).
-- A host in cooldown or delay gives wait_ms > 0 and full = 0.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
local base, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local nrel, nacq = tonumber(ARGV[5]), tonumber(ARGV[6])
local after_cap, margin = tonumber(ARGV[7]), tonumber(ARGV[8])
local channel, cooldown_channel, channel_prefix = ARGV[9], ARGV[10], ARGV[11]
local key_prefix = string.len('crawlq:host:')
local pos = 12
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
  local state, leases, waiters = KEYS[3 * h - 2], KEYS[3 * h - 1], KEYS[3 * h]
  redis.call('ZREM', leases, unpack(group.leases))
  local hostname = string.sub(state, key_prefix + 1)
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
      redis.call('PUBLISH', cooldown_channel, hostname)
    elseif penalty > 0 then
      penalty = math.floor(penalty / 2)
      if penalty < base / 4 then penalty = 0 end
      redis.call('HSET', state, 'penalty_ms', penalty)
    end
  end
  -- workers waiting for a slot of this host: tell them to ask again
  local waiting = redis.call('SMEMBERS', waiters)
  if #waiting > 0 then
    redis.call('DEL', waiters)
    for _, other in ipairs(waiting) do
      redis.call('PUBLISH', other, 'f:' .. hostname)
    end
  end
end
local out = {}
for _ = 1, nacq do
  local h, want, limit = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  local delay, prefix = tonumber(ARGV[pos + 3]), ARGV[pos + 4]
  pos = pos + 5
  local state, leases, waiters = KEYS[3 * h - 2], KEYS[3 * h - 1], KEYS[3 * h]
  local granted, wait, full = 0, 0, 0
  local st = redis.call('HMGET', state, 'cooldown_until', 'next_at')
  local cooldown, next_at = tonumber(st[1] or '0'), tonumber(st[2] or '0')
  if cooldown > now then
    wait = cooldown - now
  elseif delay > 0 and next_at > now then
    wait = next_at - now
  else
    local used = redis.call('ZCARD', leases)
    if used >= limit then
      redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
      used = redis.call('ZCARD', leases)
    end
    granted = math.max(0, math.min(want, limit - used))
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
      if delay > 0 and granted > 0 then
        wait = delay + math.floor(delay * margin)
      else
        full = 1
        redis.call('SADD', waiters, channel)
        redis.call('PEXPIRE', waiters, ttl)
        -- time the fallback by the earliest expiry; if this worker holds less than its fair share of the
        -- host (limit / workers holding or asking, and at least one lease), tell the other holders to share
        -- (they stop reusing leases here and give back those they keep unused). A worker at its share only
        -- waits: two workers with one lease each of a limit-2 host keep reusing them, rather than handing
        -- them back and forth through Redis with every request.
        local holders = redis.call('ZRANGE', leases, 0, -1, 'WITHSCORES')
        local others, mine, count = {}, 0, 1
        wait = ttl
        for i = 1, #holders, 2 do
          wait = math.min(wait, math.max(1, tonumber(holders[i + 1]) - now + 1))
          local holder = string.match(holders[i], '^(.*):%d+:%d+$')
          if holder ~= nil then
            if channel_prefix .. holder == channel then
              mine = mine + 1
            elseif others[holder] == nil then
              others[holder] = true
              count = count + 1
            end
          end
        end
        if mine == 0 or mine < math.floor(limit / count) then
          local host = 'w:' .. string.sub(state, key_prefix + 1)
          for holder in pairs(others) do
            redis.call('PUBLISH', channel_prefix .. holder, host)
          end
        end
      end
    end
  end
  out[#out + 1] = granted
  out[#out + 1] = wait
  out[#out + 1] = full
end
return out
