#!/usr/bin/env bash
# Benchmark of claude-agent-http against fake-anthropic: service overhead on a
# chat round trip, time to first streamed byte, turns per second at 32
# concurrent sessions, on each session store. Writes its section of
# bench/RESULTS.md (between marker comments) and the raw figures in
# bench/results/. See bench/README.md.
#
# Settings (environment):
#   BENCH_BACKENDS         stores to measure (default: "memory sqlite postgresql")
#   BENCH_REQUESTS         measured chat round trips (default 400)
#   BENCH_STREAM_REQUESTS  measured streamed turns (default 300)
#   BENCH_WARMUP           unmeasured turns before each of those (default 40)
#   BENCH_ROTATE           turns per session before a fresh one (default 20)
#   BENCH_CONCURRENCY      concurrent sessions for turns/s (default 32)
#   BENCH_DURATION         seconds of the turns/s run (default 15)
#   BENCH_RELAY=0          let the service and the direct calls talk to fake-anthropic
#                          without the TCP relay (see bench/README.md: the fake's
#                          Nagle stalls then add ~40 ms to many calls)
#   BENCH_NO_RELAY_CHECK=0 skip the extra short run that shows those stalls
#   BENCH_PG_HOST/PORT/USER  PostgreSQL server (default 127.0.0.1 5432 postgres, trust auth)
#   BENCH_SKIP_BUILD=1     use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_RESULTS_MD       where to write the section (default bench/RESULTS.md)
#   BENCH_RESULTS_DIR      where to write the raw figures (default bench/results)
#   BENCH_TMPDIR           where the run's scratch directory goes (default $CARGO_TARGET_DIR)
#   BENCH_REVISION         revision to name in the report (default: from git)
#   CARGO_TARGET_DIR       cargo's target directory (default ./target)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BACKENDS=${BENCH_BACKENDS:-memory sqlite postgresql}
REQUESTS=${BENCH_REQUESTS:-400}
STREAM_REQUESTS=${BENCH_STREAM_REQUESTS:-300}
WARMUP=${BENCH_WARMUP:-40}
ROTATE=${BENCH_ROTATE:-20}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
DURATION=${BENCH_DURATION:-15}
PG_HOST=${BENCH_PG_HOST:-127.0.0.1}
PG_PORT=${BENCH_PG_PORT:-5432}
PG_USER=${BENCH_PG_USER:-postgres}
RESULTS_MD=${BENCH_RESULTS_MD:-$ROOT/bench/RESULTS.md}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/bench/results}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for backend in $BACKENDS; do
    case $backend in
        memory | sqlite | postgresql) ;;
        *) die "unknown backend '$backend' (memory, sqlite, postgresql)" ;;
    esac
done

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building release binaries in $TARGET_DIR"
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p claude-agent-http -p fake-anthropic
    # The load generator is a workspace of its own (bench/loadgen).
    CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked \
        --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
fi
for bin in claude-agent-http fake-anthropic loadgen; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing (build it, or unset BENCH_SKIP_BUILD)"
done

# Not under /tmp: the service warns that Bash commands could reach users'
# directories and the database there.
WORK=$(mktemp -d "${BENCH_TMPDIR:-$TARGET_DIR}/bench-run.XXXXXX")
FAKE_PID=""
RELAY_PID=""
SERVICE_PID=""
SERVICE_RELAY_PID=""
PG_DB=""

psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"
}

stop() {
    local pid=$1
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

drop_database() {
    [[ -n $PG_DB ]] || return 0
    psql_admin -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" ||
        log "warning: could not drop database $PG_DB"
    PG_DB=""
}

cleanup() {
    stop "$SERVICE_RELAY_PID"
    stop "$SERVICE_PID"
    stop "$RELAY_PID"
    stop "$FAKE_PID"
    drop_database
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line matching REGEX; prints the first such line.
wait_for_line() {
    local file=$1 regex=$2 pid=$3
    for _ in $(seq 300); do
        if grep -m1 -E "$regex" "$file" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "process $pid exited early"; }
        sleep 0.05
    done
    cat "$file" >&2
    die "timed out waiting for /$regex/ in $file"
}

# Starts fake-anthropic and, unless RELAY is 0, the relay in front of it;
# UPSTREAM_URL is where the service and the direct calls go.
start_fake() {
    local logfile=$WORK/fake-$1.log relay=$2
    "$BIN/fake-anthropic" --host 127.0.0.1 --port 0 >"$logfile" 2>&1 &
    FAKE_PID=$!
    FAKE_URL=$(wait_for_line "$logfile" '^fake-anthropic listening on ' "$FAKE_PID" |
        sed 's/^fake-anthropic listening on //')
    UPSTREAM_URL=$FAKE_URL
    if [[ $relay == 1 ]]; then
        "$BIN/loadgen" relay --listen 127.0.0.1:0 --upstream "$FAKE_URL" >"$WORK/relay-$1.log" 2>&1 &
        RELAY_PID=$!
        UPSTREAM_URL=$(wait_for_line "$WORK/relay-$1.log" '^relay listening on ' "$RELAY_PID" |
            sed 's/^relay listening on //')
    fi
}

# Starts the service on a free loopback port with only the settings below
# (a clean environment, and a working directory without config.yaml).
start_service() {
    local name=$1 backend=$2 dir=$WORK/service-$1
    local logfile=$WORK/service-$1.log
    mkdir -p "$dir/users"
    local -a settings=(
        "PATH=$PATH"
        "HOME=$dir"
        "CLAUDE_AGENT_API_HOST=127.0.0.1"
        "API_PORT=0"
        "CLAUDE_AGENT_USER_BASE_DIR=$dir/users"
        "CLAUDE_AGENT_SESSION_STORAGE=$backend"
        "ANTHROPIC_API_KEY=bench-key"
        "ANTHROPIC_BASE_URL=$UPSTREAM_URL"
    )
    case $backend in
        sqlite) settings+=("CLAUDE_AGENT_SESSION_SQLITE_PATH=$dir/sessions.db") ;;
        postgresql)
            PG_DB="claude_agent_bench_$(date +%s)_$$"
            settings+=(
                "CLAUDE_AGENT_SESSION_PG_HOST=$PG_HOST"
                "CLAUDE_AGENT_SESSION_PG_PORT=$PG_PORT"
                "CLAUDE_AGENT_SESSION_PG_USER=$PG_USER"
                "CLAUDE_AGENT_SESSION_PG_DATABASE=$PG_DB"
            )
            ;;
    esac
    [[ -n ${RUST_LOG:-} ]] && settings+=("RUST_LOG=$RUST_LOG")
    (cd "$dir" && exec env -i "${settings[@]}" "$BIN/claude-agent-http") >"$logfile" 2>&1 &
    SERVICE_PID=$!
    local line
    line=$(wait_for_line "$logfile" 'listening.*port=[0-9]+' "$SERVICE_PID")
    SERVICE_URL="http://127.0.0.1:$(grep -oE 'port=[0-9]+' <<<"$line" | head -n1 | cut -d= -f2)"
}

if [[ " $BACKENDS " == *" postgresql "* ]]; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" ||
        die "no PostgreSQL at $PG_HOST:$PG_PORT (start it, or set BENCH_BACKENDS=\"memory sqlite\")"
fi

CLK_TCK=$(getconf CLK_TCK)
RELAY=${BENCH_RELAY:-1}
RESULT_FILES=()
mkdir -p "$RESULTS_DIR"

# measure NAME BACKEND RELAY [loadgen options...]
measure() {
    local name=$1 backend=$2 relay=$3
    shift 3
    start_fake "$name" "$relay"
    start_service "$name" "$backend"
    log "$name: service $SERVICE_URL (pid $SERVICE_PID), upstream $UPSTREAM_URL, fake-anthropic pid $FAKE_PID"
    local out=$RESULTS_DIR/$name.json
    local -a acked=()
    if [[ $relay == 1 ]]; then
        # Phase 2 also reads the service's stream through a relay that ACKs
        # at once: what clients would see if the service set TCP_NODELAY.
        "$BIN/loadgen" relay --listen 127.0.0.1:0 --upstream "$SERVICE_URL" \
            >"$WORK/service-relay-$name.log" 2>&1 &
        SERVICE_RELAY_PID=$!
        acked=(--service-acked "$(wait_for_line "$WORK/service-relay-$name.log" \
            '^relay listening on ' "$SERVICE_RELAY_PID" | sed 's/^relay listening on //')")
    fi
    "$BIN/loadgen" measure "${acked[@]}" \
        --service "$SERVICE_URL" --fake "$UPSTREAM_URL" --backend "$backend" --label "$name" \
        --service-pid "$SERVICE_PID" --service-log "$WORK/service-$name.log" \
        --fake-pid "$FAKE_PID" --clk-tck "$CLK_TCK" \
        --warmup "$WARMUP" --rotate "$ROTATE" --concurrency "$CONCURRENCY" \
        --out "$out" "$@"
    RESULT_FILES+=("$out")
    if grep -qE ' (ERROR|WARN) ' "$WORK/service-$name.log"; then
        log "$name: the service logged warnings or errors:"
        grep -E ' (ERROR|WARN) ' "$WORK/service-$name.log" | sed -E 's/^[^ ]+ //' |
            sort | uniq -c | sort -rn | head -n 10 >&2
    fi
    stop "$SERVICE_RELAY_PID"
    SERVICE_RELAY_PID=""
    stop "$SERVICE_PID"
    SERVICE_PID=""
    stop "$RELAY_PID"
    RELAY_PID=""
    stop "$FAKE_PID"
    FAKE_PID=""
    drop_database
    # Let the kernel write back what this store left dirty, so the next one
    # does not pay for it in its fsyncs.
    sync
    sleep 2
}

sync # the build's output, for the same reason
sleep 2
for backend in $BACKENDS; do
    measure "$backend" "$backend" "$RELAY" \
        --requests "$REQUESTS" --stream-requests "$STREAM_REQUESTS" --duration "$DURATION"
done
if [[ $RELAY == 1 && ${BENCH_NO_RELAY_CHECK:-1} == 1 ]]; then
    # The same phases 1 and 2, shorter, without the relay: shows what the
    # fake's Nagle stalls do to the figures.
    measure "memory-no-relay" memory 0 --requests 100 --stream-requests 100 --duration 0
fi

if [[ -n ${BENCH_REVISION:-} ]]; then
    revision=$BENCH_REVISION
else
    revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git status --porcelain -- src crates Cargo.toml Cargo.lock migrations 2>/dev/null) ]]; then
        revision="$revision + uncommitted changes"
    fi
fi
# The command as run, with the settings that differ from the defaults.
overrides=$(env | grep -E '^BENCH_' | grep -v '^BENCH_SKIP_BUILD=' | sort | tr '\n' ' ' || true)
"$BIN/loadgen" report \
    --results-md "$RESULTS_MD" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --revision "$revision" \
    --command "${overrides}bench/run.sh" \
    --settings "stores: $BACKENDS; requests $REQUESTS, stream requests $STREAM_REQUESTS, warm-up $WARMUP, $ROTATE turns per session, $CONCURRENCY sessions for ${DURATION} s; service log level: ${RUST_LOG:-default}; release build" \
    "${RESULT_FILES[@]}"
log "wrote $RESULTS_MD and $RESULTS_DIR/*.json"
