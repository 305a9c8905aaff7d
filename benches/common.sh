# Shared set-up of the loopback benchmarks (benches/load.sh, benches/redis_load.sh);
# sourced, not run. Sets ROOT (the repository) and provides: die; build_release
# (tokengate and examples/bench_upstream, release; sets TOKENGATE_BIN, UPSTREAM_BIN);
# make_tmp (TMP, with the cleanup trap that stops every pid in PIDS and wrk's
# WRK_PID, shows the logs' last lines unless OK=1 and removes TMP unless
# KEEP_TMP=1); free_ports; wait_for_port; start_redis (REDIS_PID); start_upstream
# (UPSTREAM_PID); start_tokengate (ADMIN_KEY, TG_PID; passes TG_HASH_KEY on as
# TOKENGATE_HASH_KEY when set); wait_for_readyz.
# Plain bash, for scripts under `set -euo pipefail`.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# ---- build ------------------------------------------------------------------

build_release() {
    echo "==> building release binaries (cargo build --release)"
    cargo build --release --bin tokengate --example bench_upstream
    TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    [[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
    TOKENGATE_BIN="$TARGET_DIR/release/tokengate"
    UPSTREAM_BIN="$TARGET_DIR/release/examples/bench_upstream"
    [[ -x "$TOKENGATE_BIN" ]] || die "no binary at $TOKENGATE_BIN"
    [[ -x "$UPSTREAM_BIN" ]] || die "no binary at $UPSTREAM_BIN"
}

# ---- temp dir, cleanup ------------------------------------------------------

# Creates TMP (named ${TMPDIR:-/tmp}/$1.XXXXXX) and sets the traps that clean up.
make_tmp() {
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    PIDS=()
    WRK_PID=""
    OK=0
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    [[ -z "$WRK_PID" ]] || kill -TERM "$WRK_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((OK == 0)); then
        local log
        for log in "$TMP"/*.log; do
            [[ -s "$log" ]] || continue
            echo "--- last lines of $log" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then
        echo "configs and logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}

# ---- ports ------------------------------------------------------------------

# Prints N distinct free loopback ports.
free_ports() {
    local n=$1
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    else
        local ports=() port
        while ((${#ports[@]} < n)); do
            port=$((20000 + RANDOM % 30000))
            [[ " ${ports[*]} " == *" $port "* ]] && continue
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                ports+=("$port")
            fi
        done
        echo "${ports[*]}"
    fi
}

# Waits until 127.0.0.1:$1 accepts connections, while process $2 (named $3) lives.
wait_for_port() {
    local port=$1 pid=$2 name=$3
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (logs in $TMP)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s"
}

# ---- servers ----------------------------------------------------------------

# redis-server on REDIS_PORT, no persistence.
start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --loglevel warning --dir "$TMP" >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for_port "$REDIS_PORT" "$REDIS_PID" redis-server
}

# examples/bench_upstream on UPSTREAM_PORT.
start_upstream() {
    env -u TOKIO_WORKER_THREADS "$UPSTREAM_BIN" "$UPSTREAM_PORT" >"$TMP/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    wait_for_port "$UPSTREAM_PORT" "$UPSTREAM_PID" bench_upstream
}

# `tokengate serve` with $TMP/tokengate.toml and a fresh ADMIN_KEY; waits for
# the ports given as arguments.
start_tokengate() {
    local port var tg_env
    ADMIN_KEY="$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
    # Only this config applies: no RUST_LOG, no TOKENGATE_* from the caller.
    tg_env=(-u RUST_LOG -u TOKIO_WORKER_THREADS)
    while read -r var; do
        tg_env+=(-u "$var")
    done < <(env | grep -o '^TOKENGATE_[A-Za-z0-9_]*' || true)
    tg_env+=(TOKENGATE_ADMIN_KEY="$ADMIN_KEY")
    [[ -z "${TG_HASH_KEY:-}" ]] || tg_env+=(TOKENGATE_HASH_KEY="$TG_HASH_KEY")
    env "${tg_env[@]}" \
        "$TOKENGATE_BIN" serve --config "$TMP/tokengate.toml" >"$TMP/tokengate.log" 2>&1 &
    TG_PID=$!
    PIDS+=("$TG_PID")
    for port in "$@"; do
        wait_for_port "$port" "$TG_PID" tokengate
    done
}

# Waits until tokengate's admin /readyz (on TG_ADMIN_PORT) answers 200.
wait_for_readyz() {
    local ready=""
    for _ in $(seq 100); do
        ready="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TG_ADMIN_PORT/readyz" || true)"
        [[ "$ready" == 200 ]] && break
        sleep 0.1
    done
    [[ "$ready" == 200 ]] || die "tokengate /readyz answered '$ready', not 200"
}
