-- Changes a token's record if it belongs to the account and is not
-- revoked, keeps the expiry index in step and appends the change to the
-- events stream. KEYS: token, and (one Redis) expiry, events. ARGV:
-- account_id, id, max events, now, then field / value pairs (an empty
-- value deletes the field; `expires_by` lowers `expires_at` to its value
-- unless it is already earlier; `rotated_to` is set only once). Returns 1
-- if changed, 2 if revoked, 3 if already rotated, 0 if not found.
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 2 end
for i = 5, #ARGV, 2 do
  if ARGV[i] == 'rotated_to' and redis.call('HEXISTS', KEYS[1], 'rotated_to') == 1 then
    return 3
  end
end
for i = 5, #ARGV, 2 do
  if ARGV[i] == 'expires_by' then
    local expires = redis.call('HGET', KEYS[1], 'expires_at')
    if not expires or tonumber(expires) > tonumber(ARGV[i + 1]) then
      redis.call('HSET', KEYS[1], 'expires_at', ARGV[i + 1])
    end
  elseif ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
-- On a cluster the index and the stream are in other slots: done just after.
if KEYS[2] then
  local expires = redis.call('HGET', KEYS[1], 'expires_at')
  if expires then
    redis.call('ZADD', KEYS[2], expires, ARGV[2])
  else
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'update', 'id', ARGV[2])
end
return 1
