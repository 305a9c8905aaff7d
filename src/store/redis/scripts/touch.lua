-- Moves last_accessed forward, never back, and never recreates a deleted
-- record. KEYS: token. ARGV: unix seconds.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'last_accessed') or '-1')
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'last_accessed', ARGV[1])
return 1
