-- heartbeat.lua: an agent is alive; bring it back if it was OFFLINE, set or clear DRAINING,
-- and hand it the ids of its tasks cancelled while it ran them.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  agent id   ARGV[6]  '1' drain, '0' resume, '' leave as is
-- Returns {'ok', <agent hash>, <leased task ids>, <cancelled task ids>} or {'err', 'agent_not_found'}.
local agent = ARGV[5]
local ak = akey(agent)
local h = redis.call('HMGET', ak, 'offline', 'draining')
if not h[1] then return { 'err', 'agent_not_found' } end
redis.call('HSET', ak, 'last_hb', NOW, 'offline', '0')
if ARGV[6] ~= '' then redis.call('HSET', ak, 'draining', ARGV[6]) end
redis.call('ZADD', B .. 'live', NOW, agent)
if h[1] == '1' or (h[2] == '1' and ARGV[6] == '0') then publish_ready() end
local cancelled = redis.call('SMEMBERS', B .. 'ac:' .. agent)
if #cancelled > 0 then redis.call('DEL', B .. 'ac:' .. agent) end
return { 'ok', flat_hash(ak), redis.call('SMEMBERS', B .. 'at:' .. agent), cancelled }
