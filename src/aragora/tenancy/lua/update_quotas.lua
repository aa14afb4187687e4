-- update_quotas.lua: change a workspace's plan and quota overrides, in one step.
--
-- KEYS[1]  the workspace record (see create_workspace.lua)
-- ARGV[1]  new plan, or "" to keep the plan
-- ARGV[2]  "1" drops every existing override first, "0" merges
-- ARGV[3..] quota overrides as pairs: quota name, value (a decimal, or "none")
--
-- Returns {"err", "not_found"} if there is no such workspace, else {"ok", <HGETALL>}.

if redis.call('EXISTS', KEYS[1]) == 0 then return {'err', 'not_found'} end
if ARGV[2] == '1' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 2) == 'q.' then redis.call('HDEL', KEYS[1], field) end
  end
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'plan', ARGV[1]) end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'q.' .. ARGV[i], ARGV[i + 1])
end
return {'ok', redis.call('HGETALL', KEYS[1])}
