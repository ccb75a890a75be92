//! The offline check of a whole log: every entry against its own hash and the hash chain, and the
//! Merkle root at every checkpoint's size against that checkpoint, verified with a pinned key.
//!
//! Entries are fed in stored order, one at a time ([`LogVerifier::push`]), so a log of millions
//! of entries is checked in `O(log n)` memory. Each problem names the position where it shows:
//! an entry whose columns no longer match its stored hash (edited), a position with no entry
//! (deleted) or with two (inserted), an entry whose link to the one before does not match
//! (something before it was rewritten, inserted, deleted or moved), and a checkpoint whose root
//! the entries no longer produce (someone rewrote entries *and* their hashes: the problem names
//! the range between the last checkpoint that still matches and this one).

use chrono::{DateTime, Utc};
use tlog_tiles::Hash;

use crate::checkpoint::{self, CheckpointKey, TreeHead};
use crate::entry::{Entry, format_time, hash_hex};
use crate::tree::Frontier;

/// At most this many problems are kept in a report; the rest are counted.
pub const MAX_PROBLEMS: usize = 1000;

/// What kind of tampering or damage a problem shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The entry's columns do not produce its stored hash.
    Edited,
    /// Positions without an entry.
    Missing,
    /// A second entry at a position already seen, or one out of order.
    Inserted,
    /// The entry's link to the entry before it does not match.
    ChainBroken,
    /// The entries do not produce a checkpoint's root.
    CheckpointMismatch,
    /// A stored checkpoint is not validly signed by the pinned key, or is malformed.
    CheckpointInvalid,
    /// A checkpoint covers more entries than the log holds.
    Truncated,
    /// Checkpoints disagree with each other (a later one covers fewer entries).
    RolledBack,
    /// Rows derived from an entry (the tag history a publish wrote) no longer match what the
    /// entry recorded of them.
    RecordMismatch,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The first position concerned, when there is one.
    pub position: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// A sentence for the auditor.
    pub message: String,
}

/// A stored checkpoint as read from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The tree size the store recorded beside the note.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints that verified.
    pub checkpoints: usize,
    /// The largest verified checkpoint, if any.
    pub latest: Option<CheckpointSummary>,
    /// Problems found, in the order found (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Problems found beyond those kept.
    pub more_problems: u64,
}

impl Report {
    /// Whether nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.more_problems == 0
    }
}

/// A verified checkpoint, as shown in a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointSummary {
    /// Entries it covers.
    pub size: u64,
    /// Its root hash, lowercase hex.
    pub root: String,
    /// When it was made.
    pub time: DateTime<Utc>,
}

impl From<&TreeHead> for CheckpointSummary {
    fn from(head: &TreeHead) -> Self {
        CheckpointSummary { size: head.size, root: hash_hex(&head.root), time: head.time }
    }
}

/// Checks a log entry by entry; see the module documentation.
#[derive(Debug)]
pub struct LogVerifier {
    heads: Vec<TreeHead>,
    next_head: usize,
    last_matching: u64,
    frontier: Frontier,
    expected: u64,
    /// The stored (else recomputed) hash of the last entry read.
    prev: Option<Hash>,
    entries: u64,
    problems: Vec<Problem>,
    more_problems: u64,
}

impl LogVerifier {
    /// A verifier for a log whose checkpoints are `checkpoints`, signed by `key`. Checkpoints
    /// that do not verify are reported and not used.
    pub fn new(key: &CheckpointKey, checkpoints: &[StoredCheckpoint]) -> LogVerifier {
        let mut verifier = LogVerifier {
            heads: Vec::new(),
            next_head: 0,
            last_matching: 0,
            frontier: Frontier::new(),
            expected: 0,
            prev: None,
            entries: 0,
            problems: Vec::new(),
            more_problems: 0,
        };
        for (number, stored) in checkpoints.iter().enumerate() {
            match checkpoint::open(&stored.note, key) {
                Ok(head) if head.size == stored.size => verifier.heads.push(head),
                Ok(head) => verifier.problem(
                    None,
                    ProblemKind::CheckpointInvalid,
                    format!(
                        "stored checkpoint {number} is recorded for {} entries but its signed note says {}",
                        stored.size, head.size
                    ),
                ),
                Err(error) => verifier.problem(
                    None,
                    ProblemKind::CheckpointInvalid,
                    format!("stored checkpoint {number} (for {} entries) is not valid: {error}", stored.size),
                ),
            }
        }
        verifier.heads.sort_by(|a, b| a.size.cmp(&b.size).then(a.time.cmp(&b.time)));
        let mut latest_time: Option<DateTime<Utc>> = None;
        let mut rolled_back = Vec::new();
        for head in &verifier.heads {
            if let Some(time) = latest_time
                && head.time < time
            {
                rolled_back.push(format!(
                    "the checkpoint of {} covers {} entries, more than a later checkpoint (of {}): the log was rolled back",
                    format_time(head.time),
                    head.size,
                    format_time(time)
                ));
            }
            latest_time = latest_time.max(Some(head.time));
        }
        for message in rolled_back {
            verifier.problem(None, ProblemKind::RolledBack, message);
        }
        verifier
    }

    fn problem(&mut self, position: Option<u64>, kind: ProblemKind, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { position, kind, message });
        } else {
            self.more_problems += 1;
        }
    }

    /// Reads the next entry in stored order, with the leaf hash stored beside it (if the store
    /// keeps one).
    pub fn push(&mut self, entry: &Entry, stored_hash: Option<Hash>) {
        self.entries += 1;
        let seq = entry.seq;
        if seq < self.expected {
            self.problem(
                Some(seq),
                ProblemKind::Inserted,
                format!(
                    "a second entry at position {seq}, after position {}: inserted or duplicated",
                    self.expected - 1
                ),
            );
            return;
        }
        if seq > self.expected {
            let message = if seq - self.expected == 1 {
                format!("the entry at position {} is missing: deleted", self.expected)
            } else {
                format!("the entries at positions {} to {} are missing: deleted", self.expected, seq - 1)
            };
            self.problem(Some(self.expected), ProblemKind::Missing, message);
        }
        let computed = entry.leaf_hash();
        if let Some(stored) = stored_hash
            && stored != computed
        {
            self.problem(
                Some(seq),
                ProblemKind::Edited,
                format!(
                    "the entry at position {seq} ({}, {}) does not match its hash: edited, or moved from another position",
                    entry.kind,
                    format_time(entry.time)
                ),
            );
        }
        if seq == self.expected && entry.prev != self.prev {
            let message = match seq {
                0 => "the first entry links to an earlier entry: entries before it were deleted".to_owned(),
                _ => format!(
                    "the entry at position {seq} does not link to the entry at position {}: that entry was rewritten, \
                     or entries were inserted, deleted or moved between them",
                    seq - 1
                ),
            };
            self.problem(Some(seq), ProblemKind::ChainBroken, message);
        }
        self.prev = Some(stored_hash.unwrap_or(computed));
        self.expected = seq + 1;
        self.frontier.push(computed);
        self.check_heads();
    }

    fn check_heads(&mut self) {
        while let Some(head) = self.heads.get(self.next_head) {
            if head.size > self.frontier.size() {
                break;
            }
            let head = head.clone();
            self.next_head += 1;
            if head.size < self.frontier.size() {
                // Only an empty checkpoint (size 0) can lie behind; it matches the empty tree.
                continue;
            }
            if self.frontier.root() == head.root {
                self.last_matching = head.size;
            } else {
                let from = self.last_matching;
                self.problem(
                    Some(from),
                    ProblemKind::CheckpointMismatch,
                    format!(
                        "the first {} entries do not produce the root of the checkpoint of {}: an entry at a position \
                         from {from} to {} was changed, inserted, deleted or moved (with its hashes rewritten)",
                        head.size,
                        format_time(head.time),
                        head.size.saturating_sub(1)
                    ),
                );
            }
        }
    }

    /// Ends the check: checkpoints beyond the entries read are reported as truncation.
    pub fn finish(mut self) -> Report {
        let size = self.frontier.size();
        for head in self.heads.get(self.next_head..).unwrap_or_default().to_vec() {
            let message = format!(
                "the checkpoint of {} covers {} entries but the log holds {size}: entries from position {size} were deleted",
                format_time(head.time),
                head.size
            );
            self.problem(Some(size), ProblemKind::Truncated, message);
        }
        let latest = self.heads.iter().filter(|head| head.size <= size).max_by_key(|head| (head.size, head.time));
        Report {
            entries: self.entries,
            checkpoints: self.heads.len(),
            latest: latest.map(CheckpointSummary::from),
            problems: self.problems,
            more_problems: self.more_problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::signed_note;
    use crate::entry::NewEntry;
    use chrono::TimeZone;
    use tufa_core::keys::{Algorithm, PrivateKey};

    struct Log {
        entries: Vec<(Entry, Hash)>,
        checkpoints: Vec<StoredCheckpoint>,
        private: PrivateKey,
        key: CheckpointKey,
    }

    impl Log {
        fn new(count: u64) -> Log {
            let private = PrivateKey::generate(Algorithm::Ecdsa).unwrap();
            let key = CheckpointKey::new("test.example/audit", private.public_key()).unwrap();
            let mut log = Log { entries: Vec::new(), checkpoints: Vec::new(), private, key };
            for _ in 0..count {
                log.append();
            }
            log
        }

        fn append(&mut self) {
            let seq = self.entries.len() as u64;
            let prev = self.entries.last().map(|(_, hash)| *hash);
            let time = Utc.timestamp_opt(1_700_000_000 + seq as i64, 0).single().unwrap();
            let entry =
                NewEntry::new("publish", serde_json::json!({"n": seq})).gun("example.com/app").at(seq, time, prev);
            let hash = entry.leaf_hash();
            self.entries.push((entry, hash));
        }

        fn checkpoint(&mut self) {
            let mut frontier = Frontier::new();
            for (entry, _) in &self.entries {
                frontier.push(entry.leaf_hash());
            }
            let head = TreeHead {
                origin: "test.example/audit".into(),
                size: frontier.size(),
                root: frontier.root(),
                time: Utc.timestamp_opt(1_800_000_000 + frontier.size() as i64, 0).single().unwrap(),
            };
            let text = head.text().unwrap();
            let note = signed_note(&text, &self.key, self.private.sign(&text).unwrap()).unwrap();
            self.checkpoints.push(StoredCheckpoint { size: head.size, note });
        }

        fn verify(&self) -> Report {
            let mut verifier = LogVerifier::new(&self.key, &self.checkpoints);
            for (entry, hash) in &self.entries {
                verifier.push(entry, Some(*hash));
            }
            verifier.finish()
        }
    }

    fn kinds(report: &Report) -> Vec<(Option<u64>, ProblemKind)> {
        report.problems.iter().map(|problem| (problem.position, problem.kind)).collect()
    }

    #[test]
    fn an_untouched_log_verifies() {
        let mut log = Log::new(10);
        log.checkpoint();
        log.append();
        log.append();
        let report = log.verify();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.entries, 12);
        assert_eq!(report.checkpoints, 1);
        assert_eq!(report.latest.unwrap().size, 10);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut log = Log::new(10);
        log.checkpoint();
        log.entries[4].0.details = r#"{"n":99}"#.into();
        let report = log.verify();
        assert_eq!(kinds(&report), vec![(Some(4), ProblemKind::Edited), (Some(0), ProblemKind::CheckpointMismatch)]);
    }

    #[test]
    fn an_entry_rewritten_with_its_hash_breaks_the_chain_after_it() {
        let mut log = Log::new(10);
        log.entries[4].0.principal = Some("mallory".into());
        log.entries[4].1 = log.entries[4].0.leaf_hash();
        let report = log.verify();
        assert_eq!(kinds(&report), vec![(Some(5), ProblemKind::ChainBroken)]);
        assert!(report.problems[0].message.contains("position 4"), "{}", report.problems[0].message);
    }

    #[test]
    fn a_fully_rewritten_tail_is_caught_by_the_checkpoint() {
        let mut log = Log::new(6);
        log.checkpoint();
        for _ in 0..4 {
            log.append();
        }
        log.checkpoint();
        // Rewrite entry 7 and every hash and link after it consistently.
        log.entries[7].0.details = r#"{"n":"forged"}"#.into();
        for index in 7..10 {
            if index > 7 {
                log.entries[index].0.prev = Some(log.entries[index - 1].1);
            }
            log.entries[index].1 = log.entries[index].0.leaf_hash();
        }
        let report = log.verify();
        assert_eq!(kinds(&report), vec![(Some(6), ProblemKind::CheckpointMismatch)]);
        assert!(report.problems[0].message.contains("from 6 to 9"), "{}", report.problems[0].message);
    }

    #[test]
    fn deleted_inserted_and_reordered_entries_are_named() {
        let mut deleted = Log::new(8);
        deleted.checkpoint();
        deleted.entries.remove(3);
        assert_eq!(kinds(&deleted.verify()), vec![(Some(3), ProblemKind::Missing), (Some(7), ProblemKind::Truncated)]);

        let mut inserted = Log::new(8);
        inserted.checkpoint();
        let copy = inserted.entries[2].clone();
        inserted.entries.insert(3, copy);
        assert_eq!(kinds(&inserted.verify())[0], (Some(2), ProblemKind::Inserted));

        let mut reordered = Log::new(8);
        reordered.checkpoint();
        // Swap the contents of positions 2 and 5, keeping the position column in place.
        let (two, five) = (reordered.entries[2].clone(), reordered.entries[5].clone());
        reordered.entries[2] = (Entry { seq: 2, ..five.0 }, five.1);
        reordered.entries[5] = (Entry { seq: 5, ..two.0 }, two.1);
        let problems = kinds(&reordered.verify());
        assert_eq!(problems[0], (Some(2), ProblemKind::Edited));
        assert!(problems.contains(&(Some(5), ProblemKind::Edited)), "{problems:?}");
    }

    #[test]
    fn deleting_entries_a_checkpoint_covers_is_truncation() {
        let mut log = Log::new(8);
        log.checkpoint();
        log.entries.truncate(5);
        assert_eq!(kinds(&log.verify()), vec![(Some(5), ProblemKind::Truncated)]);
    }

    #[test]
    fn checkpoints_signed_by_another_key_or_edited_are_not_trusted() {
        let mut log = Log::new(4);
        log.checkpoint();
        log.checkpoints[0].note = log.checkpoints[0].note.replacen("\n4\n", "\n3\n", 1);
        let report = log.verify();
        assert_eq!(kinds(&report), vec![(None, ProblemKind::CheckpointInvalid)]);
        assert_eq!(report.checkpoints, 0);
    }
}
