-- register.lua: create or update an agent and put it in service. Tasks still leased to
-- the same id go back through the failed-attempt path: a process that registers again
-- cannot still be running them.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  agent id   ARGV[6]  capability set   ARGV[7]  model   ARGV[8]  max concurrent tasks
-- ARGV[9]  metadata JSON   ARGV[10] workspace id
-- Returns {'ok', <agent hash>, <leased task ids>} or {'err', 'quota', 'max_agents', limit, current}.
local agent = ARGV[5]
if redis.call('EXISTS', akey(agent)) == 0 then
  local max_agents = tonumber(redis.call('HGET', B .. 'limits', 'max_agents') or '')
  local agents = redis.call('SCARD', B .. 'agentset')
  if max_agents and agents >= max_agents then return { 'err', 'quota', 'max_agents', max_agents, agents } end
end
release_agent_tasks(agent, 'agent re-registered')
redis.call('HSETNX', akey(agent), 'registered', NOW)
redis.call('HSET', akey(agent), 'id', agent, 'ws', ARGV[10], 'caps', ARGV[6], 'model', ARGV[7],
  'max', ARGV[8], 'meta', ARGV[9], 'offline', '0', 'draining', '0', 'last_hb', NOW)
redis.call('SADD', B .. 'agentset', agent)
redis.call('ZADD', B .. 'live', NOW, agent)
publish_ready()
return { 'ok', flat_hash(akey(agent)), {} }
