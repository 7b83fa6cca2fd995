//! Engine configuration: one struct with production defaults.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// When a write counts as durable (and is acknowledged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every group of writes is flushed to disk before any of them is acked;
    /// writes that arrive during a flush form the next group. Lowest latency.
    #[default]
    Flush,
    /// At most one fsync per `batch_interval`: a write after a quiet spell
    /// is flushed at once, under load writes gather until the interval since
    /// the last fsync is over, then are flushed once and acked together.
    /// Durable like `flush`, fewer fsyncs under load.
    Batch,
    /// Acked once applied in memory; the committer flushes every
    /// `lazy_flush_interval` after a write (even when no other follows), and
    /// sled's background flush runs at the same period. A crash may lose the
    /// last such interval (like Redis `appendfsync everysec`);
    /// `NodeStats::durable_seq` says how far the disk has the log.
    Lazy,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flush" => Ok(Durability::Flush),
            "batch" => Ok(Durability::Batch),
            "lazy" => Ok(Durability::Lazy),
            _ => Err(format!("unknown durability '{s}' (flush, batch or lazy)")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Flush => "flush",
            Durability::Batch => "batch",
            Durability::Lazy => "lazy",
        })
    }
}

/// Everything an embedded node needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sled directory (created if missing).
    pub data_dir: PathBuf,
    /// This node's id; generated and kept in the store when `None`.
    pub node_id: Option<String>,
    /// When writes are acked.
    pub durability: Durability,
    /// The least time between two fsyncs of `batch` durability.
    pub batch_interval: Duration,
    /// How often `lazy` durability flushes.
    pub lazy_flush_interval: Duration,
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// Partitions of a new store (an existing store keeps its own).
    pub partitions: u32,
    /// Leading path segments that pick the partition (a new store only).
    pub shard_depth: usize,
    /// Change-log entries kept for resuming streams; older ones are trimmed
    /// (history is kept regardless).
    pub log_retention: u64,
    /// A silent stream gets a ping after this long.
    pub ping_interval: Duration,
    /// Stream items one subscriber may have queued before it counts as lagging.
    pub subscriber_queue_items: usize,
    /// Bytes of values one subscriber may have queued before it counts as lagging.
    pub subscriber_queue_bytes: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions_per_session: usize,
    /// How far ahead of this node's wall clock an explicit write time may be.
    pub max_future_skew: Duration,
}

impl Config {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            node_id: None,
            durability: Durability::Flush,
            batch_interval: Duration::from_millis(2),
            lazy_flush_interval: Duration::from_millis(1000),
            cache_bytes: 256 << 20,
            partitions: 64,
            shard_depth: 2,
            log_retention: 1_000_000,
            ping_interval: Duration::from_secs(15),
            subscriber_queue_items: 1024,
            subscriber_queue_bytes: 8 << 20,
            max_subscriptions_per_session: 64,
            max_future_skew: Duration::from_secs(3600),
        }
    }
}
