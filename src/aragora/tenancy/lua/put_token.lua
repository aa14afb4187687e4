-- put_token.lua: store a token record and index its hash and id, in one step.
--
-- KEYS[1]  the workspace record (see create_workspace.lua): must exist
-- KEYS[2]  the token record, a hash "<prefix>{tenancy}:token:<workspace>:<token id>"
--          with fields id, ws, role, hash, created, and when set expires, revoked (ms
--          on the store clock) and by (who created it)
-- KEYS[3]  the set of the workspace's token ids, "<prefix>{tenancy}:tokens:<workspace>"
-- KEYS[4]  token hash -> "<workspace>/<token id>", "<prefix>{tenancy}:token_hashes"
-- KEYS[5]  token id -> workspace, "<prefix>{tenancy}:token_ids"
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  workspace name
-- ARGV[3]  token id
-- ARGV[4]  token hash (HMAC-SHA256 hex; never the token)
-- ARGV[5]  role
-- ARGV[6]  expiry in ms on the store clock, or ""
-- ARGV[7]  created by, or ""
-- ARGV[8]  "create": the id and the hash must both be new.
--          "upsert": if the id already holds this hash nothing changes; if it holds
--          another hash (same workspace), the old hash is forgotten and the record
--          starts afresh.
--
-- Returns {"err", "no_workspace"} or {"err", "exists"} (nothing changes), else
-- {"ok", <HGETALL of the token record>}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {'err', 'no_workspace'} end
local ref = ARGV[2] .. '/' .. ARGV[3]
local upsert = ARGV[8] == 'upsert'
local holder = redis.call('HGET', KEYS[4], ARGV[4])
local id_workspace = redis.call('HGET', KEYS[5], ARGV[3])
if upsert and holder == ref then return {'ok', redis.call('HGETALL', KEYS[2])} end
if holder or (id_workspace and (not upsert or id_workspace ~= ARGV[2])) then
  return {'err', 'exists'}
end
if id_workspace then
  local old = redis.call('HGET', KEYS[2], 'hash')
  if old then redis.call('HDEL', KEYS[4], old) end
  redis.call('DEL', KEYS[2])
end
local t = redis.call('TIME')
local now = string.format('%d',
  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
redis.call('HSET', KEYS[2], 'id', ARGV[3], 'ws', ARGV[2], 'role', ARGV[5], 'hash', ARGV[4],
  'created', now)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'expires', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], 'by', ARGV[7]) end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[4], ref)
redis.call('HSET', KEYS[5], ARGV[3], ARGV[2])
return {'ok', redis.call('HGETALL', KEYS[2])}
