-- Counts a replica's admissions on a fleet-wide GCRA limiter and returns
-- how far its theoretical arrival time (TAT) runs ahead of now, and how many
-- requests it has counted (docs/reference/rate-limits.md). Redis's clock is the
-- fleet's clock. The admissions were made over the round's window (the
-- time since the replica's previous round), not all at its end, so the
-- TAT they extend is at least the window's start, not now: otherwise a
-- token well under its limit would be pushed past its burst by every
-- round that carries more than a burst of requests.
-- KEYS: limiter. ARGV: admitted, interval µs, tolerance µs, window µs.
-- Returns {ahead µs (0 when behind now), counted}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'counted')
local admitted = tonumber(ARGV[1])
local tat = tonumber(state[1] or '0')
local start = now - tonumber(ARGV[4])
if tat < start then tat = start end
tat = tat + admitted * tonumber(ARGV[2])
local counted = tonumber(state[2] or '0') + admitted
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'counted', string.format('%.0f', counted))
-- Once the TAT is this far behind, the limiter is full again: forget it.
redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((tat - now + tonumber(ARGV[3])) / 1000), 0) + 1000)
return {math.max(math.floor(tat - now), 0), counted}
