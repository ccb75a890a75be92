-- Tufa notary-server schema for SQLite, version 7: grants by audit entry.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- `tufa-server audit verify` reads each publish entry's grant rows to check them against the
-- digest the entry recorded.
CREATE INDEX grants_entry_idx ON grants (audit_seq, id);
