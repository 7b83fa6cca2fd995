//! What a read of many entries asks for and gets back: a [`HistoryRange`],
//! a [`Listing`] page, a [`PrefixDigest`].

use crate::merkle::Fingerprint;
use crate::store::Stored;

/// A time range of history: `from <= time <= to`, at most `limit` events.
#[derive(Clone, Copy, Debug)]
pub struct HistoryRange {
    /// Earliest time (µs), inclusive.
    pub from: u64,
    /// Latest time (µs), inclusive.
    pub to: u64,
    /// Most events returned.
    pub limit: usize,
}

impl Default for HistoryRange {
    fn default() -> Self {
        HistoryRange {
            from: 0,
            to: u64::MAX,
            limit: 1000,
        }
    }
}

/// Entries a listing may read past its limit (tombstones, expired values)
/// before it answers with what it found and where to go on.
pub const LIST_SCAN_SLACK: usize = 10_000;

/// A page of [`Node::list`](crate::Node::list).
#[derive(Clone, Debug)]
pub struct Listing {
    /// Live values, in path order.
    pub entries: Vec<Stored>,
    /// The path after which the next page starts; `None` when there is no
    /// more.
    pub next: Option<String>,
}

/// Children (at every depth) a [`PrefixDigest`] lists at most.
pub const DIGEST_MAX_CHILDREN: usize = 10_000;

/// The merkle digest of everything under a prefix (see
/// [`Node::digest`](crate::Node::digest)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixDigest {
    /// The prefix.
    pub prefix: String,
    /// Every event at or below it, history included.
    pub fingerprint: Fingerprint,
    /// Its children's digests, in order, as deep as asked (empty when not
    /// asked).
    pub children: Vec<PrefixDigest>,
    /// More children than [`DIGEST_MAX_CHILDREN`] in all: the lists stop
    /// there.
    pub truncated: bool,
}
