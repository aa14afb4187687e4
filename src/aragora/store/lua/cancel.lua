-- cancel.lua: cancel a pending, delayed or running task.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id
-- Returns {'ok', <task hash>} or {'err', 'task_not_found' | 'invalid_state'}.
local id = ARGV[5]
local tk = tkey(id)
local h = redis.call('HMGET', tk, 'status', 'caps', 'agent', 'seq')
local status = h[1]
if not status then return { 'err', 'task_not_found' } end
if status == 'cancelled' then return { 'ok', flat_hash(tk) } end
if status == 'completed' or status == 'failed' then return { 'err', 'invalid_state' } end
if status == 'pending' then
  unqueue(id, h[2])
  redis.call('ZREM', B .. 'delayed', id)
else
  redis.call('ZREM', B .. 'running', id)
  redis.call('SREM', B .. 'at:' .. h[3], id)
  redis.call('SADD', B .. 'ac:' .. h[3], id)
  br_release(h[3])
  publish_ready()
end
redis.call('HSET', tk, 'status', 'cancelled', 'finished', NOW, 'lease', '', 'lease_exp', '', 'avail', '')
redis.call('ZADD', B .. 'done', NOW, id)
budget_release(id)
move_index(id, status, 'cancelled', h[4])
publish_done(id)
return { 'ok', flat_hash(tk) }
