-- Tufa notary-server schema for PostgreSQL, version 1.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.
-- Timestamps are TIMESTAMPTZ in UTC with microsecond precision.

-- Every metadata file ever accepted for a GUN, byte for byte as the client uploaded it
-- (or as the server signed it). `sha256` is the lowercase hex SHA-256 of `data`; `expires`
-- is the file's `signed.expires` as parsed by the server, NULL when it has none.
CREATE TABLE tuf_files (
    gun        TEXT        NOT NULL,
    role       TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    sha256     TEXT        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    data       BYTEA       NOT NULL,
    expires    TIMESTAMPTZ NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT tuf_files_pkey PRIMARY KEY (gun, role, version)
);

-- Lookups by checksum (`<role>.<sha256>.json`).
CREATE INDEX tuf_files_gun_role_sha256_idx ON tuf_files (gun, role, sha256);

-- The files a GET of current metadata serves: one row per GUN and role, pointing at one
-- stored version. The server replaces a GUN's whole set in each update. `expires` is a copy
-- of the file's expiry so that the expiry sweep reads this table alone.
CREATE TABLE current_files (
    gun     TEXT        NOT NULL,
    role    TEXT        NOT NULL,
    version BIGINT      NOT NULL,
    expires TIMESTAMPTZ NULL,
    CONSTRAINT current_files_pkey PRIMARY KEY (gun, role),
    CONSTRAINT current_files_file_fkey FOREIGN KEY (gun, role, version)
        REFERENCES tuf_files (gun, role, version)
);

-- The expiry sweep looks only at current timestamps and snapshots.
CREATE INDEX current_files_expires_idx ON current_files (expires)
    WHERE role IN ('timestamp', 'snapshot');

-- One record per stored timestamp ('update') and per effective GUN deletion ('deletion').
-- Consumers page through it by `id`, so ids must become visible in increasing order; the
-- store serialises the inserts (see tufa-store's postgres module).
CREATE TABLE changefeed (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    gun        TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    sha256     TEXT        NOT NULL,
    category   TEXT        NOT NULL CHECK (category IN ('update', 'deletion')),
    CONSTRAINT changefeed_pkey PRIMARY KEY (id)
);

CREATE INDEX changefeed_gun_id_idx ON changefeed (gun, id);

-- Online (timestamp and snapshot) keys held by the server. `sealed_private` is encrypted by
-- the server under the key-encryption key `kek_id` before it reaches the database.
CREATE TABLE server_keys (
    key_id         TEXT        NOT NULL,
    gun            TEXT        NOT NULL,
    role           TEXT        NOT NULL,
    algorithm      TEXT        NOT NULL,
    public         BYTEA       NOT NULL,
    sealed_private BYTEA       NOT NULL,
    kek_id         TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used      TIMESTAMPTZ NULL,
    CONSTRAINT server_keys_pkey PRIMARY KEY (key_id)
);

-- Finding a fresh key for a GUN and role.
CREATE INDEX server_keys_unused_idx ON server_keys (gun, role, algorithm, key_id)
    WHERE last_used IS NULL;
