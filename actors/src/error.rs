//! The engine's error type: every way a request to a node can fail.

use crate::model::{FieldError, PathError, Version};
use crate::store::StoreError;

/// Why a node refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The path is not valid.
    #[error(transparent)]
    BadPath(#[from] PathError),
    /// An explicit time is malformed or too far in the future.
    #[error("{0}")]
    BadTime(String),
    /// A field of a write is out of bounds (too long, bad characters).
    #[error(transparent)]
    BadField(#[from] FieldError),
    /// A request another node refused as invalid (its reason).
    #[error("{0}")]
    Invalid(String),
    /// A resume cursor is malformed.
    #[error("cursor must look like \"<incarnation>:<seq>\"")]
    BadCursor,
    /// `If-Match` / `If-None-Match: *` did not hold.
    #[error("precondition failed: the current version is {}", .current.as_ref().map_or("none".to_string(), |v| v.to_string()))]
    PreconditionFailed {
        /// The version that stands (none if the path has no live value).
        current: Option<Version>,
    },
    /// A session asked for more subscriptions than allowed.
    #[error("at most {0} subscriptions per session")]
    TooManySubscriptions(usize),
    /// The node's configuration is not valid.
    #[error("{0}")]
    BadConfig(String),
    /// A partition index past the layout's count.
    #[error("no partition {part}: the layout has {partitions}")]
    NoPartition {
        /// The index asked for.
        part: u16,
        /// The layout's partition count.
        partitions: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too few owners acknowledged a write in time (it is stored where it
    /// was acked, and may still reach the others).
    #[error("acked by {acked} of {of} owners, {needed} needed")]
    Unavailable {
        /// Owners that acked (this node included).
        acked: usize,
        /// Owners the write needed.
        needed: usize,
        /// Owners in all.
        of: usize,
    },
    /// No owner of the path could be reached to answer a read.
    #[error("no owner of {0} is reachable")]
    NoOwner(String),
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The history asked for was compacted away: what `path` held before
    /// `oldest` is no longer known.
    #[error("the history of '{path}' before {oldest} ({}) was compacted: the oldest time still known is {oldest}", crate::model::format_moment(*.oldest))]
    Compacted {
        /// The path (or prefix).
        path: String,
        /// The oldest time still known (µs).
        oldest: u64,
    },
    /// A request that must read every path under a prefix from this
    /// node's own store, at a node that does not hold all of them.
    #[error("this node does not hold every partition under '{prefix}' (partition {part} is held by {owners}): send it to a node that does")]
    NotHeld {
        /// The prefix.
        prefix: String,
        /// A partition under it this node does not serve.
        part: u16,
        /// That partition's owners.
        owners: String,
    },
}
