//! [`NodeStats`]: the counters a node keeps for its metrics.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::engine::hub::HubStats;

/// Counters of a node, for metrics.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Fan-out counters.
    pub hub: Arc<HubStats>,
    /// Sessions currently open.
    pub sessions: AtomicU64,
    /// Writes that found their partition's mailbox full and waited for room
    /// (backpressure on writers).
    pub writes_waited: AtomicU64,
    /// A flush failed: writes are refused until a restart.
    pub store_failed: Arc<AtomicBool>,
    /// The last change-log seq known to be on disk: with `lazy` durability
    /// it trails the head by up to `--lazy-flush-ms`.
    pub durable_seq: Arc<AtomicU64>,
    /// History events compaction dropped.
    pub compacted: Arc<AtomicU64>,
    /// Compaction sweeps finished.
    pub compaction_sweeps: Arc<AtomicU64>,
}
