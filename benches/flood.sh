#!/usr/bin/env bash
# bcrypt flood benchmark: what a flood of wrong secrets for a live token id,
# from many client IPs, does to cached requests (issue 12, point 1).
#
# Starts redis-server and `tokengate serve` (forward-auth + admin), mints a
# token, then measures with wrk, in ROUNDS interleaved rounds, the cached
# token's requests to forward-auth alone and while a second wrk floods the
# same listener with well-formed tokens carrying the token's id and random
# wrong secrets (valid checksums, so each one would cost a bcrypt
# verification), each from another X-Forwarded-For address (loopback is a
# trusted proxy, so the per-IP failure limit sees thousands of clients).
# It does so for two configurations, side by side in one run:
#
#   old   bcrypt_concurrency = the number of CPUs, failed_auth_per_token = 0
#         (the defaults before issue 12)
#   new   the defaults: bcrypt_concurrency = CPUs - 1 (at least 1),
#         failed_auth_per_token = 10 per minute
#
# and prints, per configuration, the cached requests' median req/s and p99
# alone and under the flood, and their ratios (target: p99 under the flood
# <= 2x the p99 without it).
#
# Usage: bash benches/flood.sh
# Environment (defaults in brackets):
#   DURATION [10s]      wrk duration of each measured run
#   ROUNDS [3]          interleaved rounds
#   CONNECTIONS [32]    wrk connections of the cached requests
#   FLOOD_CONNECTIONS [32]  wrk connections of the flood
#   FORGED [5000]       distinct forged tokens the flood cycles through
#   BCRYPT_COST [10]
#   CARGO_TARGET_DIR, KEEP_TMP as for benches/load.sh
# The servers and both wrk share this machine's cores: compare the
# configurations with each other (one interleaved run), not the absolute
# numbers.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-32}"
FLOOD_CONNECTIONS="${FLOOD_CONNECTIONS:-32}"
FORGED="${FORGED:-5000}"
BCRYPT_COST="${BCRYPT_COST:-10}"

for tool in redis-server wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install -y redis-server wrk curl python3)"
done

build_release
make_tmp tokengate-flood
CPUS="$(nproc)"
read -r REDIS_PORT TG_FA_PORT TG_ADMIN_PORT < <(free_ports 3)
start_redis

# tokengate with the given [security] bcrypt_concurrency and
# [rate_limit] failed_auth_per_token; a fresh Redis database each time.
start_config() {
    local concurrency=$1 per_token=$2
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    cat >"$TMP/tokengate.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
[security]
bcrypt_cost = $BCRYPT_COST
bcrypt_concurrency = $concurrency
[rate_limit]
per_token_requests = 0
failed_auth_per_token = $per_token
[forward_auth]
listen = "127.0.0.1:$TG_FA_PORT"
[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"
[log]
access = false
EOF
    start_tokengate "$TG_FA_PORT" "$TG_ADMIN_PORT"
    wait_for_readyz
    TOKEN="$(curl -sf "http://127.0.0.1:$TG_ADMIN_PORT/v1/accounts/bench/tokens" \
        -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        -d '{"name": "flood"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
    [[ "$TOKEN" == mk_* ]] || die "could not mint a token"
    # Forged tokens: the real id, random secrets, valid checksums.
    python3 - "$TOKEN" "$FORGED" >"$TMP/forged.txt" <<'EOF'
import secrets, sys, zlib
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def base62(n, width):
    out = ""
    while n:
        n, d = divmod(n, 62)
        out = ALPHABET[d] + out
    return out.rjust(width, "0")
token, count = sys.argv[1], int(sys.argv[2])
head = token[:25]  # mk_ and the id
for _ in range(count):
    body = head + "".join(secrets.choice(ALPHABET) for _ in range(24))
    print(body + base62(zlib.crc32(body.encode()), 6))
EOF
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$TG_FA_PORT/" \
        || die "the minted token was not admitted"
}

stop_tokengate() {
    kill -TERM "$TG_PID" 2>/dev/null || true
    wait "$TG_PID" 2>/dev/null || true
}

cat >"$TMP/flood.lua" <<'EOF'
local tokens = {}
local n = 0
init = function(args)
    for line in io.lines(args[1]) do
        n = n + 1
        tokens[n] = line
    end
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
request = function()
    local i = math.random(n)
    local ip = string.format("198.18.%d.%d", math.random(0, 255), math.random(1, 254))
    return wrk.format("GET", "/", {
        ["Authorization"] = "Bearer " .. tokens[i],
        ["X-Forwarded-For"] = ip,
    })
end
EOF

# One wrk run of the cached token; prints "req/s p99_ms".
measure() {
    local out
    out="$(wrk --latency -t1 -c "$CONNECTIONS" -d "$DURATION" --timeout 5s \
        -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$TG_FA_PORT/")"
    python3 - "$out" <<'EOF'
import re, sys
out = sys.argv[1]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
print(f"{rps:.0f} {p99:.3f}")
EOF
}

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
    echo "==> round $round/$ROUNDS"
    for config in old new; do
        if [[ "$config" == old ]]; then start_config "$CPUS" 0; else start_config 0 10; fi
        for load in alone flood; do
            FLOOD_PID=""
            if [[ "$load" == flood ]]; then
                wrk -t1 -c "$FLOOD_CONNECTIONS" -d 3600s --timeout 5s -s "$TMP/flood.lua" \
                    "http://127.0.0.1:$TG_FA_PORT/" -- "$TMP/forged.txt" >"$TMP/flood-wrk.log" 2>&1 &
                FLOOD_PID=$!
                WRK_PID=$FLOOD_PID
                sleep 2
            fi
            result="$(measure)"
            if [[ -n "$FLOOD_PID" ]]; then
                kill -TERM "$FLOOD_PID" 2>/dev/null || true
                wait "$FLOOD_PID" 2>/dev/null || true
                WRK_PID=""
            fi
            RESULTS["$config-$load"]+="$result;"
            printf '    %-4s %-6s %8s req/s   p99 %8s ms\n' "$config" "$load" ${result}
        done
        stop_tokengate
    done
done

echo
echo "tokengate bcrypt flood benchmark (commit $(git -C "$ROOT" rev-parse --short HEAD)): $ROUNDS interleaved rounds of $DURATION,"
echo "cached token: wrk -t1 -c$CONNECTIONS to forward-auth; flood: wrk -t1 -c$FLOOD_CONNECTIONS, $FORGED forged secrets for the same id,"
echo "a random X-Forwarded-For each; bcrypt cost $BCRYPT_COST; $CPUS CPUs shared by everything"
python3 - "${RESULTS[old-alone]}" "${RESULTS[old-flood]}" "${RESULTS[new-alone]}" "${RESULTS[new-flood]}" <<'EOF'
import statistics, sys
def parse(s):
    runs = [tuple(map(float, r.split())) for r in s.split(";") if r.strip()]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
names = ["old alone", "old flood", "new alone", "new flood"]
res = dict(zip(names, map(parse, sys.argv[1:5])))
print()
print("| configuration | cached req/s alone | under the flood | ratio | cached p99 alone | under the flood | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for config, label in [("old", "old: bcrypt = CPUs, no per-id limit"), ("new", "new defaults: CPUs - 1, 10 wrong secrets per id per minute")]:
    (ra, pa), (rf, pf) = res[f"{config} alone"], res[f"{config} flood"]
    print(f"| {label} | {ra:.0f} | {rf:.0f} | {rf / ra:.2f} | {pa:.2f} ms | {pf:.2f} ms | {pf / pa:.2f} |")
(_, pa), (_, pf) = res["new alone"], res["new flood"]
print()
print(f"cached p99 under the flood / without it (new defaults): {pf / pa:.2f}  (target <= 2: {'met' if pf / pa <= 2 else 'MISSED'})")
EOF
OK=1
