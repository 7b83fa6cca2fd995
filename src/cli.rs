//! Command-line interface: `spread serve` and the client verbs. Every flag
//! also reads a `SPREAD_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spread_actors::config::defaults;
use spread_actors::Durability;

/// Spread: a persistent cache that streams the latest version of data.
#[derive(Parser, Debug)]
#[command(name = "spread", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: HTTP, SSE and WebSocket on --listen, data in --data.
    Serve(Box<ServeArgs>),
    /// Print the value at PATH (exit 1 if there is none).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The path, e.g. rooms/42/topic.
        path: String,
        /// Print the value the path had at this time (microseconds or RFC 3339).
        #[arg(long)]
        at: Option<String>,
    },
    /// Write VALUE (or standard input) at PATH; prints the write report.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        /// The path.
        path: String,
        /// The value; read from standard input when absent.
        value: Option<String>,
        /// Content type stored with the value.
        #[arg(long, short = 't')]
        content_type: Option<String>,
        /// Explicit event time in microseconds (LWW: the greatest wins).
        #[arg(long)]
        time: Option<u64>,
    },
    /// Delete PATH (a tombstone; history keeps the old values).
    Del {
        #[command(flatten)]
        client: ClientArgs,
        /// The path.
        path: String,
    },
    /// List the paths under PREFIX with their versions and sizes.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// The prefix (everything when absent).
        #[arg(default_value = "")]
        prefix: String,
        /// Print the raw JSON pages instead of a table.
        #[arg(long)]
        json: bool,
        /// List the paths as they stood at this time (microseconds or RFC 3339).
        #[arg(long)]
        at: Option<String>,
    },
    /// Stream PREFIX: the snapshot, `ready`, then every change, one JSON line each.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// The prefix (everything when absent).
        #[arg(default_value = "")]
        prefix: String,
        /// Resume after this cursor instead of starting with a snapshot.
        #[arg(long)]
        since: Option<String>,
        /// Play back every event since this time (microseconds or RFC 3339), in version
        /// order, instead of the snapshot; then go live.
        #[arg(long)]
        from: Option<String>,
        /// With --from: stop after the events up to this time.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Stop after this many events (ready and pings not counted).
        #[arg(long)]
        count: Option<usize>,
    },
    /// Print a signed JWT for trying auth: `spread serve --jwt-key KEY` accepts it.
    Token(TokenArgs),
    /// Print every event of PATH, oldest first, one JSON line each.
    History {
        #[command(flatten)]
        client: ClientArgs,
        /// The path.
        path: String,
    },
    /// Write, as new events, the value PATH had at a time or version (a delete if it had
    /// none); history is kept. Prints the write report (JSON).
    Rollback {
        #[command(flatten)]
        client: ClientArgs,
        /// The path (with --recursive, the prefix; "" is everything).
        path: String,
        /// The point to go back to: a version ("<time>.<node>", as an ETag names it), or a
        /// time (microseconds or RFC 3339).
        #[arg(long)]
        to: String,
        /// Roll back every path under PATH: paths created since are deleted.
        #[arg(long)]
        recursive: bool,
    },
    /// Write every event under PREFIX, history included, to standard output: one JSON
    /// object per line (or MessagePack records with --format msgpack).
    Export {
        #[command(flatten)]
        client: ClientArgs,
        /// The prefix (everything when absent).
        #[arg(default_value = "")]
        prefix: String,
        /// json or msgpack.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Merge the events of an export (a file, or - for standard input) into the node by
    /// the LWW rule: importing twice changes nothing. Every record is checked before any
    /// is sent; bad ones are listed with their line number and nothing is imported.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// The export file, or - for standard input.
        file: String,
        /// json or msgpack.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Print the cluster as the node sees it: its members and their state, and
    /// each partition's owners (JSON).
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare the node's merkle trees under PREFIX (default: everything it
    /// holds) with the other owners' now and exchange what either side
    /// lacks; print what each session did (JSON).
    Repair {
        #[command(flatten)]
        client: ClientArgs,
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// Where the client verbs talk to.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of a node.
    #[arg(long, env = "SPREAD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token sent with every request.
    #[arg(long, env = "SPREAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `spread token` settings.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// HMAC secret (HS256), or the path of a PEM private key (RSA: RS256, EC: ES256).
    #[arg(long, env = "SPREAD_JWT_KEY", hide_env_values = true)]
    pub key: String,
    /// Subject: recorded as the author of this token's writes.
    #[arg(long)]
    pub sub: String,
    /// Issuer (must match the node's --jwt-iss when that is set).
    #[arg(long)]
    pub iss: Option<String>,
    /// A prefix the token may read (repeat for more; "" or "/" is everything).
    /// Without --read and --write the token may read and write everything.
    #[arg(long)]
    pub read: Vec<String>,
    /// A prefix the token may write (repeat for more).
    #[arg(long)]
    pub write: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

/// `spread serve` settings.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, env = "SPREAD_LISTEN", default_value = defaults::LISTEN)]
    pub listen: String,
    /// Data directory (a sled database; created if missing).
    #[arg(long, env = "SPREAD_DATA", default_value = defaults::DATA_DIR)]
    pub data: PathBuf,
    /// This node's id ([A-Za-z0-9_-]{1,64}); generated and kept in the store when absent.
    #[arg(long, env = "SPREAD_NODE_ID")]
    pub node_id: Option<String>,
    /// When writes are acknowledged: `flush` (fsync each group of writes before acking),
    /// `batch` (at most one fsync per --batch-interval-ms; writes gather meanwhile) or
    /// `lazy` (ack when applied; fsync every --lazy-flush-ms; a crash may lose that window).
    #[arg(long, env = "SPREAD_DURABILITY", default_value = defaults::DURABILITY)]
    pub durability: Durability,
    /// Least time between two fsyncs of `batch` durability.
    #[arg(long, env = "SPREAD_BATCH_INTERVAL_MS", default_value_t = defaults::BATCH_INTERVAL_MS)]
    pub batch_interval_ms: u64,
    /// How often `lazy` durability fsyncs.
    #[arg(long, env = "SPREAD_LAZY_FLUSH_MS", default_value_t = defaults::LAZY_FLUSH_MS)]
    pub lazy_flush_ms: u64,
    /// sled page cache in MiB. Values are not all kept in RAM, but sled may hold more than
    /// this (see Known limits in the README).
    #[arg(long, env = "SPREAD_CACHE_MB", default_value_t = defaults::CACHE_MB)]
    pub cache_mb: u64,
    /// Partitions of a new store (fixed once created).
    #[arg(long, env = "SPREAD_PARTITIONS", default_value_t = defaults::PARTITIONS)]
    pub partitions: u32,
    /// Leading path segments that choose a path's partition (fixed once created).
    #[arg(long, env = "SPREAD_SHARD_DEPTH", default_value_t = defaults::SHARD_DEPTH)]
    pub shard_depth: usize,
    /// Change-log entries kept for resuming streams (history is kept regardless).
    #[arg(long, env = "SPREAD_LOG_RETENTION", default_value_t = defaults::LOG_RETENTION)]
    pub log_retention: u64,
    /// Keep the newest this many events of each path's history (at least 1; default: all).
    #[arg(long, env = "SPREAD_HISTORY_KEEP_VERSIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub history_keep_versions: Option<u64>,
    /// Keep the last this many days of history, and the value each path had when the
    /// window starts (at least 1; default: all). Reads before what is kept answer 410.
    #[arg(long, env = "SPREAD_HISTORY_KEEP_DAYS", value_parser = clap::value_parser!(u64).range(1..))]
    pub history_keep_days: Option<u64>,
    /// Milliseconds between two compaction sweeps (with --history-keep-*).
    #[arg(long, env = "SPREAD_COMPACTION_INTERVAL_MS", default_value_t = defaults::COMPACTION_INTERVAL_MS)]
    pub compaction_interval_ms: u64,
    /// A silent stream gets a ping after this many milliseconds.
    #[arg(long, env = "SPREAD_PING_INTERVAL_MS", default_value_t = defaults::PING_INTERVAL_MS)]
    pub ping_interval_ms: u64,
    /// Largest write body in bytes (bigger: 413 too_large).
    #[arg(long, env = "SPREAD_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest WebSocket frame in bytes a client may send (bigger: close 1009).
    #[arg(long, env = "SPREAD_WS_MAX_FRAME_BYTES", default_value_t = defaults::WS_MAX_FRAME_BYTES)]
    pub ws_max_frame_bytes: usize,
    /// `set` / `delete` ops one WebSocket session may have in flight; further ones are
    /// answered at once with a `too_many_requests` error frame (the socket stays open).
    #[arg(long, env = "SPREAD_WS_MAX_WRITES_IN_FLIGHT", default_value_t = defaults::WS_MAX_WRITES_IN_FLIGHT)]
    pub ws_max_writes_in_flight: usize,
    /// Stream items a subscriber may have queued before it counts as lagging.
    #[arg(long, env = "SPREAD_SUBSCRIBER_QUEUE_ITEMS", default_value_t = defaults::SUBSCRIBER_QUEUE_ITEMS)]
    pub subscriber_queue_items: usize,
    /// Bytes of values a subscriber may have queued before it counts as lagging.
    #[arg(long, env = "SPREAD_SUBSCRIBER_QUEUE_BYTES", default_value_t = defaults::SUBSCRIBER_QUEUE_BYTES)]
    pub subscriber_queue_bytes: usize,
    /// Subscriptions one WebSocket session may hold.
    #[arg(long, env = "SPREAD_MAX_SUBSCRIPTIONS", default_value_t = defaults::MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// How far (seconds) an explicit write time may be ahead of this node's clock.
    #[arg(long, env = "SPREAD_MAX_FUTURE_SKEW_SECS", default_value_t = defaults::MAX_FUTURE_SKEW_SECS)]
    pub max_future_skew_secs: u64,
    /// Require JWTs: an HMAC secret (HS256/384/512), or the path of a PEM public key
    /// file (RSA: RS256/384/512, EC: ES256/384). Without it the node is open.
    #[arg(long, env = "SPREAD_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Required `iss` claim of tokens.
    #[arg(long, env = "SPREAD_JWT_ISS")]
    pub jwt_iss: Option<String>,
    /// Seconds of clock skew allowed when checking `exp` and `nbf`.
    #[arg(long, env = "SPREAD_JWT_LEEWAY_SECS", default_value_t = defaults::JWT_LEEWAY_SECS)]
    pub jwt_leeway_secs: u64,
    /// An origin browsers may call the API from (repeat, or comma-separate; `*` for any).
    /// None by default.
    #[arg(long, env = "SPREAD_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1) on --listen. Needs --tls-key.
    #[arg(long, env = "SPREAD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SPREAD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also serve plain HTTP on this address (only useful with TLS; e.g. behind a proxy).
    #[arg(long, env = "SPREAD_LISTEN_PLAIN")]
    pub listen_plain: Option<String>,
    /// SSE and WebSocket streams served at once; beyond it new ones get 503 too_many_streams.
    #[arg(long, env = "SPREAD_MAX_STREAMS", default_value_t = defaults::MAX_STREAMS)]
    pub max_streams: usize,
    /// Kernel send buffer of each SSE and WebSocket socket, in bytes (0: the kernel's
    /// autotuning, up to 4 MiB): bounds what a client that stops reading holds before it is cut.
    #[arg(long, env = "SPREAD_STREAM_SEND_BUFFER_BYTES", default_value_t = defaults::STREAM_SEND_BUFFER_BYTES)]
    pub stream_send_buffer_bytes: usize,
    /// Connections served at once; requests on further ones get 503 too_many_connections.
    #[arg(long, env = "SPREAD_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's head, and then its body (408 after).
    #[arg(long, env = "SPREAD_REQUEST_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "SPREAD_WORKERS")]
    pub workers: Option<usize>,
    /// The cluster secret every node proves it knows (by challenge and MAC; it is never
    /// sent), at least 16 bytes. Without it the node is a single node: it joins no one and
    /// accepts no peers.
    #[arg(long, env = "SPREAD_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The cluster's id: nodes of another cluster are refused.
    #[arg(long, env = "SPREAD_CLUSTER_ID", default_value = defaults::CLUSTER_ID)]
    pub cluster_id: String,
    /// Nodes to link with at start (`host:port`, repeat or comma-separate; any member will
    /// do). Needs --cluster-secret.
    #[arg(long, env = "SPREAD_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// PEM certificates to trust when dialing peers over TLS (`--join https://host:port`):
    /// the cluster's CA, or the peers' own certificates.
    #[arg(long, env = "SPREAD_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// The `host:port` other nodes reach this one at (default: the bound --listen address).
    #[arg(long, env = "SPREAD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Owners of each partition: the top ones by rendezvous hashing over the live members
    /// (capped by their number).
    #[arg(long, env = "SPREAD_REPLICATION", default_value_t = defaults::REPLICATION)]
    pub replication: usize,
    /// A quiet peer link sends a heartbeat this often (ms).
    #[arg(long, env = "SPREAD_PEER_HEARTBEAT_MS", default_value_t = defaults::PEER_HEARTBEAT_MS)]
    pub peer_heartbeat_ms: u64,
    /// A peer link silent this long (ms) is closed and redialed.
    #[arg(long, env = "SPREAD_PEER_TIMEOUT_MS", default_value_t = defaults::PEER_TIMEOUT_MS)]
    pub peer_timeout_ms: u64,
    /// How long a write waits (ms) for the owners its `?w=` needs before answering 503.
    #[arg(long, env = "SPREAD_ACK_TIMEOUT_MS", default_value_t = defaults::ACK_TIMEOUT_MS)]
    pub ack_timeout_ms: u64,
    /// Bytes that may wait to be sent on one peer link; a peer that falls
    /// further behind is disconnected and resumes from its cursors.
    #[arg(long, env = "SPREAD_PEER_SEND_QUEUE_BYTES", default_value_t = defaults::PEER_SEND_QUEUE_BYTES)]
    pub peer_send_queue_bytes: usize,
    /// Seconds between two anti-entropy sweeps with each co-owner (jittered by ±20%; 0: only
    /// when a link comes up and on `spread repair`).
    #[arg(long, env = "SPREAD_ANTI_ENTROPY_INTERVAL", default_value_t = defaults::ANTI_ENTROPY_INTERVAL_SECS)]
    pub anti_entropy_interval: u64,
    /// MiB of events a second anti-entropy may send and answer with, all sessions together
    /// (0: no limit); writes and the live streams never wait for it.
    #[arg(long, env = "SPREAD_ANTI_ENTROPY_MB_PER_SEC", default_value_t = defaults::ANTI_ENTROPY_MB_PER_SEC)]
    pub anti_entropy_mb_per_sec: u64,
    /// MiB the copies of partitions this node neither owns nor watches may take (keys and
    /// values); past it, those unneeded longest are dropped, after their events are handed
    /// to an owner (0: none is kept).
    #[arg(long, env = "SPREAD_COPY_CACHE_MB", default_value_t = defaults::COPY_CACHE_MB)]
    pub copy_cache_mb: u64,
    /// Serve `PUT /cluster/faults` to cut this node's links to chosen nodes: for fault tests
    /// only (whoever reaches it can partition the node).
    #[arg(long, hide = true)]
    pub fault_injection: bool,
}
