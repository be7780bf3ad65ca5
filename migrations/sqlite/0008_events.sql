-- A session's turns and the frames they produced, for replay after the
-- fact (/events) and for collecting an async turn's result (/turns/{id}).
-- Event ids are per session and keep growing: a turn's first frame follows
-- the previous turn's last (turns.last_event_id), so the newest turn is
-- never pruned.
CREATE TABLE turns (
    session_id     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    status         TEXT NOT NULL,
    first_event_id INTEGER NOT NULL,
    last_event_id  INTEGER NOT NULL,
    status_code    INTEGER,
    result         TEXT,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX turns_first_event ON turns (session_id, first_event_id);

-- One row per frame; `frame` is the frame's JSON text exactly as streamed.
CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id         INTEGER NOT NULL,
    turn_id    TEXT NOT NULL,
    frame      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX session_events_created_at ON session_events (created_at);
