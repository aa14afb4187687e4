-- submit.lua: create a task and queue it, or return the task an idempotency key names.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id          ARGV[6]  task type       ARGV[7]  payload JSON
-- ARGV[8]  priority rank    ARGV[9]  capability set (sorted, comma-joined)
-- ARGV[10] timeout ms       ARGV[11] max retries     ARGV[12] idempotency key or ''
-- ARGV[13] metadata JSON    ARGV[14] workspace id
-- Returns {'created', created_ms} or {'existing', <task hash>}.
local id, idem = ARGV[5], ARGV[12]
if idem ~= '' then
  local existing = redis.call('GET', B .. 'idem:' .. idem)
  if existing then return { 'existing', flat_hash(tkey(existing)) } end
end
local seq = redis.call('INCR', B .. 'seq')
redis.call('HSET', tkey(id),
  'id', id, 'ws', ARGV[14], 'type', ARGV[6], 'payload', ARGV[7], 'prio', ARGV[8],
  'status', 'pending', 'caps', ARGV[9], 'attempt', 0, 'allowed', tonumber(ARGV[11]) + 1,
  'max_retries', ARGV[11], 'timeout_ms', ARGV[10], 'created', NOW, 'errors', '[]',
  'idem', idem, 'meta', ARGV[13], 'seq', seq)
enqueue(id, ARGV[9], ARGV[8], seq)
redis.call('ZADD', B .. 'idx:all', seq, id)
move_index(id, nil, 'pending', seq)
if idem ~= '' then redis.call('SET', B .. 'idem:' .. idem, id) end
publish_ready()
return { 'created', NOW }
