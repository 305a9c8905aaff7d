-- Gives unused credits back if the quota is still in the lease's period.
-- KEYS: token. ARGV: credits, period. Returns 1 if taken back.
local period = redis.call('HGET', KEYS[1], 'quota_period')
if not period or period ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'quota_remaining', ARGV[1])
return 1
