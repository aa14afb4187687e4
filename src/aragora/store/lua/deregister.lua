-- deregister.lua: remove an agent; its leased tasks go back through the failed-attempt path.
-- Its breaker is kept, so registering the same id again does not reset an open breaker.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  agent id
-- Returns {'ok'} or {'err', 'agent_not_found'}.
local agent = ARGV[5]
if redis.call('EXISTS', akey(agent)) == 0 then return { 'err', 'agent_not_found' } end
release_agent_tasks(agent, 'agent deregistered')
redis.call('DEL', akey(agent), B .. 'at:' .. agent, B .. 'ac:' .. agent)
redis.call('SREM', B .. 'agentset', agent)
redis.call('ZREM', B .. 'live', agent)
return { 'ok' }
