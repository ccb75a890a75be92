-- Tufa notary-server schema for PostgreSQL, version 3: which repository each online key belongs to.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- The repository and role each online key was issued for, whichever signer holds it (the
-- in-process one or a remote tufa-signer / notary-signer), so the server never signs one
-- repository's metadata with another repository's key. `requester` is the client address that
-- asked for the key, used to bound the keys of repositories that were never published.
CREATE TABLE key_owners (
    key_id     TEXT        COLLATE "C" NOT NULL CHECK (key_id <> ''),
    gun        TEXT        COLLATE "C" NOT NULL CHECK (gun <> ''),
    role       TEXT        NOT NULL CHECK (role IN ('timestamp', 'snapshot')),
    requester  TEXT        NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT key_owners_pkey PRIMARY KEY (key_id)
);

CREATE INDEX key_owners_requester_idx ON key_owners (requester, created_at);
CREATE INDEX key_owners_gun_idx ON key_owners (gun);

-- Keys the in-process signer made before this version already record their repository.
INSERT INTO key_owners (key_id, gun, role, requester, created_at)
    SELECT key_id, gun, role, NULL, created_at FROM server_keys WHERE role IN ('timestamp', 'snapshot');
