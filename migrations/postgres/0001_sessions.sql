-- Sessions and their conversation, shared by every instance using this database.
CREATE TABLE sessions (
    id                    UUID PRIMARY KEY,
    user_id               TEXT NOT NULL,
    subdir                TEXT,
    cwd                   TEXT NOT NULL,
    metadata              JSONB NOT NULL DEFAULT 'null',
    created_at            TIMESTAMPTZ NOT NULL,
    last_active_at        TIMESTAMPTZ NOT NULL,
    message_count         BIGINT NOT NULL DEFAULT 0,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd              DOUBLE PRECISION NOT NULL DEFAULT 0,
    turn_holder           UUID,
    turn_expires_at       TIMESTAMPTZ
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_last_active_at ON sessions (last_active_at);

CREATE TABLE messages (
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);
