-- counts.lua: how many tasks of the workspace are in each place, on the store clock.
-- KEYS[1]  workspace base (see _lib.lua)
-- Returns {pending, running, completed, failed, cancelled, delayed}; pending includes the
-- delayed tasks, delayed counts those whose backoff has not ended yet.
local out = {}
for _, status in ipairs({ 'pending', 'running', 'completed', 'failed', 'cancelled' }) do
  out[#out + 1] = redis.call('ZCARD', B .. 'idx:' .. status)
end
out[#out + 1] = redis.call('ZCOUNT', B .. 'delayed', '(' .. NOW, '+inf')
return out
