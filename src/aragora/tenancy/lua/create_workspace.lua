-- create_workspace.lua: create a workspace record and list its name, in one step.
--
-- KEYS[1]  the workspace record, a hash "<prefix>{tenancy}:workspace:<name>" with
--          fields name, plan, created (ms on the store clock) and "q.<quota>" for each
--          quota override (a decimal, or "none" for unlimited)
-- KEYS[2]  the set of every workspace name, "<prefix>{tenancy}:workspaces"
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  workspace name
-- ARGV[3]  plan
-- ARGV[4..] quota overrides as pairs: quota name, value
--
-- Returns {"err", "exists"} if the record exists (nothing changes), else
-- {"ok", created_ms}.

if redis.call('EXISTS', KEYS[1]) == 1 then return {'err', 'exists'} end
local t = redis.call('TIME')
local now = string.format('%d',
  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'plan', ARGV[3], 'created', now)
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'q.' .. ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[2])
return {'ok', now}
