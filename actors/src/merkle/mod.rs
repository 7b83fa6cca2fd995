//! Anti-entropy's data structure: a merkle tree per partition over the
//! partition's event set (one item per event: path, version, content
//! digest, so histories converge, not only latest values).
//!
//! - [`fingerprint`]: the hash of a set of events, a sum that events are
//!   added to (and taken from) in place.
//! - [`tree`]: a node per path prefix, persistent in the store beside the
//!   data; folded from the partition's change log in the background
//!   ([`maintain`]), never rebuilt per write.
//! - [`diff`]: comparing two trees by descending only where they differ.

pub mod diff;
pub mod fingerprint;
pub mod maintain;
pub mod tree;

pub use diff::{diff, diff_wanting, NamesPage, Side, Walk, Want};
pub use fingerprint::Fingerprint;
pub use tree::{Node, NodeStore, Tree};

#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod tests;
