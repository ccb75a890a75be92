-- tufa-signer audit log, SQLite dialect. Forward-only: never edit after release; add a new file.
-- The tamper-evident log (tufa_audit): one entry per signature, key creation and key deletion,
-- appended in the transaction of the row it records. Every column of an entry is covered by its
-- leaf hash (tufa_audit::entry::Entry::leaf_bytes); times are microseconds since the Unix epoch.
CREATE TABLE signer_audit_entries (
    seq        INTEGER NOT NULL PRIMARY KEY,
    time       INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    gun        TEXT    NULL,
    principal  TEXT    NULL,
    address    TEXT    NULL,
    request_id TEXT    NULL,
    details    TEXT    NOT NULL,
    prev       TEXT    NULL,
    leaf_hash  TEXT    NOT NULL
);

-- The Merkle tree's stored hashes (tufa_audit::tree: stored-hash index -> 32-byte hash), written
-- with each entry.
CREATE TABLE signer_audit_hashes (
    idx  INTEGER NOT NULL PRIMARY KEY,
    hash BLOB    NOT NULL
);

-- Signed checkpoints (C2SP signed notes) of the log, made by the signer's checkpoint key.
CREATE TABLE signer_audit_checkpoints (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    size       INTEGER NOT NULL,
    root       TEXT    NOT NULL,
    note       TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX signer_audit_checkpoints_size_idx ON signer_audit_checkpoints (size, id);

-- The log entry of each signature; NULL for signatures a previous release recorded, which the
-- signer appends to the log (in id order) when it starts.
ALTER TABLE signer_sign_events ADD COLUMN audit_seq INTEGER NULL;

CREATE INDEX signer_sign_events_unlogged_idx ON signer_sign_events (id) WHERE audit_seq IS NULL;
