-- Cluster only: deletes a record whose end of life is at or before the
-- cutoff (checked on the record itself: the expiry index is in another
-- slot). KEYS: token. ARGV: cutoff. Returns 1 deleted, 0 alive, -1 absent.
local f = redis.call('HMGET', KEYS[1], 'id', 'expires_at', 'revoked_at')
if not f[1] then return -1 end
local eol = nil
if f[2] then eol = tonumber(f[2]) end
if f[3] and (not eol or tonumber(f[3]) < eol) then eol = tonumber(f[3]) end
if not eol or eol > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
