#!/usr/bin/env bash
# Soak (issue 12, point 5; not run in CI): DURATION of mixed traffic at one
# `tokengate serve` (proxy, forward-auth and admin API) on a real Redis, with
# a Redis restart in the middle, reporting answers by kind, RSS and open file
# descriptors every SAMPLE seconds, and whether both come back within 10% of
# their level after the warm-up. Exits 1 if they do not, or if any answer
# was not one of those expected (benches/soak.py lists them).
#
# Traffic (benches/soak.py drives it): wrk on the proxy door with
# CACHED tokens (cache hits, re-validated every cache.ttl); from Python,
# unknown ids (misses), malformed tokens, wrong secrets for a live id from
# many X-Forwarded-For addresses, malformed tokens from one address,
# create-use-revoke-use cycles and admin writes (create, get, quota, list).
#
# Usage: bash benches/soak.sh
# Environment (defaults in brackets):
#   DURATION [600]       seconds of traffic
#   WARMUP [60]          seconds before the reference sample
#   SAMPLE [10]          seconds between samples
#   RESTART_DOWN [5]     seconds Redis stays down, in the middle
#   WINDOW_AFTER [3]     seconds after Redis answers again in which 503 is expected
#   CACHED [100]         cached tokens wrk cycles through
#   WRK_CONNECTIONS [8]
#   CARGO_TARGET_DIR, KEEP_TMP as for benches/load.sh
# Everything shares this machine's cores; the figures that matter are
# tokengate's own RSS and fds over time, not the request rates.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export DURATION="${DURATION:-600}"
export WARMUP="${WARMUP:-60}"
export SAMPLE="${SAMPLE:-10}"
export RESTART_DOWN="${RESTART_DOWN:-5}"
export WINDOW_AFTER="${WINDOW_AFTER:-3}"
CACHED="${CACHED:-100}"
export WRK_CONNECTIONS="${WRK_CONNECTIONS:-8}"

for tool in redis-server redis-cli wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install -y redis-server redis-tools wrk curl python3)"
done

cd "$ROOT"
build_release
make_tmp tokengate-soak
read -r REDIS_PORT UPSTREAM_PORT TG_PROXY_PORT TG_FA_PORT TG_ADMIN_PORT < <(free_ports 5)
export REDIS_PORT TG_PROXY_PORT TG_FA_PORT TG_ADMIN_PORT

# Redis daemonizes, so that benches/soak.py can stop it (SHUTDOWN SAVE) and
# start it again with the same command and its dump.
export REDIS_START="redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no \
--daemonize yes --pidfile $TMP/redis.pid --loglevel warning --dir $TMP --logfile $TMP/redis.log"
soak_cleanup() {
    local status=$?
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    (exit "$status")
    cleanup
}
trap soak_cleanup EXIT
bash -c "$REDIS_START"
for _ in $(seq 100); do
    [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
    sleep 0.05
done
start_upstream

cat >"$TMP/tokengate.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"

[rate_limit]
# The cached tokens must not be limited (wrk is as fast as it can be); the
# limiters still count every request.
per_token_requests = 100000

[proxy]
listen = "127.0.0.1:$TG_PROXY_PORT"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"

[forward_auth]
listen = "127.0.0.1:$TG_FA_PORT"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[log]
level = "warn"
# One request in a hundred: the log stays a few MiB.
access_sample_percent = 1
EOF
start_tokengate "$TG_PROXY_PORT" "$TG_FA_PORT" "$TG_ADMIN_PORT"
wait_for_readyz
export TG_PID ADMIN_KEY

# The tokens: CACHED for wrk, one whose id the forgeries use.
echo "==> creating $((CACHED + 1)) tokens"
: >"$TMP/create.curl"
for ((i = 0; i <= CACHED; i++)); do
    ((i == 0)) || echo next >>"$TMP/create.curl"
    cat >>"$TMP/create.curl" <<CURL
url = "http://127.0.0.1:$TG_ADMIN_PORT/v1/accounts/soak-cached/tokens"
header = "Authorization: Bearer $ADMIN_KEY"
header = "Content-Type: application/json"
data = "{\"name\": \"soak $i\"}"
output = "$TMP/created-$i.json"
CURL
done
curl --silent --show-error --no-progress-meter --parallel --parallel-max 4 --config "$TMP/create.curl"
cat "$TMP"/created-*.json | grep -o 'mk_[0-9A-Za-z]\{52\}' >"$TMP/all-tokens"
(($(wc -l <"$TMP/all-tokens") == CACHED + 1)) || die "could not create the tokens"
export FORGED_ID_TOKEN="$(head -n 1 "$TMP/all-tokens")"
export CACHED_TOKENS="$TMP/cached-tokens"
tail -n +2 "$TMP/all-tokens" >"$CACHED_TOKENS"

# wrk: random cached tokens; counts the answers per second and status, and
# prints them as "status SECOND STATUS COUNT" lines.
export WRK_SCRIPT="$TMP/cached.lua"
cat >"$WRK_SCRIPT" <<'EOF'
local threads = {}
function setup(thread)
    table.insert(threads, thread)
end
local tokens = {}
local n = 0
-- A global: done() reads each thread's copy with thread:get.
counts = {}
function init(args)
    for line in io.lines(args[1]) do
        n = n + 1
        tokens[n] = "Bearer " .. line
    end
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
    return wrk.format("GET", "/soak", { ["Authorization"] = tokens[math.random(n)] })
end
function response(status, headers, body)
    local key = os.time() .. " " .. status
    counts[key] = (counts[key] or 0) + 1
end
function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        local c = thread:get("counts")
        for key, value in pairs(c) do
            total[key] = (total[key] or 0) + value
        end
    end
    for key, value in pairs(total) do
        print("status " .. key .. " " .. value)
    end
end
EOF

echo "==> $DURATION s of mixed traffic (Redis restarted at $((${DURATION%.*} / 2)) s)"
set +e
python3 "$ROOT/benches/soak.py"
status=$?
set -e
echo "(tokengate $(git rev-parse --short HEAD), $(nproc) CPUs; log lines: $(wc -l <"$TMP/tokengate.log"))"
OK=1
exit "$status"
