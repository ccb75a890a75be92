-- Tufa notary-server schema for PostgreSQL, version 8: grants by the audit entry that ended them.
-- Forward-only: once this file has landed it is never edited; later changes go in new files.

-- `tufa-server audit verify` reads the grants each entry ended to check them against the digest
-- the entry recorded. Grants in force are left out of the index.
CREATE INDEX grants_ended_idx ON grants (superseded_seq, id) WHERE superseded_seq IS NOT NULL;
