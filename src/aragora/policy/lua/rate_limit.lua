-- rate_limit.lua: one hit on a GCRA rate limit (generic cell rate algorithm), atomically.
-- Mirrors aragora.policy.ratelimit.gcra: all times are integer microseconds on the
-- store clock, exact in Lua's doubles until the year 2255.
--
-- KEYS[1]  string: the limit's theoretical arrival time (TAT) in us; expires by itself
--          once it lies in the past, when it no longer matters
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  limit: hits allowed per window (>= 1)
-- ARGV[3]  window in us
-- ARGV[4]  cost of this hit (>= 0; 0 only reports)
--
-- Returns {allowed 0/1, remaining hits, retry after us, reset after us}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]) * 1000
local limit = tonumber(ARGV[2])
local interval = math.ceil(tonumber(ARGV[3]) / limit)
local capacity = interval * limit
local cost = tonumber(ARGV[4])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
if new_tat - now > capacity then
  return {0, math.floor((now + capacity - tat) / interval), new_tat - now - capacity, tat - now}
end
if cost > 0 then
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
end
return {1, math.floor((now + capacity - new_tat) / interval), 0, new_tat - now}
