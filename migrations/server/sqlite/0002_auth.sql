-- Tufa notary-server schema for SQLite, version 2: who may do what, and deleted repositories.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC), as in version 1.
-- The store keeps these rows as strings and hashes; it never hashes a password or a token and
-- never interprets a role or a GUN pattern (that is tufa-auth's and the server's business).

-- Users and service accounts of the built-in token service. `password_hash` is a PHC string
-- (Argon2id); NULL means the principal cannot log in with a password (service accounts).
CREATE TABLE principals (
    name          TEXT    NOT NULL PRIMARY KEY CHECK (name <> ''),
    kind          TEXT    NOT NULL CHECK (kind IN ('user', 'service')),
    password_hash TEXT    NULL,
    created_at    INTEGER NOT NULL
) STRICT;

-- API tokens: `id` is the token's public id; `secret_hash` is the hex SHA-256 of its secret,
-- never the secret. Removing a principal deletes its tokens in the same transaction; the
-- cascade also catches a token inserted while the principal is being removed.
CREATE TABLE api_tokens (
    id          TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    principal   TEXT    NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    secret_hash TEXT    NOT NULL CHECK (secret_hash <> ''),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NULL,
    revoked_at  INTEGER NULL
) STRICT;

-- Listing tokens by principal, and deleting a principal's tokens.
CREATE INDEX api_tokens_principal_idx ON api_tokens (principal, id);

-- Role bindings: `principal` has `role` on every GUN matching `pattern`. No foreign key:
-- the principal `anonymous` stands for unauthenticated callers and is not in `principals`.
-- The key's column order is the listing order.
CREATE TABLE role_bindings (
    principal  TEXT    NOT NULL CHECK (principal <> ''),
    role       TEXT    NOT NULL CHECK (role <> ''),
    pattern    TEXT    NOT NULL CHECK (pattern <> ''),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (principal, pattern, role)
) STRICT, WITHOUT ROWID;

-- The last current root.json of each deleted GUN, byte for byte, so that a deletion is not a
-- takeover. Written by the GUN's deletion, removed by the next update that stores a root.
CREATE TABLE tombstones (
    gun        TEXT    NOT NULL PRIMARY KEY,
    root       BLOB    NOT NULL,
    deleted_at INTEGER NOT NULL
) STRICT;

-- The built-in token service's CA and signing keys. `certificate` is DER; `sealed_private`
-- is encrypted by the server under the key-encryption key `kek_id`, as server_keys are.
CREATE TABLE token_keys (
    id             TEXT    NOT NULL PRIMARY KEY CHECK (id <> ''),
    kind           TEXT    NOT NULL CHECK (kind IN ('ca', 'signing')),
    algorithm      TEXT    NOT NULL,
    certificate    BLOB    NOT NULL,
    sealed_private BLOB    NOT NULL,
    kek_id         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER NULL
) STRICT;

-- At most one active (un-retired) key per kind, whatever number of processes share the file.
CREATE UNIQUE INDEX token_keys_one_active_idx ON token_keys (kind) WHERE retired_at IS NULL;
