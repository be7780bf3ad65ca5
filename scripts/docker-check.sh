#!/usr/bin/env bash
# End-to-end check of the Docker deployment (Dockerfile, docker-compose.yml,
# docker-compose.override.bindmounts.yml, entrypoint, docker-start.sh) on a
# machine without a Docker engine, using podman + runc + podman-compose with
# host networking.
#
#   bash scripts/docker-check.sh          (as root; CI runs exactly this)
#
# It installs what it needs when it is missing: the Debian packages podman,
# runc, mmdebstrap, shellcheck, uidmap, fuse-overlayfs,
# containernetworking-plugins, iptables and curl (apt-get, system-wide), and
# podman-compose 1.6.0 from PyPI into a virtual environment of its own,
# target/docker-check-venv (never a global pip install). It makes the base
# images when they are missing (scripts/docker-base-images.sh), then:
#   1. lints: shellcheck on every shell script; compose config in all modes
#   2. builds the image from the Dockerfile
#   3. runs mode 1 (named volumes), mode 2 (bind mounts owned by a non-1000
#      user) and mode 3 (PostgreSQL, through docker-compose.postgres.yml), each:
#      /health, create a session, its directory owned by UID 1000, restart,
#      session still there, process runs as claudeuser; in mode 3 also the
#      guide's PostgreSQL commands (ps, exec postgres pg_isready, logs
#      postgres, exec postgres psql with \dt); plus the entrypoint's non-root
#      and APP_UID paths and docker-start.sh
#   4. reports image size and cold start time in a "Docker image" section for
#      bench/RESULTS.md: written to target/docker-check/RESULTS.md (a copy),
#      and to bench/RESULTS.md itself only with DOCKER_CHECK_RECORD=1, so a CI
#      run leaves the tracked tree as it was
# Containers, pods, volumes and temp files it made are removed on exit. It
# exits non-zero when any check fails.
#
# Environment knobs: DOCKER_CHECK_KEEP=1 keeps containers for debugging;
# DOCKER_CHECK_SKIP_INSTALL=1 skips apt/pip (podman-compose then comes from
# PATH); DOCKER_CHECK_RECORD=1 records the figures in bench/RESULTS.md;
# DOCKER_CHECK_NO_RESULTS=1 writes no results at all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

T0=$(date +%s)
RUN_ID="$$$(date +%s | tail -c 5)"
IMAGE=localhost/claude-agent-http:check
PROJECTS=(cah-check-m1 cah-check-m2 cah-check-m3 cah-check-start)
TMP=$(mktemp -d /var/tmp/claude-agent-docker-check.XXXXXX)
CI_OVERRIDE="$TMP/compose.ci.yml"
export CONTAINERS_CONF="$ROOT/docker/ci/containers.conf"

# Compose and the app must see only what this script sets.
unset ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN ANTHROPIC_BASE_URL ANTHROPIC_MODEL \
    CLAUDE_AGENT_CONFIG CLAUDE_AGENT_SESSION_STORAGE API_PORT CLAUDE_AGENT_API_PORT \
    POSTGRES_PORT HOST_USER_DATA_DIR HOST_DB_DIR HOST_CONFIG_FILE APP_IMAGE \
    RUST_IMAGE POSTGRES_IMAGE COMPOSE_FILE COMPOSE_PROJECT_NAME 2>/dev/null || true

# ---------------------------------------------------------------- reporting
declare -a SUMMARY=()
FAILED=0
BLOCKED=0
declare -A FIG=()

now_ms() { date +%s%3N; }
say() { printf '\n=== %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
pass() {
    SUMMARY+=("PASS     $1")
    printf '  PASS  %s\n' "$1"
}
fail() {
    SUMMARY+=("FAIL     $1${2:+: $2}")
    FAILED=$((FAILED + 1))
    printf '  FAIL  %s%s\n' "$1" "${2:+: $2}" >&2
}
blocked() {
    SUMMARY+=("BLOCKED  $1: $2")
    BLOCKED=$((BLOCKED + 1))
    printf '  BLOCKED  %s: %s\n' "$1" "$2" >&2
}
# check NAME COMMAND...: PASS when the command succeeds.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
show_tail() {
    if [ -f "$1" ]; then tail -n "${2:-30}" "$1" | sed 's/^/      | /' >&2; fi
}

# ---------------------------------------------------------------- cleanup
# podman-compose from the check's own virtual environment, else from PATH.
VENV="$ROOT/target/docker-check-venv"
PODMAN_COMPOSE=podman-compose
if [ -x "$VENV/bin/podman-compose" ]; then PODMAN_COMPOSE="$VENV/bin/podman-compose"; fi
pc() { timeout 300 "$PODMAN_COMPOSE" "$@"; }

cleanup_projects() {
    local p
    for p in "${PROJECTS[@]}"; do
        podman ps -a -q --filter "label=io.podman.compose.project=$p" | xargs -r podman rm -f -t 5 >/dev/null 2>&1 || true
        podman pod rm -f "pod_$p" >/dev/null 2>&1 || true
        podman volume ls -q --filter "name=^${p}_" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
    done
    podman rm -f -t 5 "cah-check-uid-$RUN_ID" "cah-check-nonroot-$RUN_ID" >/dev/null 2>&1 || true
}

PG_FALLBACK_DB=
FAKE_PID=
cleanup() {
    local rc=$?
    set +e
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
    if [ "${DOCKER_CHECK_KEEP:-0}" = 1 ]; then
        echo "DOCKER_CHECK_KEEP=1: leaving containers, volumes and $TMP"
    else
        cleanup_projects
        if [ -n "$PG_FALLBACK_DB" ]; then
            psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$PG_FALLBACK_DB\"" >/dev/null 2>&1
        fi
        [ -n "${STARTED_ENV:-}" ] && rm -f "$ROOT/.env"
        rm -rf "$TMP"
    fi
    print_summary
    if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then
        echo "docker-check: aborted (exit $rc) before all checks ran" >&2
        exit "$rc"
    fi
    [ "$FAILED" = 0 ] || exit 1
    exit 0
}

print_summary() {
    local total=$(($(date +%s) - T0)) line
    echo
    echo "=================== Docker deployment check: summary ==================="
    for line in "${SUMMARY[@]}"; do echo "  $line"; done
    echo "------------------------------------------------------------------------"
    printf '  %-38s %s\n' "image" "$IMAGE"
    printf '  %-38s %s\n' "image size" "${FIG[size]:-n/a}"
    printf '  %-38s %s\n' "image build time" "${FIG[build]:-n/a}"
    printf '  %-38s %s\n' "cold start to healthy, mode 1" "${FIG[start_m1]:-n/a}"
    printf '  %-38s %s\n' "cold start to healthy, mode 2" "${FIG[start_m2]:-n/a}"
    printf '  %-38s %s\n' "cold start to healthy, mode 3" "${FIG[start_m3]:-n/a}"
    printf '  %-38s %s\n' "restart to healthy, mode 1" "${FIG[restart_m1]:-n/a}"
    printf '  %-38s %s\n' "total time of this check" "${total} s"
    printf '  %-38s %s\n' "result" "$((${#SUMMARY[@]} - FAILED - BLOCKED)) passed, $FAILED failed, $BLOCKED blocked"
    echo "========================================================================"
    # The plain closing line CI reads.
    echo "$((${#SUMMARY[@]} - FAILED - BLOCKED)) passed, $FAILED failed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_healthy PORT TIMEOUT_S: poll /health until it answers 200 "healthy".
wait_healthy() {
    local port=$1 timeout=$2 deadline
    deadline=$(($(date +%s) + timeout))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if curl -fsS --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"status": *"healthy"'; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# create_session PORT USER: prints the session id; checks 201 and cwd.
create_session() {
    local port=$1 user=$2 body code
    body=$(curl -sS --max-time 10 -o - -w '\n%{http_code}' -X POST "http://127.0.0.1:$port/api/v1/sessions" \
        -H 'Content-Type: application/json' -d "{\"user_id\": \"$user\"}") || return 1
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    if [ "$code" != 201 ]; then
        note "POST /api/v1/sessions answered $code: $body" >&2
        return 1
    fi
    if [ "$(json_field cwd <<<"$body")" != "/data/claude-users/$user" ]; then
        note "unexpected cwd in $body" >&2
        return 1
    fi
    json_field session_id <<<"$body"
}

session_exists() {
    [ "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/api/v1/sessions/$2")" = 200 ]
}

# runs_as_claudeuser CONTAINER UID: every process of the container is
# claudeuser inside and has the given UID on the host, and the service is
# among them.
runs_as_claudeuser() {
    local ctr=$1 uid=$2 out hpid user args status=0
    out=$(podman top "$ctr" hpid user args 2>/dev/null | tail -n +2)
    grep -q 'claude-agent-http' <<<"$out" || {
        note "no claude-agent-http process in: $out"
        return 1
    }
    while read -r hpid user args; do
        local host_uid
        host_uid=$(stat -c %u "/proc/$hpid" 2>/dev/null || echo "?")
        note "pid $hpid: $user (host UID $host_uid) $args"
        if [ "$user" != claudeuser ] || [ "$host_uid" != "$uid" ]; then status=1; fi
    done <<<"$out"
    return "$status"
}

# bash_as_own_id PORT SESSION_ID DIR: one chat whose scripted Bash call writes
# `id -u` to a file; the file shows, and belongs to, the user's own id.
bash_as_own_id() {
    local port=$1 sid=$2 dir=$3 out uid owner
    curl -fsS --max-time 10 -X POST "http://127.0.0.1:$FAKE_PORT/_fake/replies" \
        -H 'Content-Type: application/json' -d '[
      {"kind": "tool_use", "calls": [{"name": "Bash", "input": {"command": "id -u > whoami.txt; grep CapEff /proc/self/status"}}]},
      {"kind": "text", "text": "done"}]' >/dev/null || return 1
    out=$(curl -sS --max-time 60 -X POST "http://127.0.0.1:$port/api/v1/chat" \
        -H 'Content-Type: application/json' \
        -d "{\"session_id\": \"$sid\", \"message\": \"who am I\"}") || return 1
    uid=$(cat "$dir/whoami.txt" 2>/dev/null) || {
        note "no whoami.txt; the chat answered: $out"
        return 1
    }
    owner=$(stat -c %u "$dir/whoami.txt")
    note "the command ran as UID $uid; whoami.txt belongs to UID $owner"
    grep -q 'CapEff:\\t0000000000000000' <<<"$out" || {
        note "the command held capabilities: $out"
        return 1
    }
    [ "$uid" = "$owner" ] && [ "$uid" != 0 ] && [ "$uid" != 1000 ]
}

owned_by_own_id() { # PATH: owned by a user's own id, neither claudeuser's (1000) nor root's
    local owner
    owner=$(stat -c %u "$1" 2>/dev/null) || {
        note "$1 does not exist"
        return 1
    }
    note "$1 owner UID $owner"
    [ "$owner" != 1000 ] && [ "$owner" != 0 ]
}

holds_only_switch_caps() { # CONTAINER: the service holds chown, dac_override, kill, setgid, setuid
    local hpid caps
    hpid=$(podman top "$1" hpid args 2>/dev/null | awk '/claude-agent-http/ && !/tini/ { print $1; exit }')
    caps=$(awk '/^CapEff:/ { print $2 }' "/proc/$hpid/status" 2>/dev/null)
    note "service pid $hpid CapEff $caps"
    [ "$caps" = 00000000000000e3 ]
}

owned_by() { # PATH UID
    local owner
    owner=$(stat -c %u "$1" 2>/dev/null) || {
        note "$1 does not exist"
        return 1
    }
    note "$1 owner UID $owner"
    [ "$owner" = "$2" ]
}

# ================================================================ 0. tools
say "0. tools"
if [ "${DOCKER_CHECK_SKIP_INSTALL:-0}" != 1 ]; then
    # The set this check is proven with (podman recommends some of them).
    missing=()
    for pkg in podman runc mmdebstrap shellcheck uidmap fuse-overlayfs \
        containernetworking-plugins iptables curl; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "docker-check: missing ${missing[*]} and not root; install them first" >&2
            exit 1
        fi
        note "installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq >"$TMP/apt.log" 2>&1 || { show_tail "$TMP/apt.log"; }
        if ! timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$TMP/apt.log" 2>&1; then
            show_tail "$TMP/apt.log"
            echo "docker-check: apt-get install ${missing[*]} failed" >&2
            exit 1
        fi
    fi
    if [ ! -x "$VENV/bin/podman-compose" ]; then
        note "installing podman-compose 1.6.0 from PyPI into $VENV"
        if ! { [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"; } >"$TMP/pip.log" 2>&1 ||
            ! timeout 300 "$VENV/bin/pip" install --quiet --disable-pip-version-check 'podman-compose==1.6.0' >>"$TMP/pip.log" 2>&1; then
            show_tail "$TMP/pip.log"
            echo "docker-check: could not install podman-compose into $VENV (python3-venv missing?)" >&2
            exit 1
        fi
        PODMAN_COMPOSE="$VENV/bin/podman-compose"
    fi
fi
for tool in podman runc mmdebstrap shellcheck curl "$PODMAN_COMPOSE" python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "docker-check: $tool not found" >&2
        exit 1
    }
done
note "$(podman --version); runc $(runc --version | awk 'NR==1{print $3}'); $("$PODMAN_COMPOSE" version 2>/dev/null | grep -m1 podman-compose); $(shellcheck --version | awk '/^version/{print "shellcheck " $2}')"
cleanup_projects
for name in claude-agent-http claude-agent-postgres; do
    if podman container exists "$name"; then
        echo "docker-check: a container named $name exists and was not made by this check; remove it (podman rm -f $name) and run again" >&2
        exit 1
    fi
done

# ================================================================ 1. lint
say "1. lint"
mapfile -t scripts < <(
    {
        git ls-files -co --exclude-standard -- '*.sh'
        git ls-files -co --exclude-standard -- scripts .ci docker | while read -r f; do
            [ -f "$f" ] && head -n 1 "$f" | grep -qE '^#!.*\b(ba|da|k)?sh\b' && echo "$f"
        done
    } | sort -u
)
# The deployment's own scripts must be clean at every severity; the project's
# other shell scripts must have no errors or warnings (style notes are shown).
own=() other=()
for f in "${scripts[@]}"; do
    case "$f" in
    docker-start.sh | docker/* | scripts/docker-*) own+=("$f") ;;
    *) other+=("$f") ;;
    esac
done
if shellcheck -x "${own[@]}" >"$TMP/shellcheck.log" 2>&1; then
    pass "shellcheck: ${own[*]}"
else
    show_tail "$TMP/shellcheck.log" 60
    fail "shellcheck (deployment scripts)" "see the findings above"
fi
if [ "${#other[@]}" -gt 0 ]; then
    if shellcheck -x --severity=warning "${other[@]}" >"$TMP/shellcheck-other.log" 2>&1; then
        pass "shellcheck --severity=warning: ${other[*]}"
        if ! shellcheck -x "${other[@]}" >"$TMP/shellcheck-style.log" 2>&1; then
            note "style notes (not failures):"
            grep -E '^In |SC[0-9]+' "$TMP/shellcheck-style.log" | sed 's/^/      /' || true
        fi
    else
        show_tail "$TMP/shellcheck-other.log" 60
        fail "shellcheck (other scripts)" "see the findings above"
    fi
fi

# The CI override: host networking (no bridge networks in the sandbox), and the
# PostgreSQL port moved off 5432, which the machine's own server holds.
APP_PORT=$(free_port)
PG_PORT=$(free_port)
cat >"$CI_OVERRIDE" <<EOF
# Made by scripts/docker-check.sh: podman in a sandbox without bridge networks.
services:
  app:
    network_mode: host
  postgres:
    network_mode: host
    environment:
      PGPORT: "$PG_PORT"
EOF

# write_env FILE KEY=VALUE...: .env.example with the given keys replaced.
write_env() {
    local file=$1 kv
    shift
    cp .env.example "$file"
    for kv in "$@"; do
        grep -v "^${kv%%=*}=" "$file" >"$file.tmp" || true
        mv "$file.tmp" "$file"
        echo "$kv" >>"$file"
    done
}

config_ok() { # NAME EXPECT_REGEX... -- compose args
    local name=$1 out="$TMP/config-$1.yml"
    shift
    local -a expect=()
    while [ "$1" != -- ]; do
        expect+=("$1")
        shift
    done
    shift
    if ! pc "$@" config >"$out" 2>"$out.err"; then
        show_tail "$out.err"
        fail "compose config: $name" "podman-compose config failed"
        return
    fi
    local re
    for re in "${expect[@]}"; do
        if ! grep -qE -- "$re" "$out"; then
            show_tail "$out" 80
            fail "compose config: $name" "resolved config lacks /$re/"
            return
        fi
    done
    pass "compose config: $name"
}

write_env "$TMP/lint.env" UID=1000
config_ok "mode 1 (named volumes)" \
    'container_name: claude-agent-http' '- claude-users:/data/claude-users' '- claude-db:/data/db' \
    'CLAUDE_AGENT_SESSION_STORAGE: sqlite' 'APP_UID:' 'max-size' 'mem_limit' 'test:' -- \
    --env-file "$TMP/lint.env" -f docker-compose.yml
write_env "$TMP/lint2.env" HOST_USER_DATA_DIR=/srv/check/users HOST_DB_DIR=/srv/check/db
config_ok "mode 2 (bind mounts)" \
    '- /srv/check/users:/data/claude-users' '- /srv/check/db:/data/db' -- \
    --env-file "$TMP/lint2.env" -f docker-compose.yml -f docker-compose.override.bindmounts.yml
if grep -q 'claude-users:/data/claude-users' "$TMP/config-mode 2 (bind mounts).yml"; then
    fail "compose config: mode 2 replaces the named volumes" "named volume still mounted"
else
    pass "compose config: mode 2 replaces the named volumes"
fi
write_env "$TMP/lint3.env" CLAUDE_AGENT_SESSION_STORAGE=postgresql CLAUDE_AGENT_SESSION_PG_PASSWORD=s3cret
config_ok "mode 3 (postgres profile)" \
    'CLAUDE_AGENT_SESSION_STORAGE: postgresql' 'container_name: claude-agent-postgres' \
    'postgres_data:/var/lib/postgresql/data' 'pg_isready' 'POSTGRES_PASSWORD: s3cret' -- \
    --env-file "$TMP/lint3.env" -f docker-compose.yml --profile postgres
# The override needs no profile flag and sets the storage itself.
write_env "$TMP/lint4.env" CLAUDE_AGENT_SESSION_PG_PASSWORD=s3cret
config_ok "mode 3 (docker-compose.postgres.yml, no profile flag)" \
    'CLAUDE_AGENT_SESSION_STORAGE: postgresql' 'container_name: claude-agent-postgres' \
    'postgres_data:/var/lib/postgresql/data' 'POSTGRES_PASSWORD: s3cret' -- \
    --env-file "$TMP/lint4.env" -f docker-compose.yml -f docker-compose.postgres.yml
if grep -q 'container_name: claude-agent-postgres' "$TMP/config-mode 1 (named volumes).yml"; then
    fail "compose config: mode 1 leaves postgres out" "the postgres service is in mode 1"
else
    pass "compose config: mode 1 leaves postgres out"
fi
start_help() {
    ./docker-start.sh --help >"$TMP/start-help.txt" &&
        grep -q -- --bind-mounts "$TMP/start-help.txt" && ! grep -q "set -euo" "$TMP/start-help.txt"
}
check "docker-start.sh --help shows the usage and nothing of the script" start_help

# ================================================================ 2. build
say "2. base images and build"
if ! scripts/docker-base-images.sh >"$TMP/base.out" 2>"$TMP/base.log"; then
    show_tail "$TMP/base.log" 40
    fail "base images" "scripts/docker-base-images.sh failed"
    exit 1
fi
RUST_IMAGE=$(sed -n 's/^RUST_IMAGE=//p' "$TMP/base.out")
POSTGRES_IMAGE=$(sed -n 's/^POSTGRES_IMAGE=//p' "$TMP/base.out")
pass "base images (debian:bookworm-slim, $RUST_IMAGE${POSTGRES_IMAGE:+, $POSTGRES_IMAGE})"

# Build cache mounts of the Dockerfile (cargo registry, target dir) live here.
if [ -d /var/tmp/buildah-cache/claude-agent-http-target ]; then
    cache_state="warm cargo caches"
else
    cache_state="empty cargo caches"
fi
load=$(cut -d' ' -f1 /proc/loadavg)
note "building $IMAGE ($cache_state, load average $load; several minutes when the caches are empty)"
t=$(now_ms)
if timeout 2400 podman build --format docker --pull=never --network=host \
    --build-arg "RUST_IMAGE=$RUST_IMAGE" -f Dockerfile -t "$IMAGE" . >"$TMP/build.log" 2>&1; then
    FIG[build]="$((($(now_ms) - t) / 1000)) s (load average $load at start)"
    pass "podman build of the Dockerfile, $cache_state: ${FIG[build]}"
else
    show_tail "$TMP/build.log" 40
    fail "podman build of the Dockerfile"
    exit 1
fi
podman image prune -f >/dev/null 2>&1 || true
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
FIG[size]="$((size / 1000000)) MB ($size bytes)"
if [ "$size" -lt 150000000 ]; then
    pass "image size ${FIG[size]} < 150 MB"
else
    fail "image size ${FIG[size]}" "over the 150 MB aim"
fi
meta=$(podman image inspect --format '{{json .Config.Healthcheck}} user=[{{.Config.User}}] {{json .Config.ExposedPorts}} {{json .Config.Entrypoint}}' "$IMAGE")
note "image config: $meta"
check "image: HEALTHCHECK runs 'claude-agent-http healthcheck', EXPOSE 8000, entrypoint script, starts as root to fix volumes" \
    bash -c "grep -q '\"claude-agent-http\",\"healthcheck\"' <<<'$meta' && grep -q 'user=\[\]' <<<'$meta' && grep -q '8000/tcp' <<<'$meta' && grep -q 'docker-entrypoint.sh' <<<'$meta'"

# ================================================================ 3. modes
# run_mode N LABEL EXPECTED_STORAGE USER_DIR_CMD -- compose args
# USER_DIR_CMD prints the host path of the users' directory.
run_mode() {
    local n=$1 label=$2 storage=$3 users_dir_fn=$4 project="cah-check-m$1"
    shift 4
    local -a args=(-p "$project" --env-file "$TMP/m$n.env" "$@")
    local user="ci-mode$n" sid t0 ms

    say "3.$n mode $n: $label"
    t0=$(now_ms)
    if ! pc "${args[@]}" up -d --no-build >"$TMP/up-m$n.log" 2>&1; then
        show_tail "$TMP/up-m$n.log"
        fail "mode $n: compose up"
        return
    fi
    if ! wait_healthy "$APP_PORT" 120; then
        show_tail "$TMP/up-m$n.log"
        podman logs --tail 40 claude-agent-http 2>&1 | sed 's/^/      | /' >&2
        fail "mode $n: /health healthy within 120 s"
        return
    fi
    ms=$(($(now_ms) - t0))
    FIG[start_m$n]="$(printf '%d.%03d s' $((ms / 1000)) $((ms % 1000)))"
    pass "mode $n: compose up -> /health healthy in ${FIG[start_m$n]}"

    check "mode $n: storage_type is $storage" bash -c \
        "curl -fsS http://127.0.0.1:$APP_PORT/health | grep -q '\"storage_type\": *\"$storage\"'"
    check "mode $n: container healthcheck (claude-agent-http healthcheck)" \
        timeout 30 podman healthcheck run claude-agent-http
    check "mode $n: the /ui playground is served from the image" bash -c \
        "curl -fsS http://127.0.0.1:$APP_PORT/ui | grep -q '<title>claude-agent-http playground</title>'"
    if sid=$(create_session "$APP_PORT" "$user"); then
        pass "mode $n: POST /api/v1/sessions -> 201, cwd /data/claude-users/$user"
    else
        fail "mode $n: POST /api/v1/sessions"
        return
    fi
    check "mode $n: the user's directory on the volume belongs to its own id, not claudeuser's" \
        owned_by_own_id "$("$users_dir_fn")/$user"
    check "mode $n: the service holds only the capabilities to run commands as users" \
        holds_only_switch_caps claude-agent-http
    if [ "$n" = 1 ]; then
        check "mode 1: a Bash command runs as the user's own id with no capabilities" \
            bash_as_own_id "$APP_PORT" "$sid" "$("$users_dir_fn")/$user"
    fi
    check "mode $n: service runs as claudeuser (UID 1000), nothing as root" \
        runs_as_claudeuser claude-agent-http 1000
    if [ "$n" = 1 ]; then
        local hc
        hc=$(podman inspect claude-agent-http --format '{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.LogConfig.Size}}' 2>/dev/null)
        note "memory limit, restart policy, log size limit: $hc"
        check "mode 1: compose limits applied (mem_limit 2g, restart unless-stopped, log rotation)" \
            test "$hc" = "2147483648 unless-stopped 10MB"
    fi

    t0=$(now_ms)
    if pc "${args[@]}" restart app >"$TMP/restart-m$n.log" 2>&1 && wait_healthy "$APP_PORT" 90; then
        ms=$(($(now_ms) - t0))
        FIG[restart_m$n]="$(printf '%d.%03d s' $((ms / 1000)) $((ms % 1000)))"
        pass "mode $n: restart -> healthy in ${FIG[restart_m$n]}"
    else
        show_tail "$TMP/restart-m$n.log"
        fail "mode $n: restart -> healthy"
        return
    fi
    check "mode $n: session $sid still there after the restart" session_exists "$APP_PORT" "$sid"
    check "mode $n: still runs as claudeuser after the restart" runs_as_claudeuser claude-agent-http 1000
    LAST_SID=$sid
}

common_env=(
    "APP_IMAGE=$IMAGE" "API_PORT=$APP_PORT" "CLAUDE_AGENT_API_PORT=$APP_PORT"
    "UID=1000" "GID=1000" "RUST_LOG=info,tower_http=warn"
)

# fake-anthropic on the host answers mode 1's chat (host networking).
FAKE_BIN="${CARGO_TARGET_DIR:-target}/debug/fake-anthropic"
[ -x "$FAKE_BIN" ] || cargo build --quiet -p fake-anthropic
FAKE_PORT=$(free_port)
"$FAKE_BIN" --host 127.0.0.1 --port "$FAKE_PORT" >"$TMP/fake-anthropic.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$FAKE_PORT/_fake/requests" >/dev/null 2>&1 && break
    sleep 0.1
done

# --- mode 1: SQLite + named volumes
write_env "$TMP/m1.env" "${common_env[@]}" CLAUDE_AGENT_SESSION_STORAGE=sqlite \
    "ANTHROPIC_BASE_URL=http://127.0.0.1:$FAKE_PORT" ANTHROPIC_API_KEY=sk-ant-docker-check
m1_users() { podman volume inspect --format '{{.Mountpoint}}' cah-check-m1_claude-users; }
run_mode 1 "SQLite + named volumes" sqlite m1_users -f docker-compose.yml -f "$CI_OVERRIDE"
check "mode 1: sessions.db on the claude-db volume" \
    test -s "$(podman volume inspect --format '{{.Mountpoint}}' cah-check-m1_claude-db 2>/dev/null)/sessions.db"
pc -p cah-check-m1 --env-file "$TMP/m1.env" -f docker-compose.yml -f "$CI_OVERRIDE" down -v >/dev/null 2>&1 || true

# --- mode 2: SQLite + bind mounts, host directories owned by UID 4242
mkdir -p "$TMP/bind/users/existing" "$TMP/bind/db"
echo "left by another user" >"$TMP/bind/users/existing/notes.txt"
chown -R 4242:4242 "$TMP/bind"
write_env "$TMP/m2.env" "${common_env[@]}" CLAUDE_AGENT_SESSION_STORAGE=sqlite \
    "HOST_USER_DATA_DIR=$TMP/bind/users" "HOST_DB_DIR=$TMP/bind/db"
m2_users() { echo "$TMP/bind/users"; }
run_mode 2 "SQLite + bind mounts (host dirs owned by UID 4242)" sqlite m2_users \
    -f docker-compose.yml -f docker-compose.override.bindmounts.yml -f "$CI_OVERRIDE"
check "mode 2: entrypoint gave the bind-mounted trees to UID 1000" bash -c \
    "[ \"\$(stat -c %u:%g '$TMP/bind/users' '$TMP/bind/db' '$TMP/bind/users/existing/notes.txt' | sort -u)\" = 1000:1000 ]"
check "mode 2: sessions.db in the bind-mounted HOST_DB_DIR" test -s "$TMP/bind/db/sessions.db"
pc -p cah-check-m2 --env-file "$TMP/m2.env" -f docker-compose.yml -f docker-compose.override.bindmounts.yml \
    -f "$CI_OVERRIDE" down -v >/dev/null 2>&1 || true

# --- mode 3: PostgreSQL
PG_DB="cah_docker_$RUN_ID"
PG_PASS="ci-$RUN_ID-pw"
if [ -n "$POSTGRES_IMAGE" ]; then
    write_env "$TMP/m3.env" "${common_env[@]}" CLAUDE_AGENT_SESSION_STORAGE=postgresql \
        "POSTGRES_IMAGE=$POSTGRES_IMAGE" "POSTGRES_PORT=$PG_PORT" \
        CLAUDE_AGENT_SESSION_PG_HOST=127.0.0.1 "CLAUDE_AGENT_SESSION_PG_PORT=$PG_PORT" \
        "CLAUDE_AGENT_SESSION_PG_DATABASE=$PG_DB" CLAUDE_AGENT_SESSION_PG_USER=postgres \
        "CLAUDE_AGENT_SESSION_PG_PASSWORD=$PG_PASS"
    m3_users() { podman volume inspect --format '{{.Mountpoint}}' cah-check-m3_claude-users; }
    LAST_SID=
    # The .env of this mode leaves the storage at sqlite: the override file
    # alone makes it mode 3, as DOCKER.md says.
    sed -i 's/^CLAUDE_AGENT_SESSION_STORAGE=.*/CLAUDE_AGENT_SESSION_STORAGE=sqlite/' "$TMP/m3.env"
    m3=(-p cah-check-m3 --env-file "$TMP/m3.env" -f docker-compose.yml -f docker-compose.postgres.yml -f "$CI_OVERRIDE")
    run_mode 3 "PostgreSQL (docker-compose.postgres.yml, $POSTGRES_IMAGE)" postgresql m3_users \
        -f docker-compose.yml -f docker-compose.postgres.yml -f "$CI_OVERRIDE"
    check "mode 3: postgres container healthcheck (pg_isready)" \
        timeout 30 podman healthcheck run claude-agent-postgres
    # The guide's PostgreSQL troubleshooting commands, as written there
    # (plus this check's project, .env and host-network override).
    # shows PATTERN COMMAND...: the command succeeds and its output has PATTERN.
    shows() {
        local pattern=$1 out
        shift
        out=$("$@" </dev/null 2>&1) || {
            note "$* failed: $(tail -n 5 <<<"$out")"
            return 1
        }
        grep -q -- "$pattern" <<<"$out" || {
            note "$* printed no /$pattern/: $(tail -n 5 <<<"$out")"
            return 1
        }
    }
    m3_ps() { shows claude-agent-postgres pc "${m3[@]}" ps; }
    m3_ready() { shows "accepting connections" pc "${m3[@]}" exec postgres pg_isready -U postgres; }
    m3_logs() { shows "ready to accept connections" pc "${m3[@]}" logs postgres; }
    # Without a pager: the guide's interactive psql pages \dt's table.
    m3_tables() { shows ' sessions ' pc "${m3[@]}" exec postgres psql -U postgres -d "$PG_DB" -P pager=off -c '\dt'; }
    check "mode 3: compose ps lists the postgres service" m3_ps
    check "mode 3: compose exec postgres pg_isready -U postgres" m3_ready
    check "mode 3: compose logs postgres shows it ready" m3_logs
    check "mode 3: compose exec postgres psql, \\dt lists the sessions table" m3_tables
    if [ -n "$LAST_SID" ]; then
        check "mode 3: session row in PostgreSQL database $PG_DB" bash -c \
            "[ \"\$(podman exec claude-agent-postgres psql -U postgres -d '$PG_DB' -Atc \"SELECT count(*) FROM sessions WHERE id = '$LAST_SID'\")\" = 1 ]"
    fi
    pc "${m3[@]}" down -v >/dev/null 2>&1 || true
else
    blocked "mode 3 with the compose postgres service" "no PostgreSQL image could be made (see $TMP/base.log); using the host's server"
    if pg_isready -h 127.0.0.1 -p 5432 -q; then
        PG_FALLBACK_DB=$PG_DB
        write_env "$TMP/m3.env" "${common_env[@]}" CLAUDE_AGENT_SESSION_STORAGE=postgresql \
            CLAUDE_AGENT_SESSION_PG_HOST=127.0.0.1 CLAUDE_AGENT_SESSION_PG_PORT=5432 \
            "CLAUDE_AGENT_SESSION_PG_DATABASE=$PG_DB" CLAUDE_AGENT_SESSION_PG_USER=postgres
        m3_users() { podman volume inspect --format '{{.Mountpoint}}' cah-check-m3_claude-users; }
        LAST_SID=
        run_mode 3 "PostgreSQL (the machine's server at 127.0.0.1:5432)" postgresql m3_users \
            -f docker-compose.yml -f "$CI_OVERRIDE"
        if [ -n "$LAST_SID" ]; then
            check "mode 3: session row in PostgreSQL database $PG_DB" bash -c \
                "[ \"\$(psql -h 127.0.0.1 -U postgres -d '$PG_DB' -Atc \"SELECT count(*) FROM sessions WHERE id = '$LAST_SID'\")\" = 1 ]"
        fi
        pc -p cah-check-m3 --env-file "$TMP/m3.env" -f docker-compose.yml -f "$CI_OVERRIDE" down -v >/dev/null 2>&1 || true
    else
        fail "mode 3" "no PostgreSQL image and no server at 127.0.0.1:5432"
    fi
fi

# ================================================================ entrypoint
say "3.4 entrypoint: non-root start and APP_UID"
# Started as a non-root user with a root-owned data directory: must refuse with
# instructions instead of failing later.
mkdir -p "$TMP/rootonly"
chmod 0755 "$TMP/rootonly"
set +e
timeout 60 podman run --rm --name "cah-check-nonroot-$RUN_ID" --user 4242:4242 \
    -e "CLAUDE_AGENT_API_PORT=$APP_PORT" -v "$TMP/rootonly:/data/db" "$IMAGE" >"$TMP/nonroot.log" 2>&1
rc=$?
set -e
if [ "$rc" != 0 ] && grep -q 'NOT writable' "$TMP/nonroot.log" && grep -q 'chown -R 4242:4242' "$TMP/nonroot.log"; then
    pass "non-root start with an unwritable volume exits $rc with instructions"
else
    show_tail "$TMP/nonroot.log"
    fail "non-root start with an unwritable volume" "exit $rc, no instructions"
fi

# APP_UID/APP_GID: claudeuser takes the host user's IDs; with commands run as
# the service's user (CLAUDE_AGENT_TOOLS_COMMAND_USER=service) users' files are
# that user's too.
mkdir -p "$TMP/remap"
if timeout 60 podman run -d --name "cah-check-uid-$RUN_ID" -e APP_UID=2345 -e APP_GID=2345 \
    -e CLAUDE_AGENT_TOOLS_COMMAND_USER=service \
    -e "CLAUDE_AGENT_API_PORT=$APP_PORT" -e CLAUDE_AGENT_SESSION_STORAGE=memory \
    -v "$TMP/remap:/data/claude-users" "$IMAGE" >"$TMP/remap.log" 2>&1 && wait_healthy "$APP_PORT" 60 &&
    create_session "$APP_PORT" remapped >/dev/null; then
    check "APP_UID=2345: session directory owned by UID 2345" owned_by "$TMP/remap/remapped" 2345
    check "APP_UID=2345: service runs as claudeuser with UID 2345" runs_as_claudeuser "cah-check-uid-$RUN_ID" 2345
else
    show_tail "$TMP/remap.log"
    podman logs --tail 20 "cah-check-uid-$RUN_ID" 2>&1 | sed 's/^/      | /' >&2
    fail "APP_UID=2345 start"
fi
podman rm -f -t 5 "cah-check-uid-$RUN_ID" >/dev/null 2>&1 || true

# ================================================================ docker-start.sh
say "3.5 docker-start.sh (mode 1, podman-compose)"
if [ ! -f .env ]; then
    STARTED_ENV=1
fi
if COMPOSE="$PODMAN_COMPOSE -p cah-check-start -f docker-compose.yml -f $CI_OVERRIDE" \
    APP_IMAGE="$IMAGE" API_PORT="$APP_PORT" CLAUDE_AGENT_API_PORT="$APP_PORT" HEALTH_TIMEOUT=90 \
    timeout 300 ./docker-start.sh >"$TMP/start.log" 2>&1 &&
    grep -q "Docs:    http://localhost:$APP_PORT/docs" "$TMP/start.log" &&
    grep -q 'neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN' "$TMP/start.log"; then
    pass "docker-start.sh: creates .env, warns about the API key, waits for /health, prints /docs"
else
    show_tail "$TMP/start.log"
    fail "docker-start.sh start"
fi
if COMPOSE="$PODMAN_COMPOSE -p cah-check-start -f docker-compose.yml -f $CI_OVERRIDE" \
    timeout 120 ./docker-start.sh --down >>"$TMP/start.log" 2>&1 &&
    ! podman container exists claude-agent-http; then
    pass "docker-start.sh --down removes the container"
else
    show_tail "$TMP/start.log"
    fail "docker-start.sh --down"
fi

# ================================================================ 4. results
if [ "${DOCKER_CHECK_NO_RESULTS:-0}" != 1 ]; then
    # CI leaves the tracked tree alone: the figures go to a copy unless asked.
    if [ "${DOCKER_CHECK_RECORD:-0}" = 1 ]; then
        results=bench/RESULTS.md
    else
        results=target/docker-check/RESULTS.md
        mkdir -p target/docker-check
        cp bench/RESULTS.md "$results" 2>/dev/null || printf '# Results\n' >"$results"
    fi
    machine="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r), $(podman --version) + runc, no Docker engine"
    section=$(
        cat <<EOF
## Docker image

Measured by \`bash scripts/docker-check.sh\` on $(date -u +%Y-%m-%d) ($machine).
Result of that run: $((${#SUMMARY[@]} - FAILED - BLOCKED)) checks passed, $FAILED failed, $BLOCKED blocked.

| figure | value | how |
|---|---|---|
| image size | ${FIG[size]:-n/a} | \`podman image inspect --format '{{.Size}}' $IMAGE\` (uncompressed; aim < 150 MB) |
| image build, $cache_state | ${FIG[build]:-n/a} | \`podman build --format docker --pull=never --build-arg RUST_IMAGE=$RUST_IMAGE -t $IMAGE .\` (the cargo registry and target dir are build cache mounts: warm caches rebuild only the workspace crates) |
| cold start to healthy, mode 1 (SQLite, named volumes) | ${FIG[start_m1]:-n/a} | \`podman-compose up -d\` until \`GET /health\` answers 200 healthy (new volumes) |
| cold start to healthy, mode 2 (SQLite, bind mounts) | ${FIG[start_m2]:-n/a} | same, including the entrypoint's ownership fix of the bind mounts |
| cold start to healthy, mode 3 (PostgreSQL) | ${FIG[start_m3]:-n/a} | \`podman-compose -f docker-compose.yml -f docker-compose.postgres.yml up -d\`, including initdb of a new PostgreSQL volume |
| restart to healthy, mode 1 | ${FIG[restart_m1]:-n/a} | \`podman-compose restart app\` until healthy |
EOF
    )
    python3 - "$section" "$results" <<'PY'
import re, sys, pathlib
path = pathlib.Path(sys.argv[2])
section = sys.argv[1].rstrip() + "\n"
text = path.read_text() if path.exists() else "# Results\n"
pattern = re.compile(r"^## Docker image\n.*?(?=^## |\Z)", re.S | re.M)
old = pattern.search(text)
if old:
    # Keep the last figure of the other cache state (a warm run keeps the
    # last build with empty caches, and the other way round).
    for state in ("empty cargo caches", "warm cargo caches"):
        prefix = "| image build, " + state
        if prefix in section:
            continue
        kept = [l for l in old.group(0).splitlines() if l.startswith(prefix)]
        if kept:
            line = kept[0]
            if not line.startswith(prefix + " (earlier run)"):
                line = prefix + " (earlier run)" + line[len(prefix):]
            lines = section.splitlines()
            at = next(i for i, l in enumerate(lines) if l.startswith("| image build, "))
            lines.insert(at + (state == "warm cargo caches"), line)
            section = "\n".join(lines) + "\n"
if old:
    text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
else:
    text = text.rstrip() + "\n\n" + section
path.write_text(text)
PY
    note "figures written to $results (section \"Docker image\"; DOCKER_CHECK_RECORD=1 writes bench/RESULTS.md)"
fi
