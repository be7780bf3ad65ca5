# syntax=docker/dockerfile:1
#
# claude-agent-http: a Rust builder stage and a slim Debian runtime.
#
#   docker build -t claude-agent-http .
#
# Build arguments:
#   RUST_IMAGE     builder base image (default: the official rust:1-slim-bookworm)
#   RUNTIME_IMAGE  runtime base image (default: debian:bookworm-slim)
#   CARGO_PROFILE  cargo profile to build (default: release)
# Both base images must be Debian bookworm (the binary links against its glibc).

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
ARG CARGO_PROFILE=release
WORKDIR /build

# The whole Cargo workspace; .dockerignore keeps build output, local data,
# secrets and the deployment files out of the context.
COPY . .

# The registry and target caches survive between builds (BuildKit and buildah
# both honour these mounts), so a rebuild compiles only what changed. The
# binary is copied out of the cache mount within the same step.
RUN --mount=type=cache,id=claude-agent-http-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=claude-agent-http-target,target=/build/target \
    set -eux; \
    cargo build --locked --profile "$CARGO_PROFILE" --bin claude-agent-http; \
    out_dir="$CARGO_PROFILE"; \
    if [ "$CARGO_PROFILE" = dev ]; then out_dir=debug; fi; \
    install -D -m 0755 "target/$out_dir/claude-agent-http" /out/claude-agent-http

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

# Run-time tools of the agent: bash and coreutils (already in the base), git,
# CA certificates for HTTPS, procps for ps/top when debugging, tini as init.
# To keep the image small:
# - git's server and mail programs (daemon, http-backend, shell, imap-send,
#   dumb-HTTP push, scalar, gitweb) are left out through dpkg path excludes;
# - git depends on Perl only for rarely used commands (send-email, svn, ...),
#   so a placeholder package stands in for it. Install `perl` on top if you
#   need those commands.
RUN set -eux; \
    printf '%s\n' \
        'path-exclude=/usr/lib/git-core/git-daemon' \
        'path-exclude=/usr/lib/git-core/git-http-backend' \
        'path-exclude=/usr/lib/git-core/git-http-push' \
        'path-exclude=/usr/lib/git-core/git-imap-send' \
        'path-exclude=/usr/lib/git-core/git-shell' \
        'path-exclude=/usr/lib/git-core/scalar' \
        'path-exclude=/usr/bin/git-shell' \
        'path-exclude=/usr/bin/scalar' \
        'path-exclude=/usr/share/gitweb/*' \
        >/etc/dpkg/dpkg.cfg.d/claude-agent-http-slim-git; \
    mkdir -p /tmp/no-perl/DEBIAN; \
    printf '%s\n' \
        'Package: claude-agent-no-perl' \
        'Version: 1.0' \
        'Architecture: all' \
        'Maintainer: claude-agent-http <root@localhost>' \
        'Provides: perl, liberror-perl' \
        'Description: satisfies git'"'"'s Perl dependency in the claude-agent-http image' \
        >/tmp/no-perl/DEBIAN/control; \
    dpkg-deb --build /tmp/no-perl /tmp/no-perl.deb >/dev/null; \
    dpkg -i /tmp/no-perl.deb; \
    rm -rf /tmp/no-perl /tmp/no-perl.deb; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates git procps tini; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log; \
    groupadd --gid 1000 claudeuser; \
    useradd --uid 1000 --gid 1000 --create-home --home-dir /home/claudeuser --shell /bin/bash claudeuser; \
    chmod 0700 /home/claudeuser; \
    mkdir -p /data/claude-users /data/db /app; \
    chown claudeuser:claudeuser /data/claude-users /data/db

COPY --from=builder /out/claude-agent-http /usr/local/bin/claude-agent-http
COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh

# Container defaults; docker-compose.yml and `docker run -e` override them.
# A config file mounted at /app/config.yaml is read as well (environment wins).
ENV HOME=/home/claudeuser \
    LANG=C.UTF-8 \
    CLAUDE_AGENT_USER_BASE_DIR=/data/claude-users \
    CLAUDE_AGENT_SESSION_STORAGE=sqlite \
    CLAUDE_AGENT_SESSION_SQLITE_PATH=/data/db/sessions.db \
    CLAUDE_AGENT_API_HOST=0.0.0.0 \
    CLAUDE_AGENT_API_PORT=8000 \
    RUST_LOG=info

WORKDIR /app
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["claude-agent-http", "healthcheck"]

# The entrypoint fixes volume ownership, then runs tini -> the service as
# claudeuser (UID 1000). See docker/entrypoint.sh.
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["claude-agent-http"]
