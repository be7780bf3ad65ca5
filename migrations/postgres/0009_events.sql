-- A session's turns and the frames they produced, for replay after the
-- fact (/events) and for collecting an async turn's result (/turns/{id}).
-- Event ids are per session and keep growing: a turn's first frame follows
-- the previous turn's last (turns.last_event_id), so the newest turn is
-- never pruned. Frames and results are JSON text: as streamed, and free of
-- JSONB's ban on NUL characters.
CREATE TABLE turns (
    session_id     UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id             UUID NOT NULL,
    status         TEXT NOT NULL,
    first_event_id BIGINT NOT NULL,
    last_event_id  BIGINT NOT NULL,
    status_code    INTEGER,
    result         TEXT,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX turns_first_event ON turns (session_id, first_event_id);

CREATE TABLE session_events (
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id         BIGINT NOT NULL,
    turn_id    UUID NOT NULL,
    frame      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX session_events_created_at ON session_events (created_at);
