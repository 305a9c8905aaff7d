-- Creates the record, its account-index entry and its expiry-index entry, or
-- nothing if the id exists. KEYS: token, and (one Redis) account, expiry;
-- on a cluster, the indexes live in another slot and are written apart
-- (`RedisStore::insert`). ARGV: id, expires_at (or ""), then field/value
-- pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[1])
  if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) end
end
return 1
