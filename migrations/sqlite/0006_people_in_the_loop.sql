-- Calls and questions waiting for a person: written by the turn that asks,
-- answered through the API on any instance, read back by the turn.
-- `answer` stays NULL while the request is pending.
CREATE TABLE session_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    tool_use_id TEXT NOT NULL,
    tool_name   TEXT NOT NULL,
    tool_input  TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    answer      TEXT,
    answered_at INTEGER
);
CREATE INDEX session_requests_session ON session_requests (session_id, created_at);

-- Allow rules a person gave with `remember: session`, for the rest of the session.
CREATE TABLE session_allow_rules (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    rule       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, rule)
);

-- Messages sent with `queue: true` while a turn ran, in the order they came.
CREATE TABLE queued_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    message    TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX queued_messages_session ON queued_messages (session_id, id);
