-- API keys bound to one user: the secret is kept only as its SHA-256 digest.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    name        TEXT,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- Tokens, cost and turns per user and UTC day, kept after sessions are
-- deleted so daily quotas hold.
CREATE TABLE usage_daily (
    user_id               TEXT NOT NULL,
    day                   TEXT NOT NULL,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd              REAL NOT NULL DEFAULT 0,
    turns                 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- Turns started per rate-limit bucket (an API key) in one-minute windows.
CREATE TABLE rate_windows (
    bucket       TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, window_start)
);
