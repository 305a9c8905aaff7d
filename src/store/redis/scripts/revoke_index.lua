-- Cluster only, after REVOKE_LUA on the record: the end of life in the
-- expiry index and the event, together (same slot). KEYS: expiry, events.
-- ARGV: end of life, id, max events.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'revoked', 'id', ARGV[2])
return 1
