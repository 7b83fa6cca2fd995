//! Engine configuration: one struct, and [`defaults`], the one place every
//! default of a node is set (the engine's, the HTTP layer's and the command
//! line's flags all take them from here).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Every default setting of a node, with its unit in its name.
pub mod defaults {
    /// `--listen`.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `--data`.
    pub const DATA_DIR: &str = "./spread-data";
    /// `--durability`.
    pub const DURABILITY: &str = "flush";
    /// `--batch-interval-ms`.
    pub const BATCH_INTERVAL_MS: u64 = 2;
    /// `--lazy-flush-ms`.
    pub const LAZY_FLUSH_MS: u64 = 1000;
    /// `--cache-mb`.
    pub const CACHE_MB: u64 = 256;
    /// `--partitions` (a new store).
    pub const PARTITIONS: u32 = 64;
    /// `--shard-depth` (a new store).
    pub const SHARD_DEPTH: usize = 2;
    /// `--log-retention`, in change-log entries.
    pub const LOG_RETENTION: u64 = 1_000_000;
    /// Time between two compaction sweeps, when a retention is set (ms).
    pub const COMPACTION_INTERVAL_MS: u64 = 60_000;
    /// `--ping-interval-ms`.
    pub const PING_INTERVAL_MS: u64 = 15_000;
    /// `--subscriber-queue-items`.
    pub const SUBSCRIBER_QUEUE_ITEMS: usize = 1024;
    /// `--subscriber-queue-bytes`.
    pub const SUBSCRIBER_QUEUE_BYTES: usize = 8 << 20;
    /// `--max-subscriptions`, per session.
    pub const MAX_SUBSCRIPTIONS: usize = 64;
    /// `--max-future-skew-secs`.
    pub const MAX_FUTURE_SKEW_SECS: u64 = 3600;
    /// `--max-body-bytes`.
    pub const MAX_BODY_BYTES: usize = 16 << 20;
    /// `--ws-max-frame-bytes`.
    pub const WS_MAX_FRAME_BYTES: usize = 16 << 20;
    /// `--ws-max-writes-in-flight`, per WebSocket session.
    pub const WS_MAX_WRITES_IN_FLIGHT: usize = 64;
    /// `--max-streams`, per node.
    pub const MAX_STREAMS: usize = 50_000;
    /// `--stream-send-buffer-bytes`, per stream socket.
    pub const STREAM_SEND_BUFFER_BYTES: usize = 64 << 10;
    /// `--max-connections`, per node.
    pub const MAX_CONNECTIONS: usize = 100_000;
    /// `--request-timeout-ms`.
    pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
    /// How long a stop waits for open requests.
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
    /// `--jwt-leeway-secs`.
    pub const JWT_LEEWAY_SECS: u64 = 30;
    /// `--cluster-id`.
    pub const CLUSTER_ID: &str = "spread";
    /// `--replication`: owners per partition.
    pub const REPLICATION: usize = 3;
    /// Least bytes of a `--cluster-secret`.
    pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;
    /// `--peer-heartbeat-ms`: a quiet peer link sends a heartbeat this often.
    pub const PEER_HEARTBEAT_MS: u64 = 1000;
    /// `--peer-timeout-ms`: a peer link silent this long is closed.
    pub const PEER_TIMEOUT_MS: u64 = 5000;
    /// First delay before redialing a peer; it doubles per failed attempt.
    pub const PEER_REDIAL_MIN_MS: u64 = 100;
    /// Longest delay between attempts to dial a peer.
    pub const PEER_REDIAL_MAX_MS: u64 = 5000;
    /// How long a write waits for other owners' acknowledgements (ms).
    pub const ACK_TIMEOUT_MS: u64 = 5000;
    /// `--peer-send-queue-bytes`: what may wait to be sent on one peer
    /// link before the link is closed as overloaded.
    pub const PEER_SEND_QUEUE_BYTES: usize = 64 << 20;
    /// Seconds between two anti-entropy sweeps with a co-owner (jittered).
    pub const ANTI_ENTROPY_INTERVAL_SECS: u64 = 300;
    /// MiB of events a second anti-entropy may send and answer with.
    pub const ANTI_ENTROPY_MB_PER_SEC: u64 = 32;
    /// MiB that copies nobody needs here may take before they are dropped.
    pub const COPY_CACHE_MB: u64 = 512;
}

/// Least `--peer-send-queue-bytes`: room for the largest frames a link
/// sends of its own (a `Follow` naming every partition) and a few events.
pub const MIN_SEND_QUEUE_BYTES: usize = 1 << 20;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's id: nodes of other clusters are refused.
    pub id: String,
    /// The shared secret each node proves it knows (never sent).
    pub secret: String,
    /// Where other nodes reach this one (`host:port`).
    pub address: String,
    /// Nodes to dial at start (`host:port`); any member will do.
    pub join: Vec<String>,
    /// A quiet link sends a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A link silent this long (or without a handshake) is closed.
    pub peer_dead_after: Duration,
    /// Owners per partition (capped by the live members).
    pub replication: usize,
    /// How long a write waits for the owners its `w` needs.
    pub ack_timeout: Duration,
    /// Bytes that may wait to be sent on one peer link; past that the
    /// link is closed as overloaded (and resumes when redialed).
    pub send_queue_bytes: usize,
    /// How often (about: jittered by ±20%) this node compares its merkle
    /// trees with each co-owner's; zero: only when a link comes up and on
    /// demand.
    pub anti_entropy_interval: Duration,
    /// Bytes of events a second anti-entropy sessions may send and answer
    /// with, all sessions of the node together (0: no limit).
    pub anti_entropy_rate: u64,
    /// Bytes (keys and values) the copies of partitions this node neither
    /// owns nor watches may take; past it, the longest unneeded are
    /// handed over and dropped (0: none is kept).
    pub copy_cache_bytes: u64,
    /// Serve `PUT /cluster/faults`, which cuts links to chosen nodes (for
    /// fault tests only: anyone who can reach it can partition the node).
    pub fault_injection: bool,
}

impl ClusterConfig {
    /// Defaults for a node reached at `address` that knows `secret`.
    pub fn new(secret: impl Into<String>, address: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            id: defaults::CLUSTER_ID.to_string(),
            secret: secret.into(),
            address: address.into(),
            join: Vec::new(),
            heartbeat_interval: Duration::from_millis(defaults::PEER_HEARTBEAT_MS),
            peer_dead_after: Duration::from_millis(defaults::PEER_TIMEOUT_MS),
            replication: defaults::REPLICATION,
            ack_timeout: Duration::from_millis(defaults::ACK_TIMEOUT_MS),
            send_queue_bytes: defaults::PEER_SEND_QUEUE_BYTES,
            anti_entropy_interval: Duration::from_secs(defaults::ANTI_ENTROPY_INTERVAL_SECS),
            anti_entropy_rate: defaults::ANTI_ENTROPY_MB_PER_SEC << 20,
            copy_cache_bytes: defaults::COPY_CACHE_MB << 20,
            fault_injection: false,
        }
    }

    /// Why this configuration cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.secret.len() < defaults::MIN_CLUSTER_SECRET_BYTES {
            return Err(format!(
                "--cluster-secret must be at least {} bytes",
                defaults::MIN_CLUSTER_SECRET_BYTES
            ));
        }
        if self.id.is_empty() || self.id.len() > 128 || self.id.chars().any(char::is_control) {
            return Err("--cluster-id must be 1 to 128 characters, none a control".into());
        }
        if self.replication == 0 {
            return Err("--replication must be at least 1".into());
        }
        // A link's own frames (a `Follow` of every partition) must fit.
        if self.send_queue_bytes < MIN_SEND_QUEUE_BYTES {
            return Err(format!(
                "--peer-send-queue-bytes must be at least {MIN_SEND_QUEUE_BYTES}"
            ));
        }
        if self.peer_dead_after < self.heartbeat_interval * 3 {
            return Err("the peer timeout must be at least 3 times the heartbeat interval".into());
        }
        Ok(())
    }
}

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
    /// (history is kept by `history_keep_*`).
    pub log_retention: u64,
    /// Keep the newest this many events of each path's history (`None`:
    /// every one). At least 1: the latest value always stays.
    pub history_keep_versions: Option<usize>,
    /// Keep the history of the last this many days (and the value each path
    /// had when the window starts); `None`: all of it.
    pub history_keep_days: Option<u64>,
    /// Time between two compaction sweeps (when a `history_keep_*` is set).
    pub compaction_interval: Duration,
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
    /// Cluster membership (`None`: a single node, which accepts no peers).
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            node_id: None,
            durability: Durability::Flush,
            batch_interval: Duration::from_millis(defaults::BATCH_INTERVAL_MS),
            lazy_flush_interval: Duration::from_millis(defaults::LAZY_FLUSH_MS),
            cache_bytes: defaults::CACHE_MB << 20,
            partitions: defaults::PARTITIONS,
            shard_depth: defaults::SHARD_DEPTH,
            log_retention: defaults::LOG_RETENTION,
            history_keep_versions: None,
            history_keep_days: None,
            compaction_interval: Duration::from_millis(defaults::COMPACTION_INTERVAL_MS),
            ping_interval: Duration::from_millis(defaults::PING_INTERVAL_MS),
            subscriber_queue_items: defaults::SUBSCRIBER_QUEUE_ITEMS,
            subscriber_queue_bytes: defaults::SUBSCRIBER_QUEUE_BYTES,
            max_subscriptions_per_session: defaults::MAX_SUBSCRIPTIONS,
            max_future_skew: Duration::from_secs(defaults::MAX_FUTURE_SKEW_SECS),
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_config_that_cannot_work_says_why() {
        let ok = ClusterConfig::new("a-secret-of-sixteen-bytes", "h:1");
        assert_eq!(ok.check(), Ok(()));
        let short = ClusterConfig::new("short", "h:1");
        assert!(short.check().unwrap_err().contains("at least 16 bytes"));
        let id = ClusterConfig {
            id: "bad\nid".into(),
            ..ok.clone()
        };
        assert!(id.check().unwrap_err().contains("--cluster-id"));
        let none = ClusterConfig {
            replication: 0,
            ..ok.clone()
        };
        assert!(none.check().unwrap_err().contains("--replication"));
        let flappy = ClusterConfig {
            heartbeat_interval: Duration::from_millis(1000),
            peer_dead_after: Duration::from_millis(2000),
            ..ok.clone()
        };
        assert!(flappy.check().unwrap_err().contains("3 times"));
        let tiny_queue = ClusterConfig {
            send_queue_bytes: MIN_SEND_QUEUE_BYTES - 1,
            ..ok
        };
        assert!(tiny_queue
            .check()
            .unwrap_err()
            .contains("--peer-send-queue-bytes"));
    }
}
