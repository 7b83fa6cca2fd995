//! Prometheus metrics: requests by route and status, writes by outcome,
//! refusals by error code, subscribers, events fanned out, store size.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use spread_actors::{Node, NodeError, WriteReport, WriteStatus};

use crate::error::ErrorCode;
use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    dir: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

/// The metrics of one node's HTTP surface.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    writes: Family<StatusLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    subscribers: Gauge,
    fanned_out: Counter,
    lagged: Counter,
    writes_waited: Counter,
    store_bytes: Gauge,
    seq: Gauge,
    store_failed: Gauge,
    durable_seq: Gauge,
    merkle_unfolded: Gauge,
    peer_links: Gauge,
    peer_frames: Family<DirLabel, Counter>,
    peer_bytes: Family<DirLabel, Counter>,
    peer_links_opened: Counter,
    peer_links_refused: Counter,
    peer_links_overloaded: Counter,
    membership_changes: Counter,
    members: Family<StateLabel, Gauge>,
    replication_events: Family<DirLabel, Counter>,
    forwarded_writes: Family<DirLabel, Counter>,
    forwarded_reads: Counter,
    ae_sessions: Family<ResultLabel, Counter>,
    ae_running: Gauge,
    ae_partitions: Counter,
    ae_questions: Counter,
    ae_bytes: Family<DirLabel, Counter>,
    ae_events: Family<DirLabel, Counter>,
    ae_millis: Counter,
    ae_throttled: Counter,
    replication_streams: Family<RoleLabel, Gauge>,
    replication_lag: Gauge,
    merge_queue: Gauge,
    follower_overloads: Counter,
    peer_asks_busy: Counter,
    partition_lag: Family<PartitionLabel, Gauge>,
    /// The partitions `partition_lag` shows now.
    partitions_shown: Mutex<Vec<u16>>,
    compacted: Counter,
    compaction_sweeps: Counter,
    copy_idle_partitions: Gauge,
    copy_idle_bytes: Gauge,
    copy_handovers: Family<ResultLabel, Counter>,
    copy_dropped: Counter,
    copy_dropped_bytes: Counter,
    /// Last values copied from the node's own counters.
    copied: Mutex<[u64; COPIED]>,
}

/// Node counters copied into the registry at each render.
const COPIED: usize = 34;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spread");
        let requests = Family::<RequestLabels, Counter>::default();
        let writes = Family::<StatusLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let subscribers = Gauge::default();
        let fanned_out = Counter::default();
        let lagged = Counter::default();
        let writes_waited = Counter::default();
        let compacted = Counter::default();
        let compaction_sweeps = Counter::default();
        let store_bytes = Gauge::default();
        let seq = Gauge::default();
        let store_failed = Gauge::default();
        let durable_seq = Gauge::default();
        let merkle_unfolded = Gauge::default();
        let peer_links = Gauge::default();
        let peer_frames = Family::<DirLabel, Counter>::default();
        let peer_bytes = Family::<DirLabel, Counter>::default();
        let peer_links_opened = Counter::default();
        let peer_links_refused = Counter::default();
        let peer_links_overloaded = Counter::default();
        let membership_changes = Counter::default();
        let members = Family::<StateLabel, Gauge>::default();
        let replication_events = Family::<DirLabel, Counter>::default();
        let forwarded_writes = Family::<DirLabel, Counter>::default();
        let forwarded_reads = Counter::default();
        let ae_sessions = Family::<ResultLabel, Counter>::default();
        let ae_running = Gauge::default();
        let ae_partitions = Counter::default();
        let ae_questions = Counter::default();
        let ae_bytes = Family::<DirLabel, Counter>::default();
        let ae_events = Family::<DirLabel, Counter>::default();
        let ae_millis = Counter::default();
        let ae_throttled = Counter::default();
        let copy_idle_partitions = Gauge::default();
        let copy_idle_bytes = Gauge::default();
        let copy_handovers = Family::<ResultLabel, Counter>::default();
        let copy_dropped = Counter::default();
        let copy_dropped_bytes = Counter::default();
        registry.register(
            "copy_idle_partitions",
            "Partitions this node holds data of but neither owns nor watches",
            copy_idle_partitions.clone(),
        );
        registry.register(
            "copy_idle_bytes",
            "Bytes (keys and values) of the partitions held here that nobody needs, as last measured; bounded by --copy-cache-mb",
            copy_idle_bytes.clone(),
        );
        registry.register(
            "copy_handovers",
            "Partitions nobody needs here whose events were handed to an owner, by result (ok, failed)",
            copy_handovers.clone(),
        );
        registry.register(
            "copy_dropped_partitions",
            "Copies of partitions nobody needed here, dropped to keep within --copy-cache-mb",
            copy_dropped.clone(),
        );
        registry.register(
            "copy_dropped_bytes",
            "Bytes of the copies dropped",
            copy_dropped_bytes.clone(),
        );
        registry.register(
            "antientropy_sessions",
            "Anti-entropy sessions with a peer, by result (ok, failed)",
            ae_sessions.clone(),
        );
        registry.register(
            "antientropy_sessions_running",
            "Anti-entropy sessions running now",
            ae_running.clone(),
        );
        registry.register(
            "antientropy_partitions_walked",
            "Partitions whose merkle trees were walked (their roots differed)",
            ae_partitions.clone(),
        );
        registry.register(
            "antientropy_questions",
            "Questions anti-entropy asked peers (each one round trip)",
            ae_questions.clone(),
        );
        registry.register(
            "antientropy_bytes",
            "Bytes of tree items and events anti-entropy received (in) and events it sent (out)",
            ae_bytes.clone(),
        );
        registry.register(
            "antientropy_events",
            "Events anti-entropy merged here (in) and sent to peers (out)",
            ae_events.clone(),
        );
        registry.register(
            "antientropy_session_milliseconds",
            "Time spent in anti-entropy sessions",
            ae_millis.clone(),
        );
        registry.register(
            "antientropy_throttled_milliseconds",
            "Time anti-entropy sends and answers waited for --anti-entropy-mb-per-sec",
            ae_throttled.clone(),
        );
        registry.register(
            "forwarded_reads",
            "Reads of paths this node neither owns nor watches, sent to an owner (one per owner tried)",
            forwarded_reads.clone(),
        );
        let replication_streams = Family::<RoleLabel, Gauge>::default();
        let replication_lag = Gauge::default();
        let merge_queue = Gauge::default();
        let follower_overloads = Counter::default();
        let peer_asks_busy = Counter::default();
        let partition_lag = Family::<PartitionLabel, Gauge>::default();
        registry.register(
            "replication_merge_queue_bytes",
            "Bytes of frames received from peers and not merged yet: replication streams, watched values, anti-entropy events (past --peer-send-queue-bytes from one peer and of one kind, its link is closed)",
            merge_queue.clone(),
        );
        registry.register(
            "peer_asks_busy",
            "Clients' requests and answers over peer links (forwarded writes and reads, imports) that found no room in the link's queue in time, and forwarded writes past what an owner holds of one peer's at once: that client's request failed (503), the link and the others' requests carried on",
            peer_asks_busy.clone(),
        );
        registry.register(
            "replication_follower_overloads",
            "Links this node closed because a peer's frames (changes, watched values, anti-entropy events) came faster than it merged them",
            follower_overloads.clone(),
        );
        registry.register(
            "replication_events",
            "Events streamed to co-owners (out) and merged from them (in)",
            replication_events.clone(),
        );
        registry.register(
            "forwarded_writes",
            "Writes forwarded to an owner (out) and coordinated here for another node (in)",
            forwarded_writes.clone(),
        );
        registry.register(
            "replication_streams",
            "Partition streams served to co-owners and followed from them, and prefix watches asked of owners and served to watchers, by role",
            replication_streams.clone(),
        );
        registry.register(
            "replication_lag_entries",
            "The most change-log entries any served partition stream is behind this node's log (a live stream is not behind)",
            replication_lag.clone(),
        );
        registry.register(
            "replication_partition_lag_entries",
            "For each served partition a stream is behind in (catching up), the most change-log entries it is behind",
            partition_lag.clone(),
        );
        registry.register(
            "membership_changes",
            "Membership changes seen (a member up, dead or back)",
            membership_changes.clone(),
        );
        registry.register(
            "members",
            "Other members by state (alive, suspect, dead)",
            members.clone(),
        );
        registry.register("peer_links", "Peer links up", peer_links.clone());
        registry.register(
            "peer_frames",
            "Frames on peer links, by direction (in, out)",
            peer_frames.clone(),
        );
        registry.register(
            "peer_bytes",
            "Bytes of frames on peer links, by direction (in, out)",
            peer_bytes.clone(),
        );
        registry.register(
            "peer_links_opened",
            "Peer links that came up",
            peer_links_opened.clone(),
        );
        registry.register(
            "peer_links_refused",
            "Peer links closed for a reason (refused, garbage, silent, overloaded)",
            peer_links_refused.clone(),
        );
        registry.register(
            "peer_links_overloaded",
            "Peer links closed because the peer fell behind (its send queue was full)",
            peer_links_overloaded.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "writes",
            "Writes by outcome (new, existing, too_late, failed)",
            writes.clone(),
        );
        registry.register(
            "errors",
            "Error answers by error code (refusals included)",
            errors.clone(),
        );
        registry.register(
            "subscribers",
            "Stream sessions registered for fan-out",
            subscribers.clone(),
        );
        registry.register(
            "events_fanned_out",
            "Changes handed to subscribers",
            fanned_out.clone(),
        );
        registry.register(
            "subscribers_lagged",
            "Sessions closed because they read too slowly",
            lagged.clone(),
        );
        registry.register(
            "writes_backpressured",
            "Writes that waited for room in their partition's full queue",
            writes_waited.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes the store takes on disk",
            store_bytes.clone(),
        );
        registry.register("log_seq", "Last change-log seq published", seq.clone());
        registry.register(
            "log_seq_durable",
            "Last change-log seq known to be on disk (trails log_seq by up to --lazy-flush-ms with lazy durability)",
            durable_seq.clone(),
        );
        registry.register(
            "merkle_unfolded_entries",
            "Change-log entries committed and not yet folded into the merkle trees",
            merkle_unfolded.clone(),
        );
        registry.register(
            "history_compacted_events",
            "History events compaction dropped (--history-keep-*)",
            compacted.clone(),
        );
        registry.register(
            "compaction_sweeps",
            "Compaction sweeps over every partition finished",
            compaction_sweeps.clone(),
        );
        registry.register(
            "store_failed",
            "1 once a flush failed: writes are refused until the node restarts",
            store_failed.clone(),
        );
        Metrics {
            registry,
            requests,
            writes,
            errors,
            subscribers,
            fanned_out,
            lagged,
            writes_waited,
            store_bytes,
            seq,
            store_failed,
            durable_seq,
            merkle_unfolded,
            peer_links,
            peer_frames,
            peer_bytes,
            peer_links_opened,
            peer_links_refused,
            peer_links_overloaded,
            membership_changes,
            members,
            replication_events,
            forwarded_writes,
            forwarded_reads,
            ae_sessions,
            ae_running,
            ae_partitions,
            ae_questions,
            ae_bytes,
            ae_events,
            ae_millis,
            ae_throttled,
            replication_streams,
            replication_lag,
            merge_queue,
            follower_overloads,
            peer_asks_busy,
            partition_lag,
            partitions_shown: Mutex::default(),
            compacted,
            compaction_sweeps,
            copy_idle_partitions,
            copy_idle_bytes,
            copy_handovers,
            copy_dropped,
            copy_dropped_bytes,
            copied: Mutex::new([0; COPIED]),
        }
    }

    /// Counts the outcome of a write.
    pub fn count_write(&self, result: &Result<WriteReport, NodeError>) {
        let status = match result {
            Ok(r) => match r.status {
                WriteStatus::New => "new",
                WriteStatus::Existing => "existing",
                WriteStatus::TooLate => "too_late",
            },
            Err(NodeError::PreconditionFailed { .. }) => "precondition_failed",
            Err(_) => "failed",
        };
        self.writes.get_or_create(&StatusLabel { status }).inc();
    }

    /// Counts an error answered outside an HTTP response (e.g. a WebSocket
    /// closed for an oversized frame).
    pub fn count_error(&self, error: &'static str) {
        self.errors.get_or_create(&ErrorLabel { error }).inc();
    }

    /// The text exposition, with the node's gauges read now.
    pub fn render(&self, node: &Node) -> String {
        let stats = node.stats();
        self.subscribers
            .set(stats.hub.subscribers.load(Ordering::Relaxed) as i64);
        self.store_bytes.set(node.store_size() as i64);
        self.seq.set(node.head_seq() as i64);
        self.store_failed
            .set(i64::from(stats.store_failed.load(Ordering::Relaxed)));
        self.durable_seq
            .set(stats.durable_seq.load(Ordering::Relaxed) as i64);
        self.merkle_unfolded.set(node.merkle_unfolded() as i64);
        let links = node.cluster().map(|c| &c.links);
        self.peer_links.set(links.map_or(0, |l| l.count()) as i64);
        self.ae_running
            .set(node.cluster().map_or(0, |c| c.differs.running()) as i64);
        if let Some(cluster) = node.cluster() {
            let members = cluster.members();
            for state in ["alive", "suspect", "dead"] {
                let n = members.values().filter(|m| m.state == state).count();
                self.members
                    .get_or_create(&StateLabel { state })
                    .set(n as i64);
            }
            let stats = &cluster.links.stats;
            for (role, n) in [
                ("serving", &stats.streams_served),
                ("following", &stats.streams_followed),
                ("watching", &stats.watches_asked),
                ("watched", &stats.watches_served),
            ] {
                self.replication_streams
                    .get_or_create(&RoleLabel { role })
                    .set(n.load(Ordering::Relaxed) as i64);
            }
            self.replication_lag
                .set(stats.lag_max.load(Ordering::Relaxed) as i64);
            self.merge_queue
                .set(stats.merge_queue_bytes.load(Ordering::Relaxed) as i64);
            // Only the partitions behind now: one caught up since goes.
            // (Under one lock, and without clearing the family: a scrape
            // encoding meanwhile sees every partition still behind.)
            let behind = stats
                .partition_lag
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut shown = self
                .partitions_shown
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for gone in shown
                .iter()
                .filter(|p| !behind.iter().any(|(q, _)| q == *p))
            {
                self.partition_lag
                    .remove(&PartitionLabel { partition: *gone });
            }
            for (partition, lag) in &behind {
                self.partition_lag
                    .get_or_create(&PartitionLabel {
                        partition: *partition,
                    })
                    .set(*lag as i64);
            }
            *shown = behind.iter().map(|(p, _)| *p).collect();
            self.copy_idle_partitions
                .set(cluster.copies.idle_partitions.load(Ordering::Relaxed) as i64);
            self.copy_idle_bytes
                .set(cluster.copies.idle_bytes.load(Ordering::Relaxed) as i64);
        }
        if let Ok(mut copied) = self.copied.lock() {
            let peer =
                |f: fn(&spread_actors::cluster::LinkStats) -> &std::sync::atomic::AtomicU64| {
                    links.map_or(0, |l| f(&l.stats).load(Ordering::Relaxed))
                };
            let ae = |f: fn(
                &spread_actors::cluster::differ::DiffStats,
            ) -> &std::sync::atomic::AtomicU64| {
                node.cluster()
                    .map_or(0, |c| f(&c.differs.stats).load(Ordering::Relaxed))
            };
            let copy = |f: fn(
                &spread_actors::cluster::replicator::CopyStats,
            ) -> &std::sync::atomic::AtomicU64| {
                node.cluster()
                    .map_or(0, |c| f(&c.copies).load(Ordering::Relaxed))
            };
            let now: [u64; COPIED] = [
                stats.hub.fanned_out.load(Ordering::Relaxed),
                stats.hub.lagged.load(Ordering::Relaxed),
                stats.writes_waited.load(Ordering::Relaxed),
                peer(|s| &s.frames_in),
                peer(|s| &s.frames_out),
                peer(|s| &s.bytes_in),
                peer(|s| &s.bytes_out),
                peer(|s| &s.opened),
                peer(|s| &s.refused),
                peer(|s| &s.overloaded),
                peer(|s| &s.membership_changes),
                peer(|s| &s.events_sent),
                peer(|s| &s.events_merged),
                peer(|s| &s.writes_forwarded),
                peer(|s| &s.writes_coordinated_for_peers),
                peer(|s| &s.reads_forwarded),
                ae(|s| &s.sessions_ok),
                ae(|s| &s.sessions_failed),
                ae(|s| &s.partitions_walked),
                ae(|s| &s.questions),
                ae(|s| &s.bytes_in),
                ae(|s| &s.bytes_out),
                ae(|s| &s.events_received),
                ae(|s| &s.events_sent),
                ae(|s| &s.millis),
                ae(|s| &s.throttled_micros) / 1000,
                stats.compacted.load(Ordering::Relaxed),
                stats.compaction_sweeps.load(Ordering::Relaxed),
                copy(|s| &s.handed_over),
                copy(|s| &s.handovers_failed),
                copy(|s| &s.dropped),
                copy(|s| &s.dropped_bytes),
                peer(|s| &s.follower_overloads),
                peer(|s| &s.asks_busy),
            ];
            // Counters share their value with their clones. (Each lookup in
            // its own call: a family's read guard held over the next
            // lookup's insert would deadlock.)
            let dir = |family: &Family<DirLabel, Counter>, dir| {
                family.get_or_create(&DirLabel { dir }).clone()
            };
            let result = |family: &Family<ResultLabel, Counter>, result| {
                family.get_or_create(&ResultLabel { result }).clone()
            };
            let counters: [Counter; COPIED] = [
                self.fanned_out.clone(),
                self.lagged.clone(),
                self.writes_waited.clone(),
                dir(&self.peer_frames, "in"),
                dir(&self.peer_frames, "out"),
                dir(&self.peer_bytes, "in"),
                dir(&self.peer_bytes, "out"),
                self.peer_links_opened.clone(),
                self.peer_links_refused.clone(),
                self.peer_links_overloaded.clone(),
                self.membership_changes.clone(),
                dir(&self.replication_events, "out"),
                dir(&self.replication_events, "in"),
                dir(&self.forwarded_writes, "out"),
                dir(&self.forwarded_writes, "in"),
                self.forwarded_reads.clone(),
                result(&self.ae_sessions, "ok"),
                result(&self.ae_sessions, "failed"),
                self.ae_partitions.clone(),
                self.ae_questions.clone(),
                dir(&self.ae_bytes, "in"),
                dir(&self.ae_bytes, "out"),
                dir(&self.ae_events, "in"),
                dir(&self.ae_events, "out"),
                self.ae_millis.clone(),
                self.ae_throttled.clone(),
                self.compacted.clone(),
                self.compaction_sweeps.clone(),
                result(&self.copy_handovers, "ok"),
                result(&self.copy_handovers, "failed"),
                self.copy_dropped.clone(),
                self.copy_dropped_bytes.clone(),
                self.follower_overloads.clone(),
                self.peer_asks_busy.clone(),
            ];
            for ((counter, now), before) in counters.into_iter().zip(now).zip(copied.iter()) {
                counter.inc_by(now.saturating_sub(*before));
            }
            *copied = now;
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            log::error!("metrics encoding failed: {e}");
        }
        out
    }
}

fn route_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "raw" => "raw",
        "list" => "list",
        "history" => "history",
        "sse" => "sse",
        "wss" => "wss",
        "healthz" => "healthz",
        "metrics" => "metrics",
        "peer" => "peer",
        "cluster" => "cluster",
        "digest" => "digest",
        "repair" => "repair",
        _ => "other",
    }
}

fn method_of(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts every request and every error answer.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = route_of(req.path());
    let method = method_of(req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?;
    if let Some(state) = state {
        let m = &state.metrics;
        let status = res.status().as_u16();
        m.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        if let Some(code) = res.response().extensions().get::<ErrorCode>() {
            m.errors.get_or_create(&ErrorLabel { error: code.0 }).inc();
        }
    }
    Ok(res)
}
