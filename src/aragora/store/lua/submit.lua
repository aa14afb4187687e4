-- submit.lua: create a task and queue it, or return the task an idempotency key names.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id          ARGV[6]  task type       ARGV[7]  payload JSON
-- ARGV[8]  priority rank    ARGV[9]  capability set (sorted, comma-joined)
-- ARGV[10] timeout ms       ARGV[11] max retries     ARGV[12] idempotency key or ''
-- ARGV[13] metadata JSON    ARGV[14] workspace id    ARGV[15] plaintext payload bytes
-- ARGV[16] cost estimate or ''
-- Returns {'created', created_ms, soft limit crossed 0|1}, {'existing', <task hash>},
-- {'err', 'quota', name, limit, current} or {'err', 'budget', limit, used, estimate}.
local id, idem = ARGV[5], ARGV[12]
if idem ~= '' then
  local existing = redis.call('GET', B .. 'idem:' .. idem)
  if existing then return { 'existing', flat_hash(tkey(existing)) } end
end
local lim = limits()
local payload_bytes = tonumber(ARGV[15])
if lim.max_payload and payload_bytes > lim.max_payload then
  return { 'err', 'quota', 'max_payload_bytes', lim.max_payload, payload_bytes }
end
if lim.max_pending then
  local pending = redis.call('ZCARD', B .. 'idx:pending')
  if pending >= lim.max_pending then return { 'err', 'quota', 'max_pending_tasks', lim.max_pending, pending } end
end
local estimate = tonumber(ARGV[16]) or 0
local p = period_key(lim.period)
if lim.budget then
  local used = spend_used(p)
  if used >= lim.budget or used + estimate > lim.budget then
    return { 'err', 'budget', tostring(lim.budget), tostring(used), tostring(estimate) }
  end
end
if estimate > 0 then
  redis.call('HINCRBYFLOAT', spend_key(p), 'reserved', estimate)
  redis.call('PEXPIRE', spend_key(p), SPEND_TTL_MS)
end
local seq = redis.call('INCR', B .. 'seq')
redis.call('HSET', tkey(id),
  'id', id, 'ws', ARGV[14], 'type', ARGV[6], 'payload', ARGV[7], 'prio', ARGV[8],
  'status', 'pending', 'caps', ARGV[9], 'attempt', 0, 'allowed', tonumber(ARGV[11]) + 1,
  'max_retries', ARGV[11], 'timeout_ms', ARGV[10], 'created', NOW, 'errors', '[]',
  'idem', idem, 'meta', ARGV[13], 'seq', seq, 'est', ARGV[16], 'rsv', estimate, 'bper', p)
enqueue(id, ARGV[9], ARGV[8], seq)
redis.call('ZADD', B .. 'idx:all', seq, id)
move_index(id, nil, 'pending', seq)
if idem ~= '' then redis.call('SET', B .. 'idem:' .. idem, id) end
publish_ready()
return { 'created', NOW, soft_crossed(p, lim) }
