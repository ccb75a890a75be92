-- Tufa notary-server schema for PostgreSQL, version 10: index rows of small audit entries, written
-- later in batches.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- A small change's target-history and key-index rows are written here as one row, in the same
-- transaction as its entry, and moved into `target_history` and `audit_keys_used` in batches (by
-- the server every fraction of a second, at shutdown, and before any query that reads them). They
-- are derived from the entry and checked against it like any other history row: `seq` is the
-- entry, `rows` a JSON object {gun, principal, time in microseconds, keys, history}.
CREATE TABLE audit_pending (
    seq  BIGINT NOT NULL CHECK (seq >= 0),
    rows TEXT   NOT NULL,
    CONSTRAINT audit_pending_pkey PRIMARY KEY (seq)
);
