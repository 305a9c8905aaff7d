#!/usr/bin/env bash
# Restart benchmark (issue 12): how long a restarted replica takes until
# every active token is admitted again, with bcrypt-10 records against
# HMAC-SHA256 records, side by side in one run.
#
# For each hash kind: starts a fresh redis-server and tokengate (forward-auth
# and admin API), creates TOKENS tokens through the admin API (CREATE_PARALLEL
# at once; with bcrypt this is TOKENS bcrypt hashes at BCRYPT_COST), restarts
# tokengate (an empty cache, as after a rolling deploy), then sends one request
# per token through forward-auth (curl --parallel, CONCURRENCY at once) and
# measures the time until every token got a 200 (any other answer is sent
# again), and tokengate's CPU time meanwhile. Prints both kinds and their
# ratio.
#
# Usage: bash benches/restart.sh
# Environment (defaults in brackets):
#   TOKENS [2000]          active tokens
#   CONCURRENCY [64]       requests in flight after the restart
#   CREATE_PARALLEL [8]    creations in flight
#   BCRYPT_COST [10]       bcrypt cost of the bcrypt records (the default)
#   KINDS ["bcrypt hmac-sha256"]
#   TG_WORKERS             tokengate's [server] workers (default: one per core)
#   CARGO_TARGET_DIR       honoured as by cargo (default: ./target)
#   KEEP_TMP [0]           1: keep the temporary directory (configs, logs)
# curl, tokengate and Redis share this machine's cores: compare the kinds
# with each other, not with another machine's figures.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOKENS="${TOKENS:-2000}"
CONCURRENCY="${CONCURRENCY:-64}"
CREATE_PARALLEL="${CREATE_PARALLEL:-8}"
BCRYPT_COST="${BCRYPT_COST:-10}"
KINDS="${KINDS:-bcrypt hmac-sha256}"
TG_WORKERS="${TG_WORKERS:-}"

command -v curl >/dev/null || die "curl is needed"
command -v redis-server >/dev/null || die "redis-server is needed"

cd "$ROOT"
build_release
make_tmp tokengate-restart
CLK_TCK="$(getconf CLK_TCK)"

# tokengate's user + system CPU time so far, in seconds.
cpu_seconds() {
    awk -v tck="$CLK_TCK" '{ printf "%.2f", ($14 + $15) / tck }' "/proc/$TG_PID/stat"
}

now() { date +%s.%N; }

stop_tokengate() {
    kill -TERM "$TG_PID"
    wait "$TG_PID" 2>/dev/null || true
    local kept=()
    local pid
    for pid in "${PIDS[@]}"; do
        [[ "$pid" == "$TG_PID" ]] || kept+=("$pid")
    done
    PIDS=("${kept[@]}")
}

# Runs the curl config $1 (transfers of `write-out "%{http_code} %{url}"`),
# $2 at once; prints curl's lines.
curl_all() {
    curl --silent --show-error --no-progress-meter --parallel --parallel-immediate --parallel-max "$2" --config "$1" || true
}

declare -A SECONDS_TO_ADMIT CPU_TO_ADMIT ROUNDS_TO_ADMIT
for kind in $KINDS; do
    echo "==> $kind: $TOKENS tokens"
    read -r REDIS_PORT TG_FA_PORT TG_ADMIN_PORT < <(free_ports 3)
    start_redis
    TG_HASH_KEY=""
    [[ "$kind" == hmac-sha256 ]] && TG_HASH_KEY="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
    cat >"$TMP/tokengate.toml" <<CONF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"

[security]
hash = "$kind"
bcrypt_cost = $BCRYPT_COST

[rate_limit]
# One request per token; nothing here may answer 429.
failed_auth_per_ip = 0

[forward_auth]
listen = "127.0.0.1:$TG_FA_PORT"

[admin]
listen = "127.0.0.1:$TG_ADMIN_PORT"

[server]
shutdown_grace = "2s"
${TG_WORKERS:+workers = $TG_WORKERS}

[log]
level = "warn"
access = false
CONF
    start_tokengate "$TG_FA_PORT" "$TG_ADMIN_PORT"
    wait_for_readyz

    # Create the tokens through the admin API.
    created="$TMP/created-$kind"
    mkdir -p "$created"
    : >"$TMP/create.curl"
    for ((i = 0; i < TOKENS; i++)); do
        ((i == 0)) || echo next >>"$TMP/create.curl"
        cat >>"$TMP/create.curl" <<CURL
url = "http://127.0.0.1:$TG_ADMIN_PORT/v1/accounts/bench/tokens"
header = "Authorization: Bearer $ADMIN_KEY"
header = "Content-Type: application/json"
data = "{\"name\": \"restart $i\"}"
output = "$created/$i.json"
CURL
    done
    started="$(now)"
    curl_all "$TMP/create.curl" "$CREATE_PARALLEL" >/dev/null
    cat "$created"/*.json | grep -o 'mk_[0-9A-Za-z]\{52\}' >"$TMP/tokens-$kind"
    made="$(wc -l <"$TMP/tokens-$kind")"
    ((made == TOKENS)) || die "$kind: created $made tokens, not $TOKENS"
    printf '    created in %.1f s\n' "$(echo "$(now) - $started" | bc)"
    redis-cli -p "$REDIS_PORT" --scan --pattern 'tokengate:token:*' >"$TMP/keys"
    stored="$(head -n 1 "$TMP/keys")"
    echo "    a stored hash: $(redis-cli -p "$REDIS_PORT" hget "$stored" hash | cut -c 1-24)…"

    # The restart: an empty cache.
    stop_tokengate
    start_tokengate "$TG_FA_PORT" "$TG_ADMIN_PORT"
    wait_for_readyz

    # One request per token; those not admitted are sent again.
    pending="$TMP/pending-$kind"
    cp "$TMP/tokens-$kind" "$pending"
    cpu_before="$(cpu_seconds)"
    started="$(now)"
    rounds=0
    while [[ -s "$pending" ]]; do
        rounds=$((rounds + 1))
        ((rounds <= 20)) || die "$kind: tokens still refused after 20 rounds"
        : >"$TMP/check.curl"
        i=0
        while read -r token; do
            ((i == 0)) || echo next >>"$TMP/check.curl"
            cat >>"$TMP/check.curl" <<CURL
url = "http://127.0.0.1:$TG_FA_PORT/t/$i"
header = "Authorization: Bearer $token"
output = "/dev/null"
write-out = "%{http_code} $i\\n"
CURL
            i=$((i + 1))
        done <"$pending"
        curl_all "$TMP/check.curl" "$CONCURRENCY" >"$TMP/codes"
        # The tokens whose request did not get a 200.
        awk '$1 != 200 { print $2 + 1 }' "$TMP/codes" >"$TMP/refused"
        admitted="$(awk '$1 == 200' "$TMP/codes" | wc -l)"
        if ((admitted + $(wc -l <"$TMP/refused") != $(wc -l <"$pending"))); then
            die "$kind: curl reported $(wc -l <"$TMP/codes") answers for $(wc -l <"$pending") requests"
        fi
        awk 'NR == FNR { want[$1]; next } FNR in want' "$TMP/refused" "$pending" >"$pending.next"
        mv "$pending.next" "$pending"
    done
    elapsed="$(echo "$(now) - $started" | bc)"
    cpu="$(echo "$(cpu_seconds) - $cpu_before" | bc)"
    SECONDS_TO_ADMIT[$kind]="$elapsed"
    CPU_TO_ADMIT[$kind]="$cpu"
    ROUNDS_TO_ADMIT[$kind]="$rounds"
    printf '    after the restart: all %d admitted in %.3f s (%d round(s)), tokengate CPU %.2f s\n' \
        "$TOKENS" "$elapsed" "$rounds" "$cpu"

    stop_tokengate
    kill -TERM "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
    PIDS=()
done

echo
echo "==> time until all $TOKENS tokens are admitted again after a restart (concurrency $CONCURRENCY, $(nproc) cores)"
printf '%-12s %12s %12s %8s\n' kind seconds "CPU seconds" rounds
for kind in $KINDS; do
    printf '%-12s %12.3f %12.2f %8d\n' "$kind" "${SECONDS_TO_ADMIT[$kind]}" "${CPU_TO_ADMIT[$kind]}" "${ROUNDS_TO_ADMIT[$kind]}"
done
if [[ -n "${SECONDS_TO_ADMIT[bcrypt]:-}" && -n "${SECONDS_TO_ADMIT[hmac-sha256]:-}" ]]; then
    printf 'ratio bcrypt / hmac-sha256: %.1f× the time\n' \
        "$(echo "${SECONDS_TO_ADMIT[bcrypt]} / ${SECONDS_TO_ADMIT[hmac-sha256]}" | bc -l)"
fi
OK=1
