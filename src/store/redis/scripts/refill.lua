-- The refill calendar of docs/reference/quotas.md, as in `src/token/quota.rs`:
-- `period_start(interval, start, now)` and `next_start(interval, start)`,
-- `interval` being seconds or `month` (UTC calendar months).
local function month_start(t)
  local days = math.floor(t / 86400)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  return (days - (d - 1)) * 86400
end
local function period_start(interval, start, now)
  if interval == 'month' then return math.max(month_start(now), start) end
  local s = math.max(tonumber(interval), 1)
  if now < start + s then return start end
  return start + math.floor((now - start) / s) * s
end
local function next_start(interval, start)
  if interval == 'month' then return month_start(month_start(start) + 32 * 86400) end
  return start + math.max(tonumber(interval), 1)
end
