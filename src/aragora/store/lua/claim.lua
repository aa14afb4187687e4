-- claim.lua: lease the best pending task the agent may run.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  agent id         ARGV[6]  fresh lease token
-- Returns {'task', <task hash>}, {'none', ms until the next delayed task or -1},
-- or {'err', 'agent_not_found'}.
-- Cost: one queue head per capability set in use, O(log n) each; no scan of tasks or agents.
local agent, lease = ARGV[5], ARGV[6]
local a = redis.call('HMGET', akey(agent), 'caps', 'max', 'offline', 'draining')
if not a[1] then return { 'err', 'agent_not_found' } end
if a[3] == '1' or a[4] == '1' then return { 'none', -1 } end
if redis.call('SCARD', B .. 'at:' .. agent) >= tonumber(a[2]) then return { 'none', -1 } end
if not br_peek(agent) then return { 'none', -1 } end
local max_running = tonumber(redis.call('HGET', B .. 'limits', 'max_running') or '')
if max_running and redis.call('ZCARD', B .. 'running') >= max_running then return { 'none', -1 } end

promote_due(100)
local mine = {}
for c in string.gmatch(a[1], '[^,]+') do mine[c] = true end
local best_id, best_score, best_caps
for _, capset in ipairs(redis.call('SMEMBERS', B .. 'queues')) do
  local fits = true
  for c in string.gmatch(capset, '[^,]+') do
    if not mine[c] then fits = false; break end
  end
  if fits then
    local head = redis.call('ZRANGE', qkey(capset), 0, 0, 'WITHSCORES')
    if head[1] then
      local score = tonumber(head[2])
      if best_score == nil or score < best_score then best_id, best_score, best_caps = head[1], score, capset end
    else
      redis.call('SREM', B .. 'queues', capset)
    end
  end
end
if best_id == nil then
  local nxt = redis.call('ZRANGE', B .. 'delayed', 0, 0, 'WITHSCORES')
  if nxt[1] then return { 'none', math.max(tonumber(nxt[2]) - NOW, 0) } end
  return { 'none', -1 }
end

unqueue(best_id, best_caps)
br_admit(agent)
local tk = tkey(best_id)
local h = redis.call('HMGET', tk, 'timeout_ms', 'seq')
local expires = NOW + tonumber(h[1])
redis.call('HINCRBY', tk, 'attempt', 1)
redis.call('HSET', tk, 'status', 'running', 'lease', lease, 'agent', agent, 'started', NOW,
  'lease_exp', expires, 'avail', '')
redis.call('ZADD', B .. 'running', expires, best_id)
redis.call('SADD', B .. 'at:' .. agent, best_id)
move_index(best_id, 'pending', 'running', h[2])
return { 'task', flat_hash(tk) }
