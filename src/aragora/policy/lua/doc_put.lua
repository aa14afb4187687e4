-- doc_put.lua: create or replace one document of a versioned collection (policy rules
-- or feature flags of one workspace) and bump the collection's version, atomically.
--
-- KEYS[1]  hash: document id -> '{"at":<ms>,"doc":<document JSON>}'
-- KEYS[2]  string: version counter of the collection
-- ARGV[1]  clock offset in ms, added to the server's TIME (0 outside tests)
-- ARGV[2]  document id
-- ARGV[3]  document JSON (written verbatim inside the envelope)
-- ARGV[4]  maximum number of documents in the collection
--
-- Returns the new version, or -1 (nothing written) when the id is new and the
-- collection already holds ARGV[4] documents.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[2], '{"at":' .. string.format('%.0f', now_ms) .. ',"doc":' .. ARGV[3] .. '}')
return redis.call('INCR', KEYS[2])
