-- /health commits and deletes a row here to learn whether writes succeed.
CREATE TABLE write_probe (
    id  TEXT PRIMARY KEY NOT NULL,
    pad BLOB NOT NULL
);
