#!/usr/bin/env bash
# Redis load of one `tokengate serve` replica, on loopback only
# (the figures of docs/guide/scaling.md).
#
# Builds the release binaries, starts redis-server (no persistence), a minimal
# upstream (examples/bench_upstream.rs) and one tokengate (proxy + admin) on
# Redis, with the default [rate_limit] sync_interval, [last_accessed]
# flush_interval and [cache] ttl, and per_token_requests (and _burst) =
# 1000000 so that no request is refused while the rate limits (and their
# background rounds) stay on. Then, for each number of tokens in TOKENS and
# each KIND:
#
#   plain   tokens without a quota
#   quota   tokens with a quota of 10^9 credits (leased from Redis)
#
# it creates the tokens through the admin API, requests each once through the
# proxy (so all are cached), resets Redis's statistics (CONFIG RESETSTAT),
# drives the proxy with wrk for DURATION rotating over the tokens, and reads
# INFO commandstats. It prints, per scenario: requests/s; Redis calls per
# second by command (top level: evalsha, hgetall, xread, xinfo, script|load,
# the rest; and all commands, those run inside scripts included); the EVALSHA
# calls split by script (told apart by the commands only that script runs:
# TIME for rate-limit rounds, EXISTS for last-accessed writes, HINCRBY for
# quota give-backs; the rest are quota leases); top-level calls per 1,000
# requests; and the growth of tokengate's RSS per token of the scenario.
# Finally it creates MEMTOKENS more tokens, requests each once, and prints
# tokengate's RSS growth per cached token.
#
# Usage: bash benches/redis_load.sh
# Environment (defaults in brackets):
#   TOKENS ["1 100 1000"]  numbers of active tokens, one scenario each
#   KIND ["plain quota"]   token kinds, one scenario each (per TOKENS value)
#   DURATION [30s]         wrk duration of each scenario
#   CONNECTIONS [64]       wrk connections
#   THREADS [2]            wrk threads
#   SETTLE [12]            seconds to wait before each scenario after the
#                          first, so that the previous one's quota leases
#                          (10 s) and last-accessed times (10 s) are written
#   MEMTOKENS [10000]      tokens of the memory measurement (0 to skip)
#   PARALLEL [8]           curl processes creating and warming tokens
#   TG_WORKERS             tokengate's [server] workers (default: one per core)
#   CARGO_TARGET_DIR       honoured as by cargo (default: ./target)
#   KEEP_TMP [0]           1: keep the temporary directory (configs, logs)
# The servers and wrk share this machine's cores: requests/s are noisy; the
# background call rates (per second) and the calls per 1,000 requests are
# the figures to read.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOKENS="${TOKENS:-1 100 1000}"
KIND="${KIND:-plain quota}"
DURATION="${DURATION:-30s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
SETTLE="${SETTLE:-12}"
MEMTOKENS="${MEMTOKENS:-10000}"
PARALLEL="${PARALLEL:-8}"
TG_WORKERS="${TG_WORKERS:-}"
KEEP_TMP="${KEEP_TMP:-0}"

# ---- prerequisites ----------------------------------------------------------

missing=()
for tool in wrk redis-server redis-cli curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "redis_load.sh: missing: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y wrk redis-server redis-tools curl" >&2
    exit 1
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing (install Rust: https://rustup.rs)"
read -r -a TOKEN_COUNTS <<<"$TOKENS"
read -r -a KINDS <<<"$KIND"
((${#TOKEN_COUNTS[@]})) || die "TOKENS is empty"
((${#KINDS[@]})) || die "KIND is empty"
for n in "${TOKEN_COUNTS[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "TOKENS must be positive integers, not '$n'"
done
for kind in "${KINDS[@]}"; do
    [[ "$kind" == plain || "$kind" == quota ]] || die "KIND must be 'plain' and/or 'quota', not '$kind'"
done
[[ "$MEMTOKENS" =~ ^[0-9]+$ ]] || die "MEMTOKENS must be a non-negative integer"
[[ "$SETTLE" =~ ^[0-9]+$ ]] || die "SETTLE must be a number of seconds"
[[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]] || die "PARALLEL must be a positive integer"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
((THREADS <= CONNECTIONS)) || die "THREADS must not exceed CONNECTIONS"
[[ -z "$TG_WORKERS" || "$TG_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "TG_WORKERS must be a positive integer"

cd "$ROOT"

# ---- build ------------------------------------------------------------------

build_release

# ---- temp dir, cleanup ------------------------------------------------------

make_tmp tokengate-redis-load

# ---- ports ------------------------------------------------------------------

read -r REDIS_PORT UPSTREAM_PORT TG_PROXY_PORT TG_ADMIN_PORT < <(free_ports 4)

# ---- redis, upstream, tokengate ---------------------------------------------

echo "==> starting redis-server, the upstream and tokengate (temp dir $TMP)"
start_redis
rcli() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

start_upstream

# The intervals are left at their defaults (as documented in the commented
# config/tokengate.toml): they are what the figures depend on.
cat >"$TMP/tokengate.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"

[security]
bcrypt_cost = 4

[rate_limit]
# Out of wrk's reach: no request is refused, but every one is counted and
# reconciled with Redis as usual. (A large burst as well: before rounds
# counted their admissions from the start of their window, a token at
# 20,000 req/s got some 429s with the default burst of 200; see
# docs/reference/rate-limits.md.)
per_token_requests = 1000000
per_token_burst = 1000000

[proxy]
listen = "127.0.0.1:$TG_PROXY_PORT"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[server]
shutdown_grace = "2s"
${TG_WORKERS:+workers = $TG_WORKERS}
EOF

start_tokengate "$TG_PROXY_PORT" "$TG_ADMIN_PORT"
wait_for_readyz

# The defaults it runs with, from the commented reference config.
config_default() {
    awk -v section="[$1]" -v key="$2" '
        /^\[/ { in_section = ($1 == section) }
        in_section && $1 == key && $2 == "=" { gsub(/"/, "", $3); print $3; exit }
    ' "$ROOT/config/tokengate.toml"
}
SYNC_INTERVAL="$(config_default rate_limit sync_interval)"
FLUSH_INTERVAL="$(config_default last_accessed flush_interval)"
CACHE_TTL="$(config_default cache ttl)"

# ---- tokens -----------------------------------------------------------------

# Runs one curl request per line of file $1, in up to PARALLEL curl processes
# (each with a config of many requests, on kept-alive connections), and writes
# what the requests print, one line each, to file $2. The awk program $3
# turns a line into that request's curl config options; the arguments after
# it are given to awk (-v name=value).
curl_each() {
    local input=$1 out=$2 entry=$3 part pids=() pid
    shift 3
    rm -f "$TMP"/curl-part.*
    split -n "l/$PARALLEL" -d -a 3 "$input" "$TMP/curl-part."
    for part in "$TMP"/curl-part.[0-9][0-9][0-9]; do
        [[ -s "$part" ]] || continue
        awk "$@" "$entry" "$part" | awk 'NR > 1 && /^url = / { print "next" } { print }' >"$part.conf"
        curl -sS --config "$part.conf" >"$part.out" 2>"$part.err" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || { cat "$TMP"/curl-part.*.err >&2; die "curl failed"; }
    done
    cat "$TMP"/curl-part.[0-9][0-9][0-9].out >"$out"
}

# Creates $1 tokens of kind $2 through the admin API; appends them to file $3.
create_tokens() {
    local n=$1 kind=$2 file=$3 body='{"name":"t"}' created
    [[ "$kind" == quota ]] && body='{"name":"t","quota":{"remaining":1000000000}}'
    seq "$n" >"$TMP/create.in"
    # shellcheck disable=SC2016
    curl_each "$TMP/create.in" "$TMP/create.out" '{
        print "url = \"" url "\""
        print "header = \"Authorization: Bearer " key "\""
        print "header = \"Content-Type: application/json\""
        print "data = " body
        print "write-out = \"\\n\""
    }' -v url="http://127.0.0.1:$TG_ADMIN_PORT/v1/accounts/acme/tokens" \
        -v key="$ADMIN_KEY" -v body="$body"
    grep -o '"token":"mk_[A-Za-z0-9]*"' "$TMP/create.out" | cut -d'"' -f4 >"$TMP/created"
    created="$(wc -l <"$TMP/created")"
    ((created == n)) || die "created $created tokens, not $n; the admin API answered e.g.:" \
        "$(grep -v '"token"' "$TMP/create.out" | head -n 1)"
    cat "$TMP/created" >>"$file"
}

PROXY_URL="http://127.0.0.1:$TG_PROXY_PORT/"

# Requests each token of file $1 once through the proxy (a cache miss each:
# a Redis read and bcrypt); every answer must be 200.
warm_tokens() {
    local codes
    # shellcheck disable=SC2016
    curl_each "$1" "$TMP/warm.out" '{
        print "url = \"" url "\""
        print "header = \"Authorization: Bearer " $1 "\""
        print "output = /dev/null"
        print "write-out = \"%{http_code}\\n\""
    }' -v url="$PROXY_URL"
    codes="$(sort "$TMP/warm.out" | uniq -c | tr -s ' ' | tr '\n' ',')"
    [[ "$codes" == " $(wc -l <"$1") 200," ]] || die "warming the cache: answers (count code): $codes"
}

rss_bytes() {
    awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$TG_PID/status"
}
cache_entries() {
    curl -s -H "Authorization: Bearer $ADMIN_KEY" "http://127.0.0.1:$TG_ADMIN_PORT/metrics" \
        | awk '/^tokengate_cache_entries / { print $2 }'
}

# ---- measuring --------------------------------------------------------------

# wrk: each request carries the next token of the list (each thread starts
# elsewhere in it); answers other than 200 are counted by status.
cat >"$TMP/rotate.lua" <<'EOF'
local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local tokens, i = {}, 1
refused = {} -- a global: done() reads it with thread:get
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
  end
  i = math.floor((thread_index or 0) * 0.618034 * #tokens) % #tokens + 1
end

function request()
  local token = tokens[i]
  i = i % #tokens + 1
  return wrk.format("GET", "/", { ["Authorization"] = token })
end

function response(status)
  if status ~= 200 then refused[status] = (refused[status] or 0) + 1 end
end

function done()
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("refused")) do
      io.write(string.format("status %d: %d\n", status, count))
    end
  end
end
EOF

# Commands that tokengate runs only inside its Lua scripts (src/store/redis/):
# what INFO commandstats counts beyond the top-level calls.
IN_SCRIPT="del exists hdel hexists hget hincrby hmget hset pexpire sadd srem time xadd zadd zrem zscore"

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
scenario=0
for n in "${TOKEN_COUNTS[@]}"; do
    for kind in "${KINDS[@]}"; do
        if ((scenario++ > 0 && SETTLE > 0)); then
            echo "==> settling ${SETTLE}s (the previous scenario's leases and last-accessed times)"
            sleep "$SETTLE"
        fi
        echo "==> $n $kind token(s): creating, warming the cache, then wrk for $DURATION"
        rss_before="$(rss_bytes)"
        tokens_file="$TMP/tokens-$n-$kind"
        : >"$tokens_file"
        create_tokens "$n" "$kind" "$tokens_file"
        warm_tokens "$tokens_file"

        rcli CONFIG RESETSTAT >/dev/null
        start="$(date +%s.%N)"
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --timeout 5s \
            -s "$TMP/rotate.lua" "$PROXY_URL" -- "$tokens_file" >"$TMP/wrk.txt" 2>&1 &
        WRK_PID=$!
        wait "$WRK_PID" || { cat "$TMP/wrk.txt" >&2; die "wrk failed"; }
        WRK_PID=""
        rcli INFO commandstats >"$TMP/commandstats.txt"
        end="$(date +%s.%N)"
        rss_after="$(rss_bytes)"
        secs="$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')"

        # tokens kind seconds rps requests non2xx errors rss_delta, then
        # name=calls for every command.
        awk -v n="$n" -v kind="$kind" -v secs="$secs" \
            -v rss="$((rss_after - rss_before))" -v stats="$TMP/commandstats.txt" '
            /^Requests\/sec:/ { rps = $2 }
            / requests in / { requests = $1 }
            /Non-2xx or 3xx responses:/ { non2xx = $NF }
            /Socket errors:/ {
                for (i = 3; i <= NF; i++) { gsub(",", "", $i); if ($i ~ /^[0-9]+$/) errors += $i }
            }
            END {
                line = sprintf("%s\t%s\t%.3f\t%.1f\t%d\t%d\t%d\t%d",
                    n, kind, secs, rps, requests, non2xx, errors, rss)
                while ((getline l < stats) > 0) {
                    if (l !~ /^cmdstat_/) continue
                    split(l, f, /[_:=,]/)
                    line = line "\t" f[2] "=" f[4]
                }
                print line
            }' "$TMP/wrk.txt" >>"$RESULTS"
        tail -n 1 "$RESULTS" | awk -F'\t' '{
            printf "    %.0f req/s over %s s, %d requests, non-2xx %d, socket errors %d\n", $4, $3, $5, $6, $7
        }'
        sed -n 's/^status /    answered /p' "$TMP/wrk.txt"
    done
done

# ---- memory per cached token ------------------------------------------------

if ((MEMTOKENS > 0)); then
    echo "==> memory: creating $MEMTOKENS tokens, then requesting each once"
    MEM_RSS0="$(rss_bytes)"
    : >"$TMP/tokens-mem"
    create_tokens "$MEMTOKENS" plain "$TMP/tokens-mem"
    MEM_RSS1="$(rss_bytes)"
    warm_tokens "$TMP/tokens-mem"
    MEM_RSS2="$(rss_bytes)"
    MEM_CACHED="$(cache_entries)"
fi

# ---- report -----------------------------------------------------------------

# A markdown table rule for right-aligned columns of these widths.
rule() {
    local width line="|"
    for width in "$@"; do
        line+="$(printf -- '-%.0s' $(seq "$((width + 1))")):|"
    done
    echo "$line"
}

cores="$(nproc)"
commit="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
echo
echo "tokengate Redis load, one replica (commit $commit, $(redis-server --version | awk '{ print $3 }')):" \
    "wrk -t$THREADS -c$CONNECTIONS for $DURATION per scenario, rotating over the scenario's tokens," \
    "all cached before the run"
echo "intervals (defaults): [rate_limit] sync_interval $SYNC_INTERVAL, [last_accessed] flush_interval" \
    "$FLUSH_INTERVAL, [cache] ttl $CACHE_TTL; quota leases last 10 s (returned by a sweep every 1 s)"
echo "NOTE: wrk, tokengate, the upstream and redis share this machine's $cores cores (load average" \
    "$(cut -d' ' -f1-3 /proc/loadavg)): requests/s are noisy, the call rates are the figures."
echo
echo "Redis calls per second (per second of the measured window: CONFIG RESETSTAT to INFO):"
printf '| %6s | %5s | %8s | %7s | %7s | %7s | %5s | %11s | %9s | %9s | %16s | %13s |\n' tokens kind \
    "req/s" evalsha hgetall xread xinfo "script|load" "other top" "top level" "all (+in script)" "top / 1k req"
rule 6 5 8 7 7 7 5 11 9 9 16 13
awk -F'\t' -v in_script="$IN_SCRIPT" '
    BEGIN { split(in_script, s, " "); for (k in s) inside[s[k]] = 1 }
    {
        delete c; top = 0; all = 0
        for (i = 9; i <= NF; i++) {
            split($i, kv, "=")
            name = kv[1]; calls = kv[2]
            if (name == "info" || name ~ /^config/) continue
            c[name] = calls; all += calls
            if (!(name in inside)) top += calls
        }
        secs = $3
        named = c["evalsha"] + c["eval"] + c["hgetall"] + c["xread"] + c["xinfo|stream"] + c["script|load"]
        printf "| %6d | %5s | %8.0f | %7.1f | %7.2f | %7.2f | %5.2f | %11.2f | %9.2f | %9.1f | %16.1f | %13.2f |\n",
            $1, $2, $4, (c["evalsha"] + c["eval"]) / secs, c["hgetall"] / secs, c["xread"] / secs,
            c["xinfo|stream"] / secs, c["script|load"] / secs, (top - named) / secs, top / secs,
            all / secs, ($5 > 0 ? top * 1000 / $5 : 0)
    }' "$RESULTS"

echo
echo "EVALSHA calls per second by script (rate-limit rounds: TIME; last-accessed writes: EXISTS;"
echo "quota give-backs: HINCRBY; quota leases: the rest), and tokengate's RSS growth per token"
echo "(RSS after the run - before creating the scenario's tokens, / tokens):"
printf '| %6s | %5s | %17s | %14s | %12s | %16s | %16s |\n' \
    tokens kind "rate-limit rounds" "last-accessed" "quota leases" "quota give-backs" "RSS growth/token"
rule 6 5 17 14 12 16 16
awk -F'\t' '
    {
        delete c
        for (i = 9; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] }
        secs = $3
        evalsha = c["evalsha"] + c["eval"]
        leases = evalsha - c["time"] - c["exists"] - c["hincrby"]
        printf "| %6d | %5s | %17.1f | %14.2f | %12.2f | %16.2f | %14.0f B |\n", $1, $2,
            c["time"] / secs, c["exists"] / secs, leases / secs, c["hincrby"] / secs, $8 / $1
    }' "$RESULTS"

if ((MEMTOKENS > 0)); then
    echo
    awk -v n="$MEMTOKENS" -v r0="$MEM_RSS0" -v r1="$MEM_RSS1" -v r2="$MEM_RSS2" -v cached="$MEM_CACHED" 'BEGIN {
        printf "memory: %d tokens created, then each requested once (cache entries now: %s)\n", n, cached
        printf "  tokengate RSS: %.1f MiB before, %.1f MiB after creating, %.1f MiB after caching\n",
            r0 / 1048576, r1 / 1048576, r2 / 1048576
        printf "  per cached token: %.0f bytes (after caching - before creating) / %d;", (r2 - r0) / n, n
        printf " %.0f bytes counting the caching only\n", (r2 - r1) / n
    }'
fi

bad_total="$(awk -F'\t' '{ s += $6 + $7 } END { print s + 0 }' "$RESULTS")"
OK=1
if ((bad_total > 0)); then
    echo "WARNING: $bad_total non-2xx responses or socket errors: the figures above are not valid" >&2
    exit 1
fi
