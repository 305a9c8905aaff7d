-- Cluster only, after the record: the creation is done; a token that
-- expires enters the expiry index. KEYS: pending, expiry. ARGV: id,
-- expires_at (or "").
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
