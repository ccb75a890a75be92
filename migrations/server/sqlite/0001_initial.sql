-- Tufa notary-server schema for SQLite, version 1.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC), so they sort and compare
-- as numbers and have the same precision as PostgreSQL's TIMESTAMPTZ.

-- Every metadata file ever accepted for a GUN, byte for byte as the client uploaded it
-- (or as the server signed it). `sha256` is the lowercase hex SHA-256 of `data`; `expires`
-- is the file's `signed.expires` as parsed by the server, NULL when it has none.
CREATE TABLE tuf_files (
    gun        TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT    NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    data       BLOB    NOT NULL,
    expires    INTEGER NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (gun, role, version)
) STRICT;

-- Lookups by checksum (`<role>.<sha256>.json`).
CREATE INDEX tuf_files_gun_role_sha256_idx ON tuf_files (gun, role, sha256);

-- The files a GET of current metadata serves: one row per GUN and role, pointing at one
-- stored version. The server replaces a GUN's whole set in each update. `expires` is a copy
-- of the file's expiry so that the expiry sweep reads this table alone.
CREATE TABLE current_files (
    gun     TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    expires INTEGER NULL,
    PRIMARY KEY (gun, role),
    FOREIGN KEY (gun, role, version) REFERENCES tuf_files (gun, role, version)
) STRICT, WITHOUT ROWID;

-- The expiry sweep looks only at current timestamps and snapshots.
CREATE INDEX current_files_expires_idx ON current_files (expires)
    WHERE role IN ('timestamp', 'snapshot');

-- One record per stored timestamp ('update') and per effective GUN deletion ('deletion').
-- AUTOINCREMENT: ids are never reused, so consumers can page through the feed by id.
CREATE TABLE changefeed (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    gun        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    category   TEXT    NOT NULL CHECK (category IN ('update', 'deletion'))
) STRICT;

CREATE INDEX changefeed_gun_id_idx ON changefeed (gun, id);

-- Online (timestamp and snapshot) keys held by the server. `sealed_private` is encrypted by
-- the server under the key-encryption key `kek_id` before it reaches the database.
CREATE TABLE server_keys (
    key_id         TEXT    NOT NULL PRIMARY KEY,
    gun            TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    algorithm      TEXT    NOT NULL,
    public         BLOB    NOT NULL,
    sealed_private BLOB    NOT NULL,
    kek_id         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used      INTEGER NULL
) STRICT;

-- Finding a fresh key for a GUN and role.
CREATE INDEX server_keys_unused_idx ON server_keys (gun, role, algorithm, key_id)
    WHERE last_used IS NULL;
