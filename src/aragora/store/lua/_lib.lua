-- _lib.lua: prepended to every script of the Redis store (see redis.py).
--
-- Conventions shared by all scripts:
--   KEYS[1]  the workspace's key base "<key_prefix>{<workspace_id>}:". Every key a
--            script touches is this base plus a suffix built by the helpers below, so
--            all keys of one workspace share the hash tag {<workspace_id>} and live in
--            one Redis Cluster slot. Keys only known at run time (the task a claim
--            picks, the queues of capability sets) are derived here from KEYS[1].
--   ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
--   ARGV[2]  pub/sub channel of the workspace
--   ARGV[3]  JSON of the settings the rules need (see RedisStore._script_settings)
--   ARGV[4]  random seed for retry jitter
--   ARGV[5..] script-specific, documented in each script's header.
--
-- Layout under the base (all times in ms on the store clock):
--   seq              counter giving each task its FIFO position
--   t:<id>           hash: one task
--   q:<capset>       zset: pending task ids of one capability set, score rank*1e13+seq
--   queues           set: capability sets whose queue may be non-empty
--   delayed          zset: task id -> time its retry backoff ends
--   running          zset: task id -> lease expiry
--   done             zset: terminal task id -> finished time
--   idx:all          zset: every task id -> seq (listing)
--   idx:<status>     zset: task id -> seq, one per status
--   idem:<key>       string: idempotency key -> task id
--   a:<agent>        hash: one agent
--   agentset         set: every agent id
--   live             zset: agent id -> last heartbeat, agents not offline
--   at:<agent>       set: task ids leased to the agent
--   ac:<agent>       set: task ids cancelled while the agent ran them
--   limits           hash: max_agents, max_pending, max_running, max_payload, budget,
--                    period ('daily' | 'monthly'), soft (ratio); absent field = unlimited
--   spend:<period>   hash: reserved, spent, soft_alerted (one period's budget use)
--   spend:<period>:type, spend:<period>:model   hash: spent cost by task type / agent model
--   br:<agent>       hash: the agent's circuit breaker: state, opened, hin, hsucc and a
--                    ring of window buckets b0..b9 = "<bucket index>:<calls>:<failures>"

local B = KEYS[1]
local CHANNEL = ARGV[2]
local CFG = cjson.decode(ARGV[3])
math.randomseed(tonumber(ARGV[4]))

local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
end

local RANK_SCALE = 10000000000000
local BR_SLOTS = 10

local function tkey(id) return B .. 't:' .. id end
local function qkey(capset) return B .. 'q:' .. capset end
local function akey(agent) return B .. 'a:' .. agent end
local function brkey(agent) return B .. 'br:' .. agent end

local function publish_ready() redis.call('PUBLISH', CHANNEL, 'ready') end
-- "done:<id>", followed by " " and the JSON array of the task hash's field/value pairs
-- when the values total at most DONE_INLINE_BYTES: a waiter then needs no read.
local DONE_INLINE_BYTES = 4096
local function publish_done(id)
  local flat = redis.call('HGETALL', tkey(id))
  local size = 0
  for i = 2, #flat, 2 do size = size + #flat[i] end
  if size <= DONE_INLINE_BYTES and #flat > 0 then
    redis.call('PUBLISH', CHANNEL, 'done:' .. id .. ' ' .. cjson.encode(flat))
  else
    redis.call('PUBLISH', CHANNEL, 'done:' .. id)
  end
end

local function move_index(id, old, new, seq)
  if old then redis.call('ZREM', B .. 'idx:' .. old, id) end
  redis.call('ZADD', B .. 'idx:' .. new, seq, id)
end

local function enqueue(id, capset, rank, seq)
  redis.call('ZADD', qkey(capset), tonumber(rank) * RANK_SCALE + tonumber(seq), id)
  redis.call('SADD', B .. 'queues', capset)
end

local function unqueue(id, capset)
  redis.call('ZREM', qkey(capset), id)
  if redis.call('ZCARD', qkey(capset)) == 0 then redis.call('SREM', B .. 'queues', capset) end
end

local function flat_hash(key) return redis.call('HGETALL', key) end

-- Limits and budget (mirrors aragora.store.rules.budget_period_key) ------------------
local SPEND_TTL_MS = 400 * 86400000

local function limits()
  local v = redis.call('HMGET', B .. 'limits', 'max_agents', 'max_pending', 'max_running',
    'max_payload', 'budget', 'period', 'soft')
  return {
    max_agents = tonumber(v[1] or ''), max_pending = tonumber(v[2] or ''),
    max_running = tonumber(v[3] or ''), max_payload = tonumber(v[4] or ''),
    budget = tonumber(v[5] or ''), period = v[6] or 'monthly', soft = tonumber(v[7] or '0.8'),
  }
end

local function civil_month(days)
  -- Days since 1970-01-01 to "mYYYYMM" (H. Hinnant's civil_from_days).
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('m%04d%02d', y, m)
end

local function period_key(period)
  local days = math.floor(NOW / 86400000)
  if period == 'daily' then return 'd' .. days end
  return civil_month(days)
end

local function spend_key(p) return B .. 'spend:' .. p end

local function spend_used(p)
  local v = redis.call('HMGET', spend_key(p), 'reserved', 'spent')
  return (tonumber(v[1] or '') or 0) + (tonumber(v[2] or '') or 0)
end

-- 1 when this period's use just reached the soft limit for the first time, else 0.
local function soft_crossed(p, lim)
  if not lim.budget then return 0 end
  if spend_used(p) < lim.soft * lim.budget then return 0 end
  if redis.call('HSETNX', spend_key(p), 'soft_alerted', '1') == 1 then return 1 end
  return 0
end

local function budget_release(id)
  local h = redis.call('HMGET', tkey(id), 'rsv', 'bper')
  local reserved = tonumber(h[1] or '') or 0
  if reserved > 0 and h[2] and h[2] ~= '' then
    redis.call('HINCRBYFLOAT', spend_key(h[2]), 'reserved', -reserved)
  end
  redis.call('HSET', tkey(id), 'rsv', 0)
end

-- Return the reservation and book the actual cost (the estimate when none is reported).
-- Returns 1 when the soft limit was just crossed.
local function budget_settle(id, cost, model)
  local h = redis.call('HMGET', tkey(id), 'rsv', 'bper', 'est', 'type')
  local reserved = tonumber(h[1] or '') or 0
  local lim = limits()
  local p = (h[2] and h[2] ~= '') and h[2] or period_key(lim.period)
  local actual = cost or tonumber(h[3] or '') or 0
  if reserved > 0 then redis.call('HINCRBYFLOAT', spend_key(p), 'reserved', -reserved) end
  redis.call('HSET', tkey(id), 'rsv', 0)
  if actual > 0 then
    redis.call('HINCRBYFLOAT', spend_key(p), 'spent', actual)
    redis.call('HINCRBYFLOAT', spend_key(p) .. ':type', h[4], actual)
    redis.call('HINCRBYFLOAT', spend_key(p) .. ':model', model, actual)
    for _, k in ipairs({ spend_key(p), spend_key(p) .. ':type', spend_key(p) .. ':model' }) do
      redis.call('PEXPIRE', k, SPEND_TTL_MS)
    end
  end
  return soft_crossed(p, lim)
end

-- Due delayed tasks become claimable (bounded per call).
local function promote_due(limit)
  local due = redis.call('ZRANGEBYSCORE', B .. 'delayed', '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', B .. 'delayed', id)
    local h = redis.call('HMGET', tkey(id), 'caps', 'prio', 'seq')
    redis.call('HSET', tkey(id), 'avail', '')
    enqueue(id, h[1], h[2], h[3])
  end
  return #due
end

-- Circuit breaker (mirrors aragora.store.rules) ------------------------------------
local function br_bucket() return math.floor(NOW / (CFG.br_window_ms / BR_SLOTS)) end

local function br_parse_slot(v)
  local idx, c, f = string.match(v, '^(%-?%d+):(%d+):(%d+)$')
  return tonumber(idx), tonumber(c), tonumber(f)
end

local function br_window(agent, cur)
  local fields = {}
  for i = 0, BR_SLOTS - 1 do fields[#fields + 1] = 'b' .. i end
  local vals = redis.call('HMGET', brkey(agent), unpack(fields))
  local calls, fails = 0, 0
  for i = 1, BR_SLOTS do
    if vals[i] then
      local idx, c, f = br_parse_slot(vals[i])
      if idx > cur - BR_SLOTS then calls = calls + c; fails = fails + f end
    end
  end
  return calls, fails
end

local function br_state(agent)
  local v = redis.call('HMGET', brkey(agent), 'state', 'opened', 'hin', 'hsucc')
  return v[1] or 'closed', tonumber(v[2]), tonumber(v[3] or '0'), tonumber(v[4] or '0')
end

local function br_open(agent)
  redis.call('HSET', brkey(agent), 'state', 'open', 'opened', NOW, 'hin', 0, 'hsucc', 0)
end

local function br_record(agent, ok)
  local key = brkey(agent)
  local cur = br_bucket()
  local slot = 'b' .. (cur % BR_SLOTS)
  local c, f = 0, 0
  local v = redis.call('HGET', key, slot)
  if v then
    local idx, cc, ff = br_parse_slot(v)
    if idx == cur then c, f = cc, ff end
  end
  c = c + 1
  if not ok then f = f + 1 end
  redis.call('HSET', key, slot, cur .. ':' .. c .. ':' .. f)
  local state, _, hin, hsucc = br_state(agent)
  if state == 'half_open' then
    hin = math.max(hin - 1, 0)
    if not ok then
      br_open(agent)
    else
      hsucc = hsucc + 1
      if hsucc >= CFG.br_half_max then
        redis.call('DEL', key)
      else
        redis.call('HSET', key, 'hin', hin, 'hsucc', hsucc)
      end
    end
  elseif state == 'closed' then
    local calls, fails = br_window(agent, cur)
    if calls >= CFG.br_min_calls and fails / calls >= CFG.br_rate then br_open(agent) end
  end
end

local function br_peek(agent)
  local state, opened, hin = br_state(agent)
  if state == 'open' then return opened == nil or NOW >= opened + CFG.br_open_ms end
  if state == 'half_open' then return hin < CFG.br_half_max end
  return true
end

local function br_admit(agent)
  local state = br_state(agent)
  if state == 'open' then
    redis.call('HSET', brkey(agent), 'state', 'half_open', 'hin', 1, 'hsucc', 0)
  elseif state == 'half_open' then
    redis.call('HINCRBY', brkey(agent), 'hin', 1)
  end
end

local function br_release(agent)
  local state, _, hin = br_state(agent)
  if state == 'half_open' then redis.call('HSET', brkey(agent), 'hin', math.max(hin - 1, 0)) end
end

-- Attempt ends -----------------------------------------------------------------------
local function retry_delay_ms(attempt)
  local exponent = math.min(math.max(attempt - 1, 0), 62)
  local delay = math.min(CFG.backoff_max_ms, CFG.backoff_base_ms * (2 ^ exponent))
  return math.floor(delay * (1 - CFG.jitter * math.random()))
end

local function append_error(errors_json, attempt, err, agent)
  local item = cjson.encode({ attempt = attempt, error = err, agent_id = agent, at = NOW / 1000 })
  if errors_json == nil or errors_json == '' or errors_json == '[]' then return '[' .. item .. ']' end
  return string.sub(errors_json, 1, -2) .. ',' .. item .. ']'
end

-- A running attempt failed: retry after backoff or end FAILED. Returns 'requeued' or 'failed'.
local function fail_attempt(id, err, retryable)
  local tk = tkey(id)
  local h = redis.call('HMGET', tk, 'attempt', 'allowed', 'agent', 'errors', 'seq')
  local attempt, allowed, agent, seq = tonumber(h[1]), tonumber(h[2]), h[3], h[5]
  local errors = append_error(h[4], attempt, err, (agent and agent ~= '') and agent or cjson.null)
  redis.call('ZREM', B .. 'running', id)
  if agent and agent ~= '' then
    redis.call('SREM', B .. 'at:' .. agent, id)
    br_record(agent, false)
  end
  publish_ready()
  if retryable and attempt < allowed then
    local avail = NOW + retry_delay_ms(attempt)
    redis.call('HSET', tk, 'status', 'pending', 'lease', '', 'agent', '', 'lease_exp', '',
      'error', err, 'errors', errors, 'avail', avail)
    redis.call('ZADD', B .. 'delayed', avail, id)
    move_index(id, 'running', 'pending', seq)
    return 'requeued'
  end
  redis.call('HSET', tk, 'status', 'failed', 'lease', '', 'lease_exp', '', 'error', err,
    'errors', errors, 'finished', NOW)
  budget_release(id)
  redis.call('ZADD', B .. 'done', NOW, id)
  move_index(id, 'running', 'failed', seq)
  publish_done(id)
  return 'failed'
end

-- Send every task leased to an agent through the failed-attempt path.
local function release_agent_tasks(agent, err)
  local requeued, failed = 0, 0
  for _, id in ipairs(redis.call('SMEMBERS', B .. 'at:' .. agent)) do
    local status = redis.call('HGET', tkey(id), 'status')
    if status == 'running' and redis.call('HGET', tkey(id), 'agent') == agent then
      if fail_attempt(id, err, true) == 'requeued' then requeued = requeued + 1 else failed = failed + 1 end
    else
      redis.call('SREM', B .. 'at:' .. agent, id)
    end
  end
  return requeued, failed
end
