-- Cluster only, the indexes' half of a creation, before the record:
-- notes the creation as pending (with its account and time, so cleanup can
-- finish or undo it if the process dies before the record is written) and
-- lists the id under its account. KEYS: pending, account. ARGV: id,
-- "{unix seconds}:{account}".
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
