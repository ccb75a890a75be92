//! The tamper-evident record shared by tufa-server and tufa-signer: what an audit entry is and the
//! exact bytes its hash covers ([`entry`]), the RFC 6962 Merkle tree over those hashes and its
//! proofs ([`tree`]), signed checkpoints in the C2SP signed-note format ([`checkpoint`]) and the
//! offline check of a whole log against its checkpoints ([`verify`]).
//!
//! No IO: the stores keep the rows, the binaries sign checkpoints through their signers, and this
//! crate decides what the rows and signatures must be.

pub mod checkpoint;
pub mod entry;
pub mod tree;
pub mod verify;

pub use checkpoint::{CheckpointError, CheckpointKey, TreeHead};
pub use entry::{Entry, NewEntry};
pub use tlog_tiles::Hash;
pub use tree::{Frontier, TreeError};
pub use verify::{LogVerifier, Problem, ProblemKind, Report};
