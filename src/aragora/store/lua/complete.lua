-- complete.lua: record the result of the current attempt, exactly once.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id   ARGV[6]  lease token   ARGV[7]  result JSON   ARGV[8]  cost or ''
-- Returns {'ok', <task hash>, soft limit crossed 0|1}
-- or {'err', 'task_not_found' | 'cancelled' | 'lease_lost'}.
local id, lease = ARGV[5], ARGV[6]
local tk = tkey(id)
local h = redis.call('HMGET', tk, 'status', 'lease', 'agent', 'seq')
if not h[1] then return { 'err', 'task_not_found' } end
if h[1] == 'cancelled' then return { 'err', 'cancelled' } end
if h[1] ~= 'running' or h[2] ~= lease then return { 'err', 'lease_lost' } end
redis.call('HSET', tk, 'status', 'completed', 'result', ARGV[7], 'cost', ARGV[8],
  'finished', NOW, 'lease', '', 'lease_exp', '')
redis.call('ZREM', B .. 'running', id)
redis.call('SREM', B .. 'at:' .. h[3], id)
redis.call('ZADD', B .. 'done', NOW, id)
move_index(id, 'running', 'completed', h[4])
br_record(h[3], true)
local model = redis.call('HGET', akey(h[3]), 'model') or 'unknown'
local soft = budget_settle(id, tonumber(ARGV[8]), model)
publish_done(id)
-- The freed slot matters only to tasks already waiting (delayed ones are timed by
-- their claimers), so an empty workspace wakes no one.
if redis.call('EXISTS', B .. 'queues') == 1 then publish_ready() end
return { 'ok', flat_hash(tk), soft }
