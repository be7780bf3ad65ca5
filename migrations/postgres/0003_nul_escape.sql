-- jsonb cannot hold U+0000. A value that contains one is stored with its
-- strings escaped (see src/store/postgres.rs) and flagged here; rows without
-- NUL, older rows among them, stay plain jsonb and are read as they are.
ALTER TABLE sessions ADD COLUMN metadata_escaped BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE messages ADD COLUMN content_escaped BOOLEAN NOT NULL DEFAULT FALSE;
