-- retry.lua: put a FAILED task back in its queue by hand, with a fresh retry budget.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id
-- Returns {'ok', <task hash>} or {'err', 'task_not_found' | 'invalid_state'}.
local id = ARGV[5]
local tk = tkey(id)
local h = redis.call('HMGET', tk, 'status', 'caps', 'prio', 'seq', 'attempt', 'max_retries')
if not h[1] then return { 'err', 'task_not_found' } end
if h[1] ~= 'failed' then return { 'err', 'invalid_state' } end
redis.call('HSET', tk, 'status', 'pending', 'error', '', 'finished', '', 'agent', '',
  'allowed', tonumber(h[5]) + 1 + tonumber(h[6]))
redis.call('ZREM', B .. 'done', id)
enqueue(id, h[2], h[3], h[4])
move_index(id, 'failed', 'pending', h[4])
publish_ready()
return { 'ok', flat_hash(tk) }
