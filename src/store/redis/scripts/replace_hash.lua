-- Rehash on successful use: replaces the hash only if it is still the one
-- the caller verified and the token is not revoked (a compare-and-set; a
-- deleted record has no hash and is not recreated). KEYS: token. ARGV: old
-- hash, new hash. Returns 1 if replaced.
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2])
return 1
