#!/bin/bash
# Container entrypoint of claude-agent-http.
#
# Started as root (the default): create the data directories, give them to
# claudeuser, then drop to claudeuser and run the command under tini, so that
# nothing in the container keeps running as root.
#   APP_UID / APP_GID  numeric IDs claudeuser should have (default 1000:1000);
#                      set them to your host user's IDs for bind mounts.
#   APP_SKIP_CHOWN=1   never change ownership (only check writability).
#
# Started as another user (`docker run --user`, compose `user:`): nothing can
# be chowned, so check that the directories are writable and, if they are not,
# say exactly what to do.
set -euo pipefail

log() { printf 'entrypoint: %s\n' "$*" >&2; }

# Bare options (`docker run IMAGE --config /x.yaml`) go to the service.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- claude-agent-http "$@"
fi

base_dir=${CLAUDE_AGENT_USER_BASE_DIR:-/data/claude-users}
storage=${CLAUDE_AGENT_SESSION_STORAGE:-sqlite}
sqlite_path=${CLAUDE_AGENT_SESSION_SQLITE_PATH:-/data/db/sessions.db}

# Directories the service writes to: the users' working directories, and the
# SQLite database's directory when SQLite is the session store.
data_dirs=("$base_dir")
if [ "$storage" = sqlite ]; then
    data_dirs+=("$(dirname "$sqlite_path")")
fi

if [ "$(id -u)" = 0 ]; then
    uid=${APP_UID:-1000}
    gid=${APP_GID:-1000}
    case "$uid:$gid" in
    *[!0-9:]* | :* | *:)
        log "APP_UID/APP_GID must be numeric, got '$uid:$gid'"
        exit 1
        ;;
    esac
    if [ "$uid" = 0 ]; then
        log "APP_UID=0 would run the agent and every tool it calls as root; use a non-zero UID (default 1000)"
        exit 1
    fi

    # Give claudeuser the requested IDs (usually the host user's, for bind mounts).
    if [ "$(id -g claudeuser)" != "$gid" ]; then
        groupmod -o -g "$gid" claudeuser
        log "claudeuser's group is now GID $gid"
    fi
    if [ "$(id -u claudeuser)" != "$uid" ]; then
        usermod -o -u "$uid" claudeuser
        log "claudeuser is now UID $uid"
    fi
    home=$(getent passwd claudeuser | cut -d: -f6)
    if [ "$(stat -c %u:%g "$home")" != "$uid:$gid" ]; then
        chown -R "$uid:$gid" "$home"
    fi

    for dir in "${data_dirs[@]}"; do
        mkdir -p "$dir"
        owner=$(stat -c %u:%g "$dir")
        if [ "$owner" = "$uid:$gid" ]; then
            continue
        fi
        if [ "${APP_SKIP_CHOWN:-0}" = 1 ]; then
            log "$dir is owned by $owner, not $uid:$gid; APP_SKIP_CHOWN=1, leaving it"
            continue
        fi
        # A directory owned by someone else (a fresh bind mount, a volume
        # made by an older image, changed APP_UID): hand the whole tree over
        # once. Later starts find the top directory right and skip this.
        log "$dir is owned by $owner; changing its owner to $uid:$gid"
        chown -R "$uid:$gid" "$dir"
    done

    export HOME="$home" USER=claudeuser LOGNAME=claudeuser
    # Bash commands run as a user id of their own per user of the service
    # (tools.command_user), never as claudeuser: it needs to switch to those
    # ids (setuid, setgid), give them their directories (chown), use and
    # signal what their commands make (dac_override, kill). Granted ambient
    # so `sandbox-exec` inherits them; it drops them all before a command
    # starts, and so does everything else the service starts. Left out when
    # the container's bounding set lacks one, or with command_user: service.
    caps=-all
    bounding=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
    needed=$(( (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7) ))
    if [ "$(printf '%s' "${CLAUDE_AGENT_TOOLS_COMMAND_USER:-auto}" | tr '[:upper:]' '[:lower:]')" != service ] &&
        [ $(( 0x$bounding & needed )) -eq "$needed" ]; then
        caps=+chown,+dac_override,+kill,+setgid,+setuid
        exec setpriv --reuid="$uid" --regid="$gid" --init-groups \
            --inh-caps=-all,"$caps" --ambient-caps="$caps" \
            -- /usr/bin/tini -- "$@"
    fi
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups --inh-caps="$caps" \
        -- /usr/bin/tini -- "$@"
fi

# Not root: nothing can be fixed here, only checked.
uid=$(id -u)
gid=$(id -g)
status=0
for dir in "${data_dirs[@]}"; do
    if [ ! -d "$dir" ] && ! mkdir -p "$dir" 2>/dev/null; then
        log "cannot create $dir as UID $uid"
        status=1
    elif [ ! -w "$dir" ] || [ ! -x "$dir" ]; then
        log "$dir is NOT writable by UID $uid (owner $(stat -c %u:%g "$dir"), mode $(stat -c %a "$dir"))"
        status=1
    fi
done
if [ "$status" != 0 ]; then
    cat >&2 <<EOF
entrypoint: the container runs as UID $uid:$gid and cannot write its data directories.
Fix it in one of these ways:
  1. Let the entrypoint fix ownership: start the container as root (remove
     \`user:\` from the compose file or --user from docker run) and set
     APP_UID=$uid APP_GID=$gid if the files should belong to that user.
  2. For bind mounts, give the host directories to that user, e.g.
       sudo chown -R $uid:$gid "\$HOST_USER_DATA_DIR" "\$HOST_DB_DIR"
  3. For named volumes made by an older image, reset their owner once:
       docker run --rm -u 0 -v claude-agent-http_claude-users:/data/claude-users \\
         -v claude-agent-http_claude-db:/data/db --entrypoint chown IMAGE -R $uid:$gid /data
EOF
    exit 1
fi
if [ ! -w "${HOME:-/nonexistent}" ]; then
    # Tools such as git want a writable home; give them a private one.
    export HOME="/tmp/home-$uid"
    mkdir -p "$HOME"
    log "HOME is not writable by UID $uid; using $HOME"
fi
exec /usr/bin/tini -- "$@"
