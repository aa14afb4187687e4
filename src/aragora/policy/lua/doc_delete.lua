-- doc_delete.lua: delete one document of a versioned collection and bump the
-- collection's version, atomically.
--
-- KEYS[1]  hash: document id -> envelope JSON (see doc_put.lua)
-- KEYS[2]  string: version counter of the collection
-- ARGV[1]  document id
--
-- Returns the new version, or -1 (nothing changed) when there is no such document.

if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return -1
end
return redis.call('INCR', KEYS[2])
