-- reap.lua: one bounded reaping pass over a workspace. Idempotent: running it on many
-- instances at once only repeats work that finds nothing left to do.
--   1. agents silent for longer than the heartbeat timeout go OFFLINE; their tasks go
--      through the failed-attempt path ("agent offline");
--   2. running tasks past their lease expiry go through it too ("timed out");
--   3. delayed tasks whose backoff ended become claimable;
--   4. terminal tasks older than the result TTL are deleted with their idempotency key.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  heartbeat timeout ms   ARGV[6]  result TTL ms   ARGV[7]  batch size
-- Returns {agents_offline, requeued, failed, promoted, expired, more (1 if a batch was full)}.
local limit = tonumber(ARGV[7])
local offline, requeued, failed, promoted, expired, more = 0, 0, 0, 0, 0, 0

local silent = redis.call('ZRANGEBYSCORE', B .. 'live', '-inf', '(' .. (NOW - tonumber(ARGV[5])), 'LIMIT', 0, limit)
if #silent == limit then more = 1 end
for _, agent in ipairs(silent) do
  redis.call('ZREM', B .. 'live', agent)
  if redis.call('EXISTS', akey(agent)) == 1 then
    redis.call('HSET', akey(agent), 'offline', '1')
    offline = offline + 1
    local r, f = release_agent_tasks(agent, 'agent offline')
    requeued, failed = requeued + r, failed + f
  end
end

local overdue = redis.call('ZRANGEBYSCORE', B .. 'running', '-inf', NOW, 'LIMIT', 0, limit)
if #overdue == limit then more = 1 end
for _, id in ipairs(overdue) do
  local timeout_ms = tonumber(redis.call('HGET', tkey(id), 'timeout_ms') or '0')
  local message = 'timed out after ' .. (timeout_ms / 1000) .. 's'
  if fail_attempt(id, message, true) == 'requeued' then requeued = requeued + 1 else failed = failed + 1 end
end

promoted = promote_due(limit)
if promoted == limit then more = 1 end
if promoted > 0 then publish_ready() end

local old = redis.call('ZRANGEBYSCORE', B .. 'done', '-inf', NOW - tonumber(ARGV[6]), 'LIMIT', 0, limit)
if #old == limit then more = 1 end
for _, id in ipairs(old) do
  local h = redis.call('HMGET', tkey(id), 'idem', 'status')
  if h[1] and h[1] ~= '' and redis.call('GET', B .. 'idem:' .. h[1]) == id then
    redis.call('DEL', B .. 'idem:' .. h[1])
  end
  redis.call('DEL', tkey(id))
  redis.call('ZREM', B .. 'done', id)
  redis.call('ZREM', B .. 'idx:all', id)
  if h[2] then redis.call('ZREM', B .. 'idx:' .. h[2], id) end
  expired = expired + 1
end
return { offline, requeued, failed, promoted, expired, more }
