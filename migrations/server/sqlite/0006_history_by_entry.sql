-- Tufa notary-server schema for SQLite, version 6: target history by audit entry.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- `tufa-server audit verify` reads each publish entry's history rows to check them against what
-- the entry recorded.
CREATE INDEX target_history_entry_idx ON target_history (audit_seq, id);
