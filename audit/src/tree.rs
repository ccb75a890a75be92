//! The RFC 6962 Merkle tree over entry leaf hashes.
//!
//! Two views of one tree. A store keeps the tree's *stored hashes* (Crosby and Wallach's dense
//! numbering, as Go's sumdb `tlog` does): appending entry `n` writes at most `1 + log2 n` hashes,
//! and the root at any size, inclusion proofs and consistency proofs each read `O(log n)` of them.
//! Reads go through a database, so every operation here is split in two: `*_reads` says which
//! stored-hash indexes are needed (they depend only on the sizes, never on hash values), the
//! caller fetches them, and the second function computes the result from a [`Hashes`] map.
//! The arithmetic is tlog_tiles' (a port of Go's `golang.org/x/mod/sumdb/tlog`).
//!
//! The offline verifier needs no stored hashes: a [`Frontier`] folds the leaves in order and
//! gives the root at any size in `O(log n)` memory.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tlog_tiles::{Hash, HashReader};

/// Stored hashes read from a store: stored-hash index -> hash.
pub type Hashes = BTreeMap<u64, Hash>;

/// Longest inclusion or consistency proof accepted for checking: a tree of 2^64 leaves needs at
/// most 2 * 64 hashes.
pub const MAX_PROOF_HASHES: usize = 128;

/// Why a tree operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A stored hash the operation needs is not in the map (the store lost or never wrote it).
    #[error("stored hash {0} is missing")]
    Missing(u64),
    /// The sizes or the index are out of range (e.g. an index beyond the tree).
    #[error("{0}")]
    Range(String),
    /// The proof does not lead to the expected root.
    #[error("the proof does not match the tree head")]
    InvalidProof,
}

fn from_tlog(error: tlog_tiles::Error) -> TreeError {
    match error {
        tlog_tiles::Error::InvalidInput(text) => TreeError::Range(text),
        _ => TreeError::InvalidProof,
    }
}

/// A reader that only records which indexes were asked for.
#[derive(Default)]
struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash::default(); indexes.len()])
    }
}

/// A reader over hashes fetched from a store.
struct MapReader<'a> {
    hashes: &'a Hashes,
    missing: RefCell<Option<u64>>,
}

impl HashReader for MapReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(indexes.len());
        for index in indexes {
            match self.hashes.get(index) {
                Some(hash) => out.push(*hash),
                None => {
                    *self.missing.borrow_mut() = Some(*index);
                    return Err(tlog_tiles::Error::InvalidInput(format!("stored hash {index} is missing")));
                }
            }
        }
        Ok(out)
    }
}

/// Runs `operation` once against a recorder and returns the indexes it read, sorted and unique.
fn reads_of<T>(operation: impl Fn(&Recorder) -> Result<T, tlog_tiles::Error>) -> Vec<u64> {
    let recorder = Recorder::default();
    // The recorder never fails; an operation refusing its sizes reads nothing.
    let _ = operation(&recorder);
    let mut indexes = recorder.0.into_inner();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

/// Runs `operation` against fetched hashes, naming a missing one.
fn with_hashes<T>(
    hashes: &Hashes,
    operation: impl Fn(&MapReader<'_>) -> Result<T, tlog_tiles::Error>,
) -> Result<T, TreeError> {
    let reader = MapReader { hashes, missing: RefCell::new(None) };
    let result = operation(&reader);
    if let Some(index) = *reader.missing.borrow() {
        return Err(TreeError::Missing(index));
    }
    result.map_err(from_tlog)
}

/// The stored-hash indexes appending leaf `n` (the `n + 1`-th entry) reads.
pub fn append_reads(n: u64) -> Vec<u64> {
    reads_of(|reader| tlog_tiles::stored_hashes_for_record_hash(n, Hash::default(), reader))
}

/// The stored hashes to write when appending leaf `n` with hash `leaf`, as (index, hash) pairs
/// with consecutive indexes starting at the leaf's own.
pub fn append(n: u64, leaf: Hash, hashes: &Hashes) -> Result<Vec<(u64, Hash)>, TreeError> {
    let new = with_hashes(hashes, |reader| tlog_tiles::stored_hashes_for_record_hash(n, leaf, reader))?;
    let first = tlog_tiles::stored_hash_index(0, n);
    Ok(new.into_iter().zip(first..).map(|(hash, index)| (index, hash)).collect())
}

/// The stored-hash indexes of the roots of the perfect subtrees that make up the tree of `size`
/// leaves, largest first: every stored hash that appending further leaves reads is one of them
/// or is written by those appends.
pub fn frontier(size: u64) -> Vec<u64> {
    let mut indexes = Vec::new();
    let mut start = 0u64;
    for level in (0..u64::BITS).rev() {
        let width = 1u64 << level;
        if size & width != 0 {
            indexes.push(tlog_tiles::stored_hash_index(u8::try_from(level).unwrap_or(u8::MAX), start >> level));
            start |= width;
        }
    }
    indexes
}

/// The stored-hash index of leaf `n`'s own hash.
pub fn leaf_index(n: u64) -> u64 {
    tlog_tiles::stored_hash_index(0, n)
}

/// The stored-hash indexes the root of the tree of `size` leaves reads.
pub fn root_reads(size: u64) -> Vec<u64> {
    reads_of(|reader| tlog_tiles::tree_hash(size, reader))
}

/// The root hash of the tree of `size` leaves (the hash of the empty string for 0).
pub fn root(size: u64, hashes: &Hashes) -> Result<Hash, TreeError> {
    with_hashes(hashes, |reader| tlog_tiles::tree_hash(size, reader))
}

/// The stored-hash indexes the inclusion proof of leaf `index` in the tree of `size` reads.
pub fn inclusion_reads(index: u64, size: u64) -> Vec<u64> {
    reads_of(|reader| tlog_tiles::prove_record(size, index, reader))
}

/// The RFC 6962 inclusion proof (audit path, leaf side first) of leaf `index` in the tree of
/// `size` leaves.
pub fn inclusion(index: u64, size: u64, hashes: &Hashes) -> Result<Vec<Hash>, TreeError> {
    if index >= size {
        return Err(TreeError::Range(format!("entry {index} is not in a tree of {size} entries")));
    }
    with_hashes(hashes, |reader| tlog_tiles::prove_record(size, index, reader))
}

/// The stored-hash indexes the consistency proof from `old` to `new` leaves reads.
pub fn consistency_reads(old: u64, new: u64) -> Vec<u64> {
    reads_of(|reader| tlog_tiles::prove_tree(new, old, reader))
}

/// The RFC 6962 consistency proof that the tree of `old` leaves is a prefix of the tree of
/// `new` leaves.
pub fn consistency(old: u64, new: u64, hashes: &Hashes) -> Result<Vec<Hash>, TreeError> {
    if old == 0 || old > new {
        return Err(TreeError::Range(format!(
            "no consistency proof from {old} to {new} entries: need 1 <= old <= new"
        )));
    }
    with_hashes(hashes, |reader| tlog_tiles::prove_tree(new, old, reader))
}

/// Checks that `proof` shows leaf `leaf` at `index` in the tree of `size` leaves with root `root`.
pub fn check_inclusion(proof: &[Hash], index: u64, size: u64, leaf: Hash, root: Hash) -> Result<(), TreeError> {
    if index >= size {
        return Err(TreeError::Range(format!("entry {index} is not in a tree of {size} entries")));
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(TreeError::InvalidProof);
    }
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf).map_err(from_tlog)
}

/// Checks that `proof` shows the tree of `old` leaves with root `old_root` to be a prefix of the
/// tree of `new` leaves with root `new_root`.
pub fn check_consistency(proof: &[Hash], old: u64, old_root: Hash, new: u64, new_root: Hash) -> Result<(), TreeError> {
    if old == 0 || old > new {
        return Err(TreeError::Range(format!(
            "no consistency proof from {old} to {new} entries: need 1 <= old <= new"
        )));
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(TreeError::InvalidProof);
    }
    tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root).map_err(from_tlog)
}

/// The right edge of a tree being built leaf by leaf: the roots of its perfect subtrees, largest
/// first. Gives the root at the current size in `O(log n)` time and memory.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (height, hash) of each perfect subtree, left to right; heights strictly decrease.
    subtrees: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// How many leaves have been added.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf's hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut height = 0u32;
        while let Some(&(top_height, top)) = self.subtrees.last() {
            if top_height != height {
                break;
            }
            self.subtrees.pop();
            hash = tlog_tiles::node_hash(top, hash);
            height += 1;
        }
        self.subtrees.push((height, hash));
        self.size += 1;
    }

    /// The RFC 6962 root of the leaves added so far.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(&(_, mut hash)) = subtrees.next() else {
            return tlog_tiles::EMPTY_HASH;
        };
        for &(_, left) in subtrees {
            hash = tlog_tiles::node_hash(left, hash);
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        tlog_tiles::record_hash(format!("entry {i}").as_bytes())
    }

    /// RFC 6962 section 2.1 MTH, written directly from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => tlog_tiles::EMPTY_HASH,
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                tlog_tiles::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    /// A store of stored hashes built by appending `count` leaves through the two-step API.
    fn build(count: u64) -> (Hashes, Vec<Hash>) {
        let mut stored = Hashes::new();
        let mut leaves = Vec::new();
        for n in 0..count {
            let reads = append_reads(n);
            let fetched: Hashes = reads.iter().map(|index| (*index, stored[index])).collect();
            let new = append(n, leaf(n), &fetched).unwrap();
            assert_eq!(new[0].0, leaf_index(n));
            stored.extend(new);
            leaves.push(leaf(n));
        }
        (stored, leaves)
    }

    fn fetch(stored: &Hashes, reads: Vec<u64>) -> Hashes {
        reads.into_iter().map(|index| (index, stored[&index])).collect()
    }

    #[test]
    fn roots_from_stored_hashes_and_the_frontier_match_rfc6962() {
        let (stored, leaves) = build(70);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), mth(&[]));
        for size in 1..=70u64 {
            frontier.push(leaves[size as usize - 1]);
            let expected = mth(&leaves[..size as usize]);
            assert_eq!(frontier.root(), expected, "frontier at {size}");
            assert_eq!(frontier.size(), size);
            let root = root(size, &fetch(&stored, root_reads(size))).unwrap();
            assert_eq!(root, expected, "stored at {size}");
        }
    }

    #[test]
    fn appends_read_only_the_right_edge_and_keeping_it_is_enough() {
        let (stored, _) = build(300);
        // An appender that remembers only the right edge, starting from nothing, never misses a
        // hash it must read, and what it keeps matches what is stored.
        let mut kept = Hashes::new();
        for n in 0..300u64 {
            let reads = append_reads(n);
            let edge = frontier(n);
            for index in &reads {
                assert!(edge.contains(index), "append {n} reads {index}, off the edge {edge:?}");
                assert_eq!(kept.get(index), stored.get(index), "append {n} reads {index}");
            }
            let new = append(n, leaf(n), &fetch(&kept, reads)).unwrap();
            let mut all = kept.clone();
            all.extend(new);
            kept = frontier(n + 1).into_iter().map(|index| (index, all[&index])).collect();
        }
        assert_eq!(frontier(0), Vec::<u64>::new());
        assert_eq!(frontier(6).len(), 2);
    }

    #[test]
    fn inclusion_and_consistency_proofs_verify_and_fail_when_wrong() {
        let (stored, leaves) = build(37);
        for size in 1..=37u64 {
            let root_hash = mth(&leaves[..size as usize]);
            for index in 0..size {
                let proof = inclusion(index, size, &fetch(&stored, inclusion_reads(index, size))).unwrap();
                check_inclusion(&proof, index, size, leaves[index as usize], root_hash).unwrap();
                assert_eq!(check_inclusion(&proof, index, size, leaf(999), root_hash), Err(TreeError::InvalidProof));
            }
            for old in 1..=size {
                let proof = consistency(old, size, &fetch(&stored, consistency_reads(old, size))).unwrap();
                let old_root = mth(&leaves[..old as usize]);
                check_consistency(&proof, old, old_root, size, root_hash).unwrap();
                if old < size {
                    assert_eq!(
                        check_consistency(&proof, old, leaf(999), size, root_hash),
                        Err(TreeError::InvalidProof)
                    );
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_and_missing_hashes_are_errors() {
        let (stored, _) = build(5);
        assert!(matches!(inclusion(5, 5, &stored), Err(TreeError::Range(_))));
        assert!(matches!(consistency(0, 5, &stored), Err(TreeError::Range(_))));
        assert!(matches!(consistency(6, 5, &stored), Err(TreeError::Range(_))));
        assert_eq!(root(4, &Hashes::new()), Err(TreeError::Missing(root_reads(4)[0])));
        assert!(matches!(check_inclusion(&[], 3, 2, leaf(0), leaf(0)), Err(TreeError::Range(_))));
        let long = vec![leaf(0); MAX_PROOF_HASHES + 1];
        assert_eq!(check_inclusion(&long, 0, 2, leaf(0), leaf(0)), Err(TreeError::InvalidProof));
    }

    #[test]
    fn appending_writes_about_two_hashes_per_entry() {
        let (stored, _) = build(1024);
        assert_eq!(stored.len() as u64, tlog_tiles::stored_hash_count(1024));
        assert!(stored.len() < 2 * 1024);
    }
}
