-- claim_agent_owner.lua: make a token the owner of an agent id unless another, still
-- active token owns it.
--
-- KEYS[1]  agent id -> owning token id, "<prefix>{tenancy}:agent_owners:<workspace>"
-- KEYS[2]  the common prefix of the workspace's token records,
--          "<prefix>{tenancy}:token:<workspace>:"; the owner's record is KEYS[2] .. id
--          (same hash slot as KEYS[1])
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  agent id
-- ARGV[3]  token id of the caller
--
-- Returns 1 if the caller owns the agent now (newly or already), 0 if another token
-- owns it and is neither revoked, expired nor deleted.

local owner = redis.call('HGET', KEYS[1], ARGV[2])
if owner == ARGV[3] then return 1 end
if owner then
  local rec = redis.call('HMGET', KEYS[2] .. owner, 'id', 'revoked', 'expires')
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
  if rec[1] and not rec[2] and (not rec[3] or tonumber(rec[3]) > now) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
