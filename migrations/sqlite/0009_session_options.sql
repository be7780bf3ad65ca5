-- The options a session chose in place of the service's defaults: a JSON
-- object of the set ones (model, system_prompt, permission_mode, ...).
ALTER TABLE sessions ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
-- The list order (oldest first, ties by id), so a page starts with an
-- index seek after the cursor, for all users or one.
CREATE INDEX sessions_created_at_id ON sessions (created_at, id);
CREATE INDEX sessions_user_created_at_id ON sessions (user_id, created_at, id);
