-- Calls and questions waiting for a person: written by the turn that asks,
-- answered through the API on any instance, read back by the turn.
-- `answer` stays NULL while the request is pending. JSON values are escaped
-- like messages when they hold a NUL.
CREATE TABLE session_requests (
    id                 UUID PRIMARY KEY,
    session_id         UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind               TEXT NOT NULL,
    tool_use_id        TEXT NOT NULL,
    tool_name          TEXT NOT NULL,
    tool_input         JSONB NOT NULL,
    tool_input_escaped BOOLEAN NOT NULL DEFAULT FALSE,
    reason             TEXT NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ NOT NULL,
    answer             JSONB,
    answer_escaped     BOOLEAN NOT NULL DEFAULT FALSE,
    answered_at        TIMESTAMPTZ
);
CREATE INDEX session_requests_session ON session_requests (session_id, created_at);

-- Allow rules a person gave with `remember: session`, for the rest of the session.
CREATE TABLE session_allow_rules (
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    rule       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, rule)
);

-- Messages sent with `queue: true` while a turn ran, in the order they came.
-- The message is a JSON string, so a NUL in it can be escaped.
CREATE TABLE queued_messages (
    id              BIGSERIAL PRIMARY KEY,
    session_id      UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    message         JSONB NOT NULL,
    message_escaped BOOLEAN NOT NULL DEFAULT FALSE,
    timeout_ms      BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX queued_messages_session ON queued_messages (session_id, id);
