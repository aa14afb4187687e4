-- transition.lua: move one alert to firing or resolved, unless it is there already.
--
-- KEYS[1]  hash: the alert's state, "<prefix>{alerts}:a:<alert key>"
-- KEYS[2]  zset: keys of firing condition alerts -> fired time, "<prefix>{alerts}:firing"
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  target: 'firing' or 'resolved'
-- ARGV[3]  observed at (ms): store time at which the caller began reading the facts
--          behind this transition. A transition observed before the alert's last one is
--          stale (older facts) and refused, so a slow evaluator never undoes a newer one.
-- ARGV[4]  the alert key
-- ARGV[5]  retention (ms) of event alerts and of resolved alerts
-- ARGV[6..11]  'firing' only: kind, workspace ("" for none), severity, summary,
--          details (JSON, stored as given), '1' for an event alert (fires once, never
--          resolves, forgotten after the retention) or '0' for a condition alert
--
-- Returns {1, flat hash of the new state} if this call made the transition, else {0}.
-- Hash fields: key, kind, ws, severity, summary, details, status, fired and resolved
-- (ms; resolved is "" while firing), obs (ms of the last transition's facts), once, and
-- expires (ms on the store clock; "" for a firing condition alert). A state past its
-- expiry counts as absent; the key's TTL (same length, server time) only reclaims memory.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local target = ARGV[2]
local observed = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'status', 'obs', 'once', 'expires')
if state[4] and state[4] ~= '' and tonumber(state[4]) <= now then
  state = {false, false, false, false}  -- forgotten on the store clock, whatever the TTL says
end
local status = state[1]

if status == target then return {0} end
if target == 'resolved' and (status ~= 'firing' or state[3] == '1') then return {0} end
if state[2] and observed < tonumber(state[2]) then return {0} end

if target == 'firing' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'key', ARGV[4], 'kind', ARGV[6], 'ws', ARGV[7],
    'severity', ARGV[8], 'summary', ARGV[9], 'details', ARGV[10], 'status', 'firing',
    'fired', now, 'resolved', '', 'obs', observed, 'once', ARGV[11], 'expires', '')
  if ARGV[11] == '1' then
    redis.call('HSET', KEYS[1], 'expires', now + tonumber(ARGV[5]))
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  else
    redis.call('ZADD', KEYS[2], now, ARGV[4])
  end
else
  redis.call('HSET', KEYS[1], 'status', 'resolved', 'resolved', now, 'obs', observed,
    'expires', now + tonumber(ARGV[5]))
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return {1, redis.call('HGETALL', KEYS[1])}
