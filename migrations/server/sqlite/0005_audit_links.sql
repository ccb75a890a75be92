-- Tufa notary-server schema for SQLite, version 5: links between the record's tables.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- The audit entry of the change that ended a grant (a new version of the delegating file, or the
-- repository's deletion): who removed or changed a delegate, without matching times.
ALTER TABLE grants ADD COLUMN superseded_seq INTEGER NULL;

-- The canonical key IDs (of the bare public keys) beside the key IDs as the metadata lists them.
ALTER TABLE target_history ADD COLUMN signer_canonical_ids TEXT NULL;
