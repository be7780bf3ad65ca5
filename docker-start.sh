#!/usr/bin/env bash
# Start claude-agent-http with Docker Compose in one of its deployment modes.
#
# Usage: ./docker-start.sh [MODE...] [ACTION]
#
# Modes (may be combined):
#   (none)          SQLite + named volumes (mode 1, default)
#   --bind-mounts   SQLite + host directories HOST_USER_DATA_DIR / HOST_DB_DIR (mode 2)
#   --postgres      PostgreSQL session store in a `postgres` container (mode 3)
#
# Actions:
#   (none)          start (or update) the services and wait until /health answers
#   --build         rebuild the image before starting
#   --stop          stop the containers (keep them and all data)
#   --down          remove the containers (keep the volumes and all data)
#   --logs          follow the service logs
#   -h, --help      show this help
#
# Settings come from .env (created from .env.example when missing). The
# compose command is `docker compose`, else `docker-compose`, else
# `podman-compose`; set COMPOSE="..." to choose another.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# The comment block at the top of this file, without the `# `.
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
info() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

bind_mounts=0
postgres=0
build=0
action=up
for arg in "$@"; do
    case "$arg" in
    --bind-mounts) bind_mounts=1 ;;
    --postgres) postgres=1 ;;
    --build) build=1 ;;
    --stop) action=stop ;;
    --down) action=down ;;
    --logs) action=logs ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown option: $arg"
        ;;
    esac
done

# --- compose command --------------------------------------------------------
if [ -n "${COMPOSE:-}" ]; then
    read -r -a compose <<<"$COMPOSE"
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif command -v podman-compose >/dev/null 2>&1; then
    compose=(podman-compose)
else
    die "neither 'docker compose', 'docker-compose' nor 'podman-compose' was found; install Docker Compose (https://docs.docker.com/compose/install/)"
fi

# --- .env -----------------------------------------------------------------
if [ ! -f .env ]; then
    [ -f .env.example ] || die ".env.example is missing; run this script from the project directory"
    cp .env.example .env
    chmod 600 .env
    info "created .env from .env.example; edit it to set ANTHROPIC_API_KEY"
fi

# Value of a setting as compose sees it: the exported environment first,
# then .env, then the given default. (Not ${!name}: bash's own UID is not
# exported and must not shadow .env.)
setting() {
    local name=$1 default=${2:-} value line
    if value=$(printenv "$name"); then
        printf '%s' "$value"
        return
    fi
    line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?${name}=" .env | tail -n 1 || true)
    if [ -n "$line" ]; then
        value=${line#*=}
        value=${value%$'\r'}
        # Strip one pair of surrounding quotes.
        case "$value" in
        \"*\") value=${value:1:${#value}-2} ;;
        \'*\') value=${value:1:${#value}-2} ;;
        esac
        if [ -n "$value" ]; then
            printf '%s' "$value"
            return
        fi
    fi
    printf '%s' "$default"
}

args=()
if [ "$postgres" = 1 ]; then
    args+=(--profile postgres)
fi

# --- actions that need no setup ----------------------------------------
# These always include the postgres profile so its container is covered too.
case "$action" in
stop)
    "${compose[@]}" --profile postgres stop
    exit 0
    ;;
down)
    "${compose[@]}" --profile postgres down
    info "containers removed; volumes and data kept ('${compose[*]} --profile postgres down -v' deletes the volumes too)"
    exit 0
    ;;
logs)
    exec "${compose[@]}" --profile postgres logs -f
    ;;
esac

# --- API key ------------------------------------------------------------
api_key=$(setting ANTHROPIC_API_KEY)
auth_token=$(setting ANTHROPIC_AUTH_TOKEN)
if [ "$api_key" = your_api_key_here ]; then
    api_key=
fi
if [ -z "$api_key" ] && [ -z "$auth_token" ]; then
    cat >&2 <<'EOF'

  ############################################################################
  #  WARNING: neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN is set.     #
  #  The service will start and manage sessions, but every chat request     #
  #  will fail with 503 upstream_not_configured.                            #
  #  Set ANTHROPIC_API_KEY=... in .env, then run ./docker-start.sh again.   #
  ############################################################################

EOF
fi

# --- admin key -------------------------------------------------------------
# Only asked at a terminal: scripted runs start exactly as they did.
if [ -z "$(setting CLAUDE_AGENT_API_KEYS)" ] && [ "$(setting CLAUDE_AGENT_API_AUTH)" != none ] &&
    [ -t 0 ] && [ -t 1 ]; then
    printf '\nNo admin API key is set: anyone who can reach the port can run commands here.\n'
    read -r -p "Generate an admin key into .env now? [Y/n] " answer || answer=n
    case "$answer" in
    "" | [Yy]*)
        admin_key="cah_admin_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
        printf '\nCLAUDE_AGENT_API_KEYS=%s\n' "$admin_key" >>.env
        chmod 600 .env
        info "admin key written to .env (CLAUDE_AGENT_API_KEYS); send it as 'Authorization: Bearer <key>':"
        printf '    %s\n\n' "$admin_key"
        ;;
    *) info "no admin key; set CLAUDE_AGENT_API_KEYS in .env, or CLAUDE_AGENT_API_AUTH=none behind a gateway, to stop this question" ;;
    esac
fi

# --- PostgreSQL ---------------------------------------------------------
storage=$(setting CLAUDE_AGENT_SESSION_STORAGE sqlite)
if [ "$postgres" = 1 ] && [ "$storage" != postgresql ]; then
    warn "CLAUDE_AGENT_SESSION_STORAGE is '$storage'; using postgresql for this start."
    warn "Set CLAUDE_AGENT_SESSION_STORAGE=postgresql in .env to make it permanent."
    export CLAUDE_AGENT_SESSION_STORAGE=postgresql
    storage=postgresql
fi
if [ "$postgres" = 0 ] && [ "$storage" = postgresql ] && [ "$(setting CLAUDE_AGENT_SESSION_PG_HOST postgres)" = postgres ]; then
    warn "CLAUDE_AGENT_SESSION_STORAGE=postgresql with the compose 'postgres' host, but --postgres was not given;"
    warn "the 'postgres' container will not be started. Add --postgres, or point CLAUDE_AGENT_SESSION_PG_HOST at your server."
fi
if [ "$storage" = postgresql ] && [ "$(setting CLAUDE_AGENT_SESSION_PG_PASSWORD postgres)" = postgres ]; then
    warn "CLAUDE_AGENT_SESSION_PG_PASSWORD is the default 'postgres'; change it in .env for anything but a trial."
fi

# --- bind mounts ---------------------------------------------------------
uid=$(setting UID 1000)
gid=$(setting GID 1000)
if [ "$bind_mounts" = 1 ]; then
    if [ ! -f docker-compose.override.yml ]; then
        cp docker-compose.override.bindmounts.yml docker-compose.override.yml
        info "created docker-compose.override.yml from docker-compose.override.bindmounts.yml"
    elif ! cmp -s docker-compose.override.yml docker-compose.override.bindmounts.yml; then
        warn "docker-compose.override.yml exists and differs from docker-compose.override.bindmounts.yml; using it as it is"
    fi
    for dir in "$(setting HOST_USER_DATA_DIR /opt/claude-code-http/claude-users)" \
        "$(setting HOST_DB_DIR /opt/claude-code-http/db)"; do
        if [ ! -d "$dir" ]; then
            if ! mkdir -p "$dir" 2>/dev/null; then
                command -v sudo >/dev/null 2>&1 || die "cannot create $dir; create it yourself (mkdir -p $dir)"
                info "creating $dir with sudo"
                sudo mkdir -p "$dir"
            fi
        fi
        if [ "$(stat -c %u:%g "$dir")" != "$uid:$gid" ]; then
            if [ "$(id -u)" = 0 ]; then
                chown "$uid:$gid" "$dir"
            elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
                sudo chown "$uid:$gid" "$dir"
            else
                info "$dir is not owned by $uid:$gid; the container's entrypoint will change its owner on start"
            fi
        fi
        info "bind mount: $dir (owner $(stat -c %u:%g "$dir"))"
    done
elif [ -f docker-compose.override.yml ]; then
    warn "docker-compose.override.yml exists, so compose applies it (bind mounts?)."
    warn "Remove it to go back to named volumes (mode 1)."
fi

# --- start ---------------------------------------------------------------
up_args=(up -d)
if [ "$build" = 1 ]; then
    up_args+=(--build)
fi
info "starting: ${compose[*]} ${args[*]} ${up_args[*]}"
"${compose[@]}" "${args[@]}" "${up_args[@]}"

port=$(setting API_PORT 8000)
url="http://localhost:$port"
timeout=${HEALTH_TIMEOUT:-120}
info "waiting up to ${timeout}s for $url/health"
deadline=$(($(date +%s) + timeout))
healthy=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    if command -v curl >/dev/null 2>&1; then
        if curl -fsS --max-time 3 "$url/health" 2>/dev/null | grep -q '"healthy"'; then
            healthy=1
            break
        fi
    elif "${compose[@]}" exec -T app claude-agent-http healthcheck >/dev/null 2>&1; then
        healthy=1
        break
    fi
    sleep 2
done

if [ "$healthy" != 1 ]; then
    warn "the service did not report healthy within ${timeout}s. Last log lines:"
    "${compose[@]}" "${args[@]}" logs --tail=40 app >&2 || true
    exit 1
fi

info "claude-agent-http is healthy"
cat <<EOF

  API:     $url
  Docs:    $url/docs
  Health:  $url/health
  Storage: $storage

  Logs:    ./docker-start.sh --logs
  Stop:    ./docker-start.sh --stop
EOF
