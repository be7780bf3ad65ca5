-- An interrupt asked for on any instance; the turn's holder sees it when it renews its lease.
ALTER TABLE sessions ADD COLUMN interrupt_requested BOOLEAN NOT NULL DEFAULT FALSE;
