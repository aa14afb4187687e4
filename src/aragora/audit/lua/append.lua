-- append.lua: compare-and-append a batch of events to one workspace's audit chain.
--
-- Redis Lua has no SHA-256, so the caller computes the hashes over the head it read and
-- this script appends only if the head is still that one: optimistic concurrency on
-- one key. A caller whose head moved gets the current head (and the store time) back,
-- re-chains its events on it and tries again; no event is ever lost or forked. The
-- script never decodes the event JSON, so every number keeps its exact encoding.
--
-- KEYS[1]  hash: the chain head, fields "seq" and "hash" (missing = empty chain)
-- KEYS[2]  stream: the events, entry id "<seq>-0", fields "body" (canonical JSON of the
--          event without seq, prev_hash and hash), "prev" (prev_hash) and "hash"
-- ARGV[1]  seq of the head the caller chained onto (0 for an empty chain)
-- ARGV[2]  hash of that head (64 zeros for an empty chain)
-- ARGV[3]  number of events n (at least 1)
-- ARGV[4..3+2n]  per event, in chain order: its hash, then its body
--
-- Returns
--   {1}                                     appended
--   {0, head seq, head hash, TIME s, TIME us}  the head moved: nothing written
--   {-1, reason}                            the stream holds events newer than the head
--                                           (head lost or rolled back): nothing written,
--                                           appending would fork the chain

local GENESIS = string.rep('0', 64)
local n = tonumber(ARGV[3])
if not n or n < 1 or #ARGV ~= 3 + 2 * n then
  return redis.error_reply('append.lua: ARGV must hold 3 + 2n values for n >= 1 events')
end
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash')
local head_seq = tonumber(head[1] or '0')
local head_hash = head[2] or GENESIS

local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  local top_seq = tonumber(string.match(top[1][1], '^(%d+)%-'))
  if top_seq > head_seq then
    return {-1, 'events up to seq ' .. top_seq .. ' exist but the head is at seq ' .. head_seq}
  end
end

if head_seq ~= tonumber(ARGV[1]) or head_hash ~= ARGV[2] then
  local t = redis.call('TIME')
  return {0, tostring(head_seq), head_hash, t[1], t[2]}
end

local prev = head_hash
local seq = head_seq
for i = 1, n do
  local hash = ARGV[2 + 2 * i]
  local body = ARGV[3 + 2 * i]
  seq = seq + 1
  redis.call('XADD', KEYS[2], seq .. '-0', 'body', body, 'prev', prev, 'hash', hash)
  prev = hash
end
redis.call('HSET', KEYS[1], 'seq', seq, 'hash', prev)
return {1}
