#!/usr/bin/env bash
# Make the base images that the Dockerfile and docker-compose.yml need, on a
# machine that has podman but no image registry:
#
#   debian:bookworm-slim                     mmdebstrap rootfs, `podman import`
#   localhost/claude-agent-rust:<ver>-bookworm  that rootfs + the host's own Rust toolchain
#   localhost/claude-agent-postgres:15-bookworm that rootfs + Debian's postgresql-15
#
# Images that already exist are kept (use --refresh to rebuild them). The last
# lines on stdout are `RUST_IMAGE=...` and `POSTGRES_IMAGE=...` (empty when that
# image could not be made); everything else goes to stderr.
#
# Usage: scripts/docker-base-images.sh [--refresh] [--no-postgres]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${CONTAINERS_CONF:=$ROOT/docker/ci/containers.conf}"
export CONTAINERS_CONF

refresh=0
want_postgres=1
for arg in "$@"; do
    case "$arg" in
    --refresh) refresh=1 ;;
    --no-postgres) want_postgres=0 ;;
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown option: $arg" >&2
        exit 2
        ;;
    esac
done

log() { printf '[base-images] %s\n' "$*" >&2; }

DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
POSTGRES_IMAGE=localhost/claude-agent-postgres:15-bookworm

# An image is rebuilt when missing, on --refresh, or when the recipe it was
# built from (label claude-agent.recipe) changed.
need_image() {
    local image=$1 recipe=${2:-}
    [ "$refresh" = 1 ] && return 0
    podman image exists "$image" || return 0
    [ -z "$recipe" ] && return 1
    [ "$(podman image inspect --format '{{index .Labels "claude-agent.recipe"}}' "$image" 2>/dev/null)" != "$recipe" ]
}
recipe_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. debian:bookworm-slim from a minbase rootfs with the same dpkg path
#    exclusions as the official slim image (no man pages, docs or locales).
if need_image "$DEBIAN_IMAGE"; then
    work=$(mktemp -d /var/tmp/claude-agent-rootfs.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    log "building a Debian bookworm rootfs with mmdebstrap (about 30-60 s)"
    start=$(date +%s)
    mmdebstrap --variant=minbase \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        bookworm "$work/rootfs.tar" \
        "deb $DEBIAN_MIRROR bookworm main" \
        "deb $DEBIAN_MIRROR bookworm-updates main" \
        "deb $DEBIAN_SECURITY_MIRROR bookworm-security main" \
        </dev/null >"$work/mmdebstrap.log" 2>&1 || {
        tail -n 30 "$work/mmdebstrap.log" >&2
        log "mmdebstrap failed"
        exit 1
    }
    podman import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$work/rootfs.tar" "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$work"
    trap - EXIT
    log "$DEBIAN_IMAGE imported in $(($(date +%s) - start)) s"
else
    log "$DEBIAN_IMAGE present"
fi

# 2. Rust builder: the host's toolchain (rustup's active one) on that rootfs.
if ! command -v rustc >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/rustc" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
sysroot=$(cd "$ROOT" && rustc --print sysroot)
rust_version=$(cd "$ROOT" && rustc --version | awk '{print $2}')
RUST_IMAGE=localhost/claude-agent-rust:${rust_version}-bookworm
rust_recipe=$( (cat "$ROOT/docker/ci/rust-builder.Containerfile"; rustc -vV) | sha256sum | cut -c1-16)
if need_image "$RUST_IMAGE" "$rust_recipe"; then
    log "building $RUST_IMAGE from $sysroot"
    start=$(date +%s)
    podman build --pull=never --network=host \
        -v "$sysroot:/toolchain:ro" \
        -v /etc/ssl/certs:/mnt/host-certs:ro \
        --label "claude-agent.recipe=$rust_recipe" \
        -f "$ROOT/docker/ci/rust-builder.Containerfile" \
        -t "$RUST_IMAGE" "$ROOT/docker/ci" >&2
    log "$RUST_IMAGE built in $(($(date +%s) - start)) s"
else
    log "$RUST_IMAGE present"
fi

# 3. PostgreSQL for compose mode 3. Failure here is reported, not fatal: the
#    check then falls back to the host's PostgreSQL.
pg_image=
if [ "$want_postgres" = 1 ]; then
    pg_recipe=$(recipe_of "$ROOT/docker/ci/postgres.Containerfile" "$ROOT/docker/ci/postgres-entrypoint.sh")
    if need_image "$POSTGRES_IMAGE" "$pg_recipe"; then
        log "building $POSTGRES_IMAGE"
        start=$(date +%s)
        if podman build --pull=never --network=host \
            --label "claude-agent.recipe=$pg_recipe" \
            -f "$ROOT/docker/ci/postgres.Containerfile" \
            -t "$POSTGRES_IMAGE" "$ROOT/docker/ci" >&2; then
            log "$POSTGRES_IMAGE built in $(($(date +%s) - start)) s"
            pg_image=$POSTGRES_IMAGE
        else
            log "could not build $POSTGRES_IMAGE (see above)"
        fi
    else
        log "$POSTGRES_IMAGE present"
        pg_image=$POSTGRES_IMAGE
    fi
fi

echo "RUST_IMAGE=$RUST_IMAGE"
echo "POSTGRES_IMAGE=$pg_image"
