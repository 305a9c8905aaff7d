-- Deletes a token from every key if its end of life is at or before the
-- cutoff (checked again here: the id was read in an earlier round trip).
-- KEYS: token, account, expiry. ARGV: id, cutoff. Returns 1 if deleted.
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
