-- tufa-signer schema, SQLite dialect. Forward-only: never edit after release; add a new file.
-- Timestamps are UTC text in one fixed-width form, YYYY-MM-DDTHH:MM:SS.ffffffZ, so that text
-- order is time order.

-- One row per private key the signer holds. `handle` is what the backend needs to use the key
-- (the sealed PKCS#8 document for the software backend, the token object ID for PKCS#11); it
-- never holds plaintext key material.
CREATE TABLE signer_keys (
    key_id      TEXT    NOT NULL PRIMARY KEY,
    gun         TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    algorithm   TEXT    NOT NULL,
    public      BLOB    NOT NULL,
    backend     TEXT    NOT NULL,
    handle      BLOB    NOT NULL,
    sealed_with TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    last_used   TEXT    NULL
);

-- CreateKey hands out the lowest never-used key for (gun, role, algorithm, backend).
CREATE INDEX signer_keys_unused_idx ON signer_keys (gun, role, algorithm, backend, key_id)
    WHERE last_used IS NULL;
-- KEK rotation finds the keys sealed under other KEKs.
CREATE INDEX signer_keys_sealed_with_idx ON signer_keys (backend, sealed_with);

-- The audit trail: one row per signature made. Rows outlive their keys (no foreign key).
CREATE TABLE signer_sign_events (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    key_id         TEXT    NOT NULL,
    gun            TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    client_subject TEXT    NOT NULL,
    payload_sha256 TEXT    NOT NULL,
    created_at     TEXT    NOT NULL
);

CREATE INDEX signer_sign_events_key_idx ON signer_sign_events (key_id, id);
CREATE INDEX signer_sign_events_time_idx ON signer_sign_events (created_at, id);
