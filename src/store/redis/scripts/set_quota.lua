-- Sets or removes a token's quota if it belongs to the account, starting a
-- new period, and appends the change to the events stream. KEYS: token,
-- and (one Redis) events. ARGV: account_id, id, max events, now, then either nothing
-- (remove) or remaining, refill amount (or ''), refill interval (or '').
-- Returns 1 if found.
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return 0 end
local period = tonumber(redis.call('HGET', KEYS[1], 'quota_period') or '0') + 1
redis.call('HDEL', KEYS[1], 'quota_remaining', 'quota_refill_amount', 'quota_refill_interval',
  'quota_refilled_at')
if ARGV[5] then
  redis.call('HSET', KEYS[1], 'quota_remaining', ARGV[5], 'quota_refilled_at', ARGV[4],
    'quota_period', string.format('%d', period))
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'quota_refill_amount', ARGV[6], 'quota_refill_interval', ARGV[7])
  end
else
  -- Kept, so leases of the removed quota stay void if one comes back.
  redis.call('HSET', KEYS[1], 'quota_period', string.format('%d', period))
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
-- On a cluster the stream is in another slot: appended just after.
if KEYS[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'quota', 'id', ARGV[2])
end
return 1
