#!/usr/bin/env bash
# Load benchmark for `tokengate serve`, on loopback only.
#
# Builds the release binaries, starts redis-server, a minimal upstream
# (examples/bench_upstream.rs), tokengate (proxy + forward-auth + admin) and
# nginx, mints one token through the admin API, then measures with wrk, in
# ROUNDS interleaved rounds, five targets:
#
#   upstream            wrk -> upstream, directly
#   nginx-plain         wrk -> nginx proxy_pass -> upstream (no auth)
#   tokengate-proxy     wrk -> tokengate proxy (cached token) -> upstream
#   nginx-stub          wrk -> nginx auth_request -> stub (nginx, 200) ; -> upstream
#   nginx-tokengate     wrk -> nginx auth_request -> tokengate forward-auth ; -> upstream
#
# and prints the median req/s and p99 of each, CPU time per request of each
# process, and the ratios tokengate-proxy / nginx-plain (target >= 0.8) and
# nginx-tokengate / nginx-stub (target >= 0.9).
#
# Usage: bash benches/load.sh
# Environment (defaults in brackets):
#   DURATION [10s]      wrk duration of each measured run
#   ROUNDS [3]          interleaved rounds (each round runs all five targets)
#   CONNECTIONS [64]    wrk connections
#   THREADS [2]         wrk threads
#   WARMUP [2s]         a wrk run per target before measuring (0 to skip)
#   NGINX_WORKERS [auto]   nginx worker_processes
#   STUB [nginx]        the auth stub: "nginx" (a server block answering 200)
#                       or "upstream" (the hyper bench upstream: 200, empty body)
#   PLAIN_FORWARDED [1] 1: nginx-plain sets Host and X-Forwarded-For/-Proto/-Host
#                       as tokengate's proxy does (the same job); 0: bare proxy_pass
#   TG_LOG_LEVEL [info] tokengate's [log] level
#   TG_WORKERS          tokengate's [server] workers (default: one per core)
#   TARGETS             a subset of the targets, e.g. "nginx-plain tokengate-proxy"
#   NGINX [/usr/sbin/nginx]
#   CARGO_TARGET_DIR    honoured as by cargo (default: ./target)
#   KEEP_TMP [0]        1: keep the temporary directory (configs, logs)
# The servers and wrk share this machine's cores: compare the targets with each
# other (ratios, one interleaved run), not the absolute numbers.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2s}"
NGINX_WORKERS="${NGINX_WORKERS:-auto}"
STUB="${STUB:-nginx}"
PLAIN_FORWARDED="${PLAIN_FORWARDED:-1}"
TG_LOG_LEVEL="${TG_LOG_LEVEL:-info}"
TG_WORKERS="${TG_WORKERS:-}"
NGINX="${NGINX:-/usr/sbin/nginx}"
KEEP_TMP="${KEEP_TMP:-0}"

PROXY_TARGET=0.8
FORWARD_AUTH_TARGET=0.9

# ---- prerequisites ----------------------------------------------------------

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ -x "$NGINX" ]] || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    echo "load.sh: missing: ${missing[*]} (nginx is looked for at $NGINX)" >&2
    echo "install them with: sudo apt-get install -y wrk nginx redis-server curl" >&2
    exit 1
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing (install Rust: https://rustup.rs)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
((THREADS <= CONNECTIONS)) || die "THREADS must not exceed CONNECTIONS"
[[ "$STUB" == nginx || "$STUB" == upstream ]] || die "STUB must be 'nginx' or 'upstream'"
[[ "$PLAIN_FORWARDED" == 0 || "$PLAIN_FORWARDED" == 1 ]] || die "PLAIN_FORWARDED must be 0 or 1"
[[ -z "$TG_WORKERS" || "$TG_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "TG_WORKERS must be a positive integer"

cd "$ROOT"

# ---- build ------------------------------------------------------------------

build_release

# ---- temp dir, cleanup ------------------------------------------------------

make_tmp tokengate-load
# nginx's workers may run as another user (nobody, under root): let them
# reach their temp directories. Nothing secret is written here.
chmod 711 "$TMP"
NGINX_PID=""

# ---- ports ------------------------------------------------------------------

read -r REDIS_PORT UPSTREAM_PORT TG_PROXY_PORT TG_FA_PORT TG_ADMIN_PORT \
    NGINX_PLAIN_PORT NGINX_STUB_PORT NGINX_TG_PORT STUB_PORT < <(free_ports 9)

# ---- redis ------------------------------------------------------------------

echo "==> starting redis-server, the upstream, tokengate and nginx (temp dir $TMP)"
start_redis

# ---- upstream ---------------------------------------------------------------

start_upstream

# ---- tokengate --------------------------------------------------------------

cat >"$TMP/tokengate.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "tokengate-load:"

[cache]
# One token, validated once: every measured request is a cache hit.
ttl = "1h"

[rate_limit]
# Out of wrk's reach (still checked on every request): a 429 would measure
# the wrong thing.
per_token_requests = 1000000
per_token_period = "1s"
per_token_burst = 10000000

[proxy]
listen = "127.0.0.1:$TG_PROXY_PORT"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"

[forward_auth]
listen = "127.0.0.1:$TG_FA_PORT"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[server]
shutdown_grace = "2s"
${TG_WORKERS:+workers = $TG_WORKERS}

[log]
level = "$TG_LOG_LEVEL"
EOF

start_tokengate "$TG_PROXY_PORT" "$TG_FA_PORT" "$TG_ADMIN_PORT"

# ---- nginx ------------------------------------------------------------------

if [[ "$STUB" == nginx ]]; then
    STUB_SERVER="127.0.0.1:$STUB_PORT"
else
    STUB_SERVER="127.0.0.1:$UPSTREAM_PORT"
fi
mkdir -p "$TMP/nginx"
PLAIN_HEADERS=""
if [[ "$PLAIN_FORWARDED" == 1 ]]; then
    # What tokengate's proxy sends besides the identity: the client's Host and
    # X-Forwarded-For/-Proto/-Host. (nginx variables: not for the shell.)
    # shellcheck disable=SC2016
    PLAIN_HEADERS='proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;'
fi
# The three measured servers proxy to the upstream the same way (keepalive,
# HTTP/1.1, Connection ""); the two auth_request servers differ only in the
# upstream their /_auth location asks (docs/guide/integrations/nginx.conf's setup).
auth_server() {
    local port=$1 auth_upstream=$2
    cat <<EOF
    server {
        listen 127.0.0.1:$port;
        location / {
            auth_request /_auth;
            auth_request_set \$tokengate_account \$upstream_http_x_account_id;
            auth_request_set \$tokengate_token \$upstream_http_x_token_id;
            proxy_set_header X-Account-Id \$tokengate_account;
            proxy_set_header X-Token-Id \$tokengate_token;
            proxy_set_header Authorization "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://bench_upstream;
        }
        location = /_auth {
            internal;
            proxy_pass http://$auth_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
EOF
}
cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }
    upstream tokengate_forward_auth {
        server 127.0.0.1:$TG_FA_PORT;
        keepalive 64;
    }
    upstream auth_stub {
        server $STUB_SERVER;
        keepalive 64;
    }

    # nginx-plain: proxy_pass, no auth.
    server {
        listen 127.0.0.1:$NGINX_PLAIN_PORT;
        location / {
            $PLAIN_HEADERS
            proxy_set_header Authorization "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://bench_upstream;
        }
    }

    # The stub auth server (STUB=nginx): 200 with identity headers, like
    # tokengate's forward-auth answer.
    server {
        listen 127.0.0.1:$STUB_PORT;
        location / {
            add_header X-Account-Id bench;
            add_header X-Token-Id 00000000-0000-0000-0000-000000000000;
            return 200;
        }
    }

    # nginx-stub: auth_request to the stub.
$(auth_server "$NGINX_STUB_PORT" auth_stub)

    # nginx-tokengate: auth_request to tokengate's forward-auth endpoint.
$(auth_server "$NGINX_TG_PORT" tokengate_forward_auth)
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" -t >"$TMP/nginx-test.log" 2>&1 \
    || { cat "$TMP/nginx-test.log" >&2; die "nginx rejected its config"; }
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for port in "$NGINX_PLAIN_PORT" "$NGINX_STUB_PORT" "$NGINX_TG_PORT" "$STUB_PORT"; do
    wait_for_port "$port" "$NGINX_PID" nginx
done

# ---- token, checks ----------------------------------------------------------

wait_for_readyz

created="$(curl -sS -X POST "http://127.0.0.1:$TG_ADMIN_PORT/v1/accounts/bench/tokens" \
    -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
    -d '{"name": "load benchmark"}')"
TOKEN="$(printf '%s' "$created" | grep -o '"token":"mk_[A-Za-z0-9]*"' | cut -d'"' -f4 || true)"
[[ "$TOKEN" == mk_* ]] || die "could not mint a token; the admin API answered: $created"

NAMES=(upstream nginx-plain tokengate-proxy nginx-stub nginx-tokengate)
declare -A URL=(
    [upstream]="http://127.0.0.1:$UPSTREAM_PORT/"
    [nginx-plain]="http://127.0.0.1:$NGINX_PLAIN_PORT/"
    [tokengate-proxy]="http://127.0.0.1:$TG_PROXY_PORT/"
    [nginx-stub]="http://127.0.0.1:$NGINX_STUB_PORT/"
    [nginx-tokengate]="http://127.0.0.1:$NGINX_TG_PORT/"
)
declare -A LABEL=(
    [upstream]="upstream direct"
    [nginx-plain]="nginx proxy_pass (no auth)"
    [tokengate-proxy]="tokengate proxy (cached token)"
    [nginx-stub]="nginx auth_request -> stub"
    [nginx-tokengate]="nginx auth_request -> tokengate"
)

status_of() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true
}
for name in "${NAMES[@]}"; do
    code="$(status_of -H "Authorization: Bearer $TOKEN" "${URL[$name]}")"
    [[ "$code" == 200 ]] || die "$name (${URL[$name]}) answered $code with the token, not 200"
done
# Auth is really in the path: without the token, 401.
for name in tokengate-proxy nginx-tokengate; do
    code="$(status_of "${URL[$name]}")"
    [[ "$code" == 401 ]] || die "$name answered $code without a token, not 401"
done
echo "==> token minted; every target answers 200 with it (and tokengate 401 without)"
if [[ -n "${TARGETS:-}" ]]; then
    read -r -a NAMES <<<"$TARGETS"
    for name in "${NAMES[@]}"; do
        [[ -n "${URL[$name]:-}" ]] || die "unknown target '$name' in TARGETS"
    done
fi

# ---- measuring --------------------------------------------------------------

CLK_TCK="$(getconf CLK_TCK)"

# CPU ticks (user + system) of the given pids; vanished pids count 0.
ticks_of() {
    local total=0 pid stat fields
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        # After "pid (comm) ": state is field 3, utime 14, stime 15.
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}
nginx_pids() {
    echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ' || true)"
}
busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}
# One line: ticks of tokengate, nginx, upstream, redis, all busy CPU.
snapshot() {
    # shellcheck disable=SC2046
    echo "$(ticks_of "$TG_PID") $(ticks_of $(nginx_pids)) $(ticks_of "$UPSTREAM_PID") \
$(ticks_of "$REDIS_PID") $(busy_ticks)"
}

# Runs wrk on target $1 for $2; records a result line unless $3 is "warmup".
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run_wrk() {
    local name=$1 duration=$2 kind=${3:-measure} out before after
    out="$TMP/wrk-$name.txt"
    before="$(snapshot)"
    # In the background, so that a signal to this script acts at once.
    wrk --latency -t "$THREADS" -c "$CONNECTIONS" -d "$duration" --timeout 5s \
        -H "Authorization: Bearer $TOKEN" "${URL[$name]}" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$out" >&2; die "wrk failed on $name"; }
    WRK_PID=""
    after="$(snapshot)"
    [[ "$kind" == measure ]] || return 0
    # name rps p99_ms requests non2xx socket_errors dticks(tg nginx upstream redis busy)
    awk -v name="$name" -v before="$before" -v after="$after" '
        function ms(v) {
            if (v ~ /us$/) return v * 0.001
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000
            if (v ~ /s$/) return v * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +99%/ { p99 = ms($2) }
        / requests in / { requests = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ {
            for (i = 3; i <= NF; i++) { gsub(",", "", $i); if ($i ~ /^[0-9]+$/) errors += $i }
        }
        END {
            nb = split(before, b, " "); split(after, a, " ")
            line = sprintf("%s\t%.2f\t%.3f\t%d\t%d\t%d", name, rps, p99, requests, non2xx, errors)
            for (i = 1; i <= nb; i++) line = line "\t" (a[i] - b[i])
            print line
        }' "$out" >>"$RESULTS"
    tail -n 1 "$RESULTS" | awk -F'\t' '{ printf "    %-16s %10.0f req/s   p99 %8.2f ms%s\n", $1, $2, $3, ($5 + $6 > 0 ? "   non-2xx " $5 ", socket errors " $6 : "") }'
}

if [[ "$WARMUP" != 0 ]]; then
    echo "==> warm-up: $WARMUP per target"
    for name in "${NAMES[@]}"; do
        run_wrk "$name" "$WARMUP" warmup
    done
fi

echo "==> measuring: $ROUNDS interleaved rounds x ${#NAMES[@]} targets x $DURATION" \
    "(wrk -t$THREADS -c$CONNECTIONS), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((round = 0; round < ROUNDS; round++)); do
    echo "  round $((round + 1))/$ROUNDS"
    # Rotate the order each round so that no target always runs first.
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
        run_wrk "${NAMES[$(((i + round) % ${#NAMES[@]}))]}" "$DURATION"
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report -----------------------------------------------------------------

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
declare -A RPS P99
for name in "${NAMES[@]}"; do
    RPS[$name]="$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$RESULTS" | median)"
    P99[$name]="$(awk -F'\t' -v n="$name" '$1 == n { print $3 }' "$RESULTS" | median)"
done

cores="$(nproc)"
commit="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
echo
echo "tokengate load benchmark (commit $commit): $ROUNDS interleaved rounds of $DURATION per target," \
    "wrk -t$THREADS -c$CONNECTIONS, nginx worker_processes $NGINX_WORKERS, stub: $STUB," \
    "nginx-plain forwarded headers: $PLAIN_FORWARDED"
echo "NOTE: wrk, nginx, tokengate, the upstream and redis all share this machine's" \
    "$cores cores (load average $LOAD_AFTER after the run):"
echo "      compare the targets with each other, not the absolute numbers."
echo
printf '| %-31s | %13s | %12s | %-26s | %s |\n' target "req/s (median)" "p99 (median)" "req/s per round" "non-2xx / socket errors"
printf '|%s|%s:|%s:|%s|%s|\n' "$(printf -- '-%.0s' {1..33})" "$(printf -- '-%.0s' {1..15})" \
    "$(printf -- '-%.0s' {1..13})" "$(printf -- '-%.0s' {1..28})" "$(printf -- '-%.0s' {1..25})"
for name in "${NAMES[@]}"; do
    rounds="$(awk -F'\t' -v n="$name" '$1 == n { printf "%s%.0f", (k++ ? " " : ""), $2 }' "$RESULTS")"
    bad="$(awk -F'\t' -v n="$name" '$1 == n { a += $5; b += $6 } END { print a + 0 " / " b + 0 }' "$RESULTS")"
    printf '| %-31s | %14.0f | %9.2f ms | %-26s | %23s |\n' "${LABEL[$name]}" "${RPS[$name]}" "${P99[$name]}" "$rounds" "$bad"
done

echo
echo "CPU time per request, in microseconds (all rounds of each target; \"rest\" is every"
echo "other busy CPU on the machine: wrk, the kernel's softirqs, anything else running):"
printf '| %-31s | %9s | %9s | %9s | %9s | %9s | %9s |\n' target tokengate nginx upstream redis rest total
printf '|%s|%s:|%s:|%s:|%s:|%s:|%s:|\n' "$(printf -- '-%.0s' {1..33})" "$(printf -- '-%.0s' {1..10})" \
    "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..10})" \
    "$(printf -- '-%.0s' {1..10})" "$(printf -- '-%.0s' {1..10})"
for name in "${NAMES[@]}"; do
    awk -F'\t' -v n="$name" -v label="${LABEL[$name]}" -v tck="$CLK_TCK" '
        $1 == n { req += $4; tg += $7; ng += $8; up += $9; rd += $10; busy += $11 }
        END {
            f = 1e6 / tck / (req > 0 ? req : 1)
            printf "| %-31s | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f |\n", label,
                tg * f, ng * f, up * f, rd * f, (busy - tg - ng - up - rd) * f, busy * f
        }' "$RESULTS"
done

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}
verdict() {
    awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0 ? "met" : "MISSED") }'
}
echo
if [[ -n "${RPS[tokengate-proxy]:-}" && -n "${RPS[nginx-plain]:-}" ]]; then
    proxy_ratio="$(ratio "${RPS[tokengate-proxy]}" "${RPS[nginx-plain]}")"
    printf 'tokengate proxy / nginx plain proxy, req/s:  %s  (target >= %s: %s); p99 ratio %s\n' \
        "$proxy_ratio" "$PROXY_TARGET" "$(verdict "$proxy_ratio" "$PROXY_TARGET")" \
        "$(ratio "${P99[tokengate-proxy]}" "${P99[nginx-plain]}")"
fi
if [[ -n "${RPS[nginx-tokengate]:-}" && -n "${RPS[nginx-stub]:-}" ]]; then
    fa_ratio="$(ratio "${RPS[nginx-tokengate]}" "${RPS[nginx-stub]}")"
    printf 'nginx->tokengate / nginx->stub, req/s:       %s  (target >= %s: %s); p99 ratio %s\n' \
        "$fa_ratio" "$FORWARD_AUTH_TARGET" "$(verdict "$fa_ratio" "$FORWARD_AUTH_TARGET")" \
        "$(ratio "${P99[nginx-tokengate]}" "${P99[nginx-stub]}")"
fi

bad_total="$(awk -F'\t' '{ s += $5 + $6 } END { print s + 0 }' "$RESULTS")"
OK=1
if ((bad_total > 0)); then
    echo "WARNING: $bad_total non-2xx responses or socket errors: the figures above are not valid" >&2
    exit 1
fi
