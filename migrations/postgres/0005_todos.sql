-- The session's todo list as TodoWrite last set it: a JSON array of
-- {content, status, activeForm}, escaped like metadata when it holds a NUL.
ALTER TABLE sessions ADD COLUMN todos JSONB NOT NULL DEFAULT '[]';
ALTER TABLE sessions ADD COLUMN todos_escaped BOOLEAN NOT NULL DEFAULT FALSE;
