-- Tufa notary-server schema for SQLite, version 4: the audit log, its Merkle tree and signed
-- checkpoints, delegation grants and target history.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- The append-only audit log. Every column is covered by `leaf_hash` (tufa-audit's entry format):
-- an edited, moved, inserted or deleted row is found by `tufa-server audit verify`. `seq` counts
-- from 0 without gaps; appends are serialised inside the write transaction of the
-- change they record.
CREATE TABLE audit_log (
    seq        INTEGER     NOT NULL CHECK (seq >= 0),
    created_at INTEGER     NOT NULL,
    kind       TEXT        NOT NULL,
    gun        TEXT        NULL,
    principal  TEXT        NULL,
    address    TEXT        NULL,
    request_id TEXT        NULL,
    details    TEXT        NOT NULL,
    prev_hash  TEXT        NULL,
    leaf_hash  TEXT        NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (seq)
) STRICT;
CREATE INDEX audit_log_gun_idx ON audit_log (gun, seq);
CREATE INDEX audit_log_principal_idx ON audit_log (principal, seq);
CREATE INDEX audit_log_time_idx ON audit_log (created_at, seq);

-- The key IDs whose signatures an entry records (client keys counted towards thresholds and the
-- server's online keys), to find every entry a key signed.
CREATE TABLE audit_keys_used (
    key_id TEXT   NOT NULL,
    seq    INTEGER NOT NULL REFERENCES audit_log (seq),
    CONSTRAINT audit_keys_used_pkey PRIMARY KEY (key_id, seq)
) STRICT;

-- The Merkle tree's stored hashes (RFC 6962, numbered as in Go's sumdb tlog): about two per entry.
CREATE TABLE audit_hashes (
    idx  INTEGER NOT NULL CHECK (idx >= 0),
    hash BLOB   NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT audit_hashes_pkey PRIMARY KEY (idx)
) STRICT;

-- Signed checkpoints (C2SP signed notes) of the tree.
CREATE TABLE audit_checkpoints (
    id         INTEGER     NOT NULL,
    size       INTEGER     NOT NULL CHECK (size >= 0),
    root       TEXT        NOT NULL,
    note       TEXT        NOT NULL,
    created_at INTEGER     NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (id)
) STRICT;
CREATE INDEX audit_checkpoints_size_idx ON audit_checkpoints (size);

-- The key checkpoints are signed with (held by the signer) and its name. One is active.
CREATE TABLE audit_signing_keys (
    key_id     TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    keytype    TEXT        NOT NULL,
    public     BLOB        NOT NULL,
    active     INTEGER     NOT NULL CHECK (active IN (0, 1)),
    created_at INTEGER     NOT NULL,
    CONSTRAINT audit_signing_keys_pkey PRIMARY KEY (key_id)
) STRICT;
CREATE UNIQUE INDEX audit_signing_keys_active_idx ON audit_signing_keys (active) WHERE active = 1;

-- Delegation grants: "delegating_role (at metadata version `version`) lets these keys sign
-- delegated_role for these paths with this threshold". A new version of the delegating role's
-- file supersedes its previous grants; deleting the repository revokes them.
CREATE TABLE grants (
    id              INTEGER     NOT NULL,
    gun             TEXT        NOT NULL,
    delegating_role TEXT        NOT NULL,
    delegated_role  TEXT        NOT NULL,
    version         INTEGER     NOT NULL,
    threshold       INTEGER     NOT NULL,
    paths           TEXT        NULL,
    principal       TEXT        NULL,
    audit_seq       INTEGER     NULL,
    created_at      INTEGER     NOT NULL,
    superseded_at   INTEGER     NULL,
    CONSTRAINT grants_pkey PRIMARY KEY (id)
) STRICT;
CREATE INDEX grants_gun_idx ON grants (gun, delegating_role, created_at);
CREATE INDEX grants_active_idx ON grants (gun) WHERE superseded_at IS NULL;

CREATE TABLE grant_keys (
    grant_id     INTEGER NOT NULL REFERENCES grants (id),
    key_id       TEXT   NOT NULL,
    canonical_id TEXT   NOT NULL,
    subject      TEXT   NULL,
    CONSTRAINT grant_keys_pkey PRIMARY KEY (grant_id, key_id)
) STRICT;
CREATE INDEX grant_keys_key_idx ON grant_keys (key_id);
CREATE INDEX grant_keys_canonical_idx ON grant_keys (canonical_id);

-- Every version of every target: added, changed or removed in a targets-type file.
CREATE TABLE target_history (
    id          INTEGER     NOT NULL,
    gun         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    version     INTEGER     NOT NULL,
    change      TEXT        NOT NULL CHECK (change IN ('added', 'changed', 'removed')),
    sha256      TEXT        NULL,
    length      INTEGER     NULL,
    signer_keys TEXT        NOT NULL,
    principal   TEXT        NULL,
    audit_seq   INTEGER     NULL,
    created_at  INTEGER     NOT NULL,
    CONSTRAINT target_history_pkey PRIMARY KEY (id)
) STRICT;
CREATE INDEX target_history_name_idx ON target_history (gun, name, id);

-- One-off jobs done on this database (e.g. the backfill of grants and history).
CREATE TABLE audit_state (
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    CONSTRAINT audit_state_pkey PRIMARY KEY (name)
) STRICT;
