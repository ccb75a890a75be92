-- Tufa notary-server schema for SQLite, version 9: a history row's canonical key IDs are stored only
-- when they differ from its key IDs.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- A NULL `target_history.signer_canonical_ids` meant "recorded before canonical IDs were" and read as
-- none. From this version on it means "the same as `signer_keys`", which is what most rows hold (a
-- key that is not a certificate is its own canonical ID): a large publish's rows no longer repeat a
-- second list of 64-character IDs each. The rows recorded before say "none" explicitly, so they read
-- as they did.
UPDATE target_history SET signer_canonical_ids = '[]' WHERE signer_canonical_ids IS NULL;
