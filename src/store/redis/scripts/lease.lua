-- Hands out up to ARGV[1] credits of a token's quota, refilling it first
-- if a refill is due at ARGV[2] (unix seconds). KEYS: token.
-- Returns {granted, period, next refill or -1, remaining}, or {-1} when the
-- token or its quota does not exist. Appended to REFILL_LUA.
local q = redis.call('HMGET', KEYS[1], 'quota_remaining', 'quota_refill_amount',
  'quota_refill_interval', 'quota_refilled_at', 'quota_period')
if not q[1] then return {-1} end
local remaining, period = tonumber(q[1]), tonumber(q[5] or '0')
local refilled, now, nxt = tonumber(q[4] or '0'), tonumber(ARGV[2]), -1
if q[2] and q[3] then
  local start = period_start(q[3], refilled, now)
  if start > refilled then
    remaining, refilled, period = tonumber(q[2]), start, period + 1
    redis.call('HSET', KEYS[1], 'quota_refilled_at', string.format('%d', refilled),
      'quota_period', string.format('%d', period))
  end
  nxt = next_start(q[3], refilled)
end
local granted = math.min(tonumber(ARGV[1]), remaining)
redis.call('HSET', KEYS[1], 'quota_remaining', string.format('%d', remaining - granted))
return {granted, period, nxt, remaining - granted}
