-- fail.lua: the current attempt failed; retry after backoff or end FAILED.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id   ARGV[6]  lease token   ARGV[7]  error text   ARGV[8]  '1' retryable, '0' not
-- Returns {'ok', <task hash>} or {'err', 'task_not_found' | 'cancelled' | 'lease_lost'}.
local id, lease = ARGV[5], ARGV[6]
local h = redis.call('HMGET', tkey(id), 'status', 'lease')
if not h[1] then return { 'err', 'task_not_found' } end
if h[1] == 'cancelled' then return { 'err', 'cancelled' } end
if h[1] ~= 'running' or h[2] ~= lease then return { 'err', 'lease_lost' } end
fail_attempt(id, ARGV[7], ARGV[8] == '1')
return { 'ok', flat_hash(tkey(id)) }
