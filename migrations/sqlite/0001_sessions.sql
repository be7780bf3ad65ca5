-- Sessions and their conversation. Times are Unix milliseconds (UTC) so
-- that expiry and lease comparisons are plain integer comparisons.
CREATE TABLE sessions (
    id                    TEXT PRIMARY KEY NOT NULL,
    user_id               TEXT NOT NULL,
    subdir                TEXT,
    cwd                   TEXT NOT NULL,
    metadata              TEXT NOT NULL DEFAULT 'null',
    created_at            INTEGER NOT NULL,
    last_active_at        INTEGER NOT NULL,
    message_count         INTEGER NOT NULL DEFAULT 0,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd              REAL NOT NULL DEFAULT 0,
    turn_holder           TEXT,
    turn_expires_at       INTEGER
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_last_active_at ON sessions (last_active_at);

CREATE TABLE messages (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
