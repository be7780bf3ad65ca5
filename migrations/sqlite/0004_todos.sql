-- The session's todo list as TodoWrite last set it: a JSON array of
-- {content, status, activeForm}.
ALTER TABLE sessions ADD COLUMN todos TEXT NOT NULL DEFAULT '[]';
