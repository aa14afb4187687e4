-- claim.lua: lease the best pending tasks the agent may run, up to one per lease token.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  agent id         ARGV[6..] one fresh lease token per task wanted (k >= 1)
-- Returns {'tasks', {<task hash>, ...}}, {'none', ms until the next delayed task or -1},
-- or {'err', 'agent_not_found'}. The whole batch is one atomic step; every task taken
-- is the best one left at that moment, so a batch equals k claims in a row.
-- Cost: one queue head per capability set in use per task, O(log n) each; no scan of
-- tasks or agents.
local agent = ARGV[5]
local a = redis.call('HMGET', akey(agent), 'caps', 'max', 'offline', 'draining')
if not a[1] then return { 'err', 'agent_not_found' } end
if a[3] == '1' or a[4] == '1' then return { 'none', -1 } end
local capacity = tonumber(a[2]) - redis.call('SCARD', B .. 'at:' .. agent)
if capacity <= 0 then return { 'none', -1 } end
local max_running = tonumber(redis.call('HGET', B .. 'limits', 'max_running') or '')

promote_due(100)
local mine = {}
for c in string.gmatch(a[1], '[^,]+') do mine[c] = true end

local function best_head()
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
  return best_id, best_caps
end

local claimed = {}
for i = 6, math.min(#ARGV, 5 + capacity) do
  if not br_peek(agent) then break end
  if max_running and redis.call('ZCARD', B .. 'running') >= max_running then break end
  local id, caps = best_head()
  if id == nil then break end
  unqueue(id, caps)
  br_admit(agent)
  local tk = tkey(id)
  local h = redis.call('HMGET', tk, 'timeout_ms', 'seq')
  local expires = NOW + tonumber(h[1])
  redis.call('HINCRBY', tk, 'attempt', 1)
  redis.call('HSET', tk, 'status', 'running', 'lease', ARGV[i], 'agent', agent, 'started', NOW,
    'lease_exp', expires, 'avail', '')
  redis.call('ZADD', B .. 'running', expires, id)
  redis.call('SADD', B .. 'at:' .. agent, id)
  move_index(id, 'pending', 'running', h[2])
  claimed[#claimed + 1] = flat_hash(tk)
end
if #claimed > 0 then return { 'tasks', claimed } end
local nxt = redis.call('ZRANGE', B .. 'delayed', 0, 0, 'WITHSCORES')
if nxt[1] then return { 'none', math.max(tonumber(nxt[2]) - NOW, 0) } end
return { 'none', -1 }
