-- doc_read.lua: the version and every document of a versioned collection, read in one
-- atomic step so the two always match.
--
-- KEYS[1]  hash: document id -> envelope JSON (see doc_put.lua)
-- KEYS[2]  string: version counter of the collection
--
-- Returns {version or false, {id1, envelope1, id2, envelope2, ...}}.

return {redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[1])}
