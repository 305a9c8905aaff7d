-- Soft-deletes a token of the given account and (one Redis) enters its
-- end of life in the expiry index and appends the revocation to the
-- events stream (capped at about ARGV[4] entries); on a cluster those two
-- are in another slot and written just after (`REVOKE_INDEX_LUA`).
-- KEYS: token, and (one Redis) expiry, events. ARGV: account_id, now, id,
-- max events. Returns {0 not found | 1 revoked | 2 already revoked, end of
-- life}.
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return {0, 0} end
local result = 2
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 0 then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[2], 'updated_at', ARGV[2])
  result = 1
end
local eol = tonumber(redis.call('HGET', KEYS[1], 'revoked_at'))
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if expires and tonumber(expires) < eol then eol = tonumber(expires) end
if KEYS[2] then
  redis.call('ZADD', KEYS[2], eol, ARGV[3])
  -- Appended again on a repeated revoke: a replica that somehow kept the
  -- token gets another chance to drop it from its cache.
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'revoked', 'id', ARGV[3])
end
return {result, eol}
