-- tufa-signer schema, PostgreSQL dialect. Forward-only: never edit after release; add a new file.

-- One row per private key the signer holds. `handle` is what the backend needs to use the key
-- (the sealed PKCS#8 document for the software backend, the token object ID for PKCS#11); it
-- never holds plaintext key material.
CREATE TABLE signer_keys (
    key_id      VARCHAR(64)  NOT NULL PRIMARY KEY,
    gun         VARCHAR(255) NOT NULL,
    role        VARCHAR(255) NOT NULL,
    algorithm   VARCHAR(16)  NOT NULL,
    public      BYTEA        NOT NULL,
    backend     VARCHAR(32)  NOT NULL,
    handle      BYTEA        NOT NULL,
    sealed_with VARCHAR(64)  NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL,
    last_used   TIMESTAMPTZ  NULL
);

-- CreateKey hands out the lowest never-used key for (gun, role, algorithm, backend).
CREATE INDEX signer_keys_unused_idx ON signer_keys (gun, role, algorithm, backend, key_id)
    WHERE last_used IS NULL;
-- KEK rotation finds the keys sealed under other KEKs.
CREATE INDEX signer_keys_sealed_with_idx ON signer_keys (backend, sealed_with);

-- The audit trail: one row per signature made. Rows outlive their keys (no foreign key).
CREATE TABLE signer_sign_events (
    id             BIGSERIAL    NOT NULL PRIMARY KEY,
    key_id         VARCHAR(64)  NOT NULL,
    gun            VARCHAR(255) NOT NULL,
    role           VARCHAR(255) NOT NULL,
    client_subject TEXT         NOT NULL,
    payload_sha256 CHAR(64)     NOT NULL,
    created_at     TIMESTAMPTZ  NOT NULL
);

CREATE INDEX signer_sign_events_key_idx ON signer_sign_events (key_id, id);
CREATE INDEX signer_sign_events_time_idx ON signer_sign_events (created_at, id);
