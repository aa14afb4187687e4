-- rewrite.lua: compare-and-set a task's stored payload and/or result (key rotation).
-- Writes every given field only if each still holds its expected JSON text; never
-- creates a task and touches nothing else.
-- KEYS[1]  workspace base (see _lib.lua)
-- ARGV[5]  task id
-- ARGV[6..] triples: field name ('payload' | 'result'), expected JSON, new JSON
-- Returns 1 when written, 0 when the task is gone or changed.
local tk = tkey(ARGV[5])
if redis.call('EXISTS', tk) == 0 then return 0 end
for i = 6, #ARGV, 3 do
  if redis.call('HGET', tk, ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
for i = 6, #ARGV, 3 do redis.call('HSET', tk, ARGV[i], ARGV[i + 2]) end
return 1
