-- revoke_token.lua: mark a token revoked unless it already is (idempotent).
--
-- KEYS[1]  the token record (see put_token.lua)
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
--
-- Returns {"err", "not_found"}, else {"ok", <HGETALL of the token record>}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {'err', 'not_found'} end
if redis.call('HEXISTS', KEYS[1], 'revoked') == 0 then
  local t = redis.call('TIME')
  local now = string.format('%d',
    tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'revoked', now)
end
return {'ok', redis.call('HGETALL', KEYS[1])}
