//! `Node`: an embedded Spread node — the library API, and what the HTTP
//! layer drives.
//!
//! `Node::open` opens the store, restores the clock and the log head, and
//! starts the engine on its own threads: an actix system holding the hub, the
//! partitions and the session actors, plus the committer thread. A `Node` is
//! cheap to clone and can be used from any thread or async runtime; the
//! engine stops when the last clone is dropped (or on [`Node::shutdown`]),
//! after making every acknowledged write durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::committer::Committer;
use crate::config::{Config, Durability};
use crate::error::NodeError;
use crate::hub::{Hub, HubStats};
use crate::model::{limits, version::wall_micros, Clock, FieldError, NodeId, Path};
use crate::partition::{Apply, Inbox, Partition, Write, WriteReport};
use crate::store::{SledStore, Store, StoreError, Stored};
use crate::subscriber::{Outbox, SessionContext, SessionStream, Subscribe, Subscriber};

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
}

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

/// A page of [`Node::list`].
#[derive(Clone, Debug)]
pub struct Listing {
    /// Live values, in path order.
    pub entries: Vec<Stored>,
    /// The path after which the next page starts; `None` when there is no
    /// more.
    pub next: Option<String>,
}

/// An open session: its actor and the stream of what it sends.
pub struct Session {
    /// The session actor (send it `Subscribe` / `Unsubscribe`).
    pub actor: Addr<Subscriber>,
    /// What it streams; dropping this ends the session.
    pub stream: SessionStream,
}

struct Engine {
    system: System,
    thread: Option<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl Engine {
    fn stop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The partitions held the committer's senders: it drains and flushes.
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        if let Err(e) = self
            .store
            .set_meta("clean", b"1")
            .and_then(|()| self.store.flush())
        {
            log::error!("final flush failed: {e}");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<Clock>,
    node_id: NodeId,
    incarnation: Arc<str>,
    shard_depth: usize,
    partitions: Vec<Inbox>,
    sessions: ArbiterHandle,
    session_ctx: Arc<SessionContext>,
    next_session: AtomicU64,
    stats: Arc<NodeStats>,
    config: Config,
    engine: Mutex<Option<Engine>>,
}

/// An embedded Spread node.
///
/// ```
/// # async fn demo() -> Result<(), spread_actors::NodeError> {
/// use futures_util::StreamExt;
/// use spread_actors::{Config, Node, StreamItem};
///
/// let dir = tempfile::tempdir().unwrap();
/// let node = Node::open(Config::new(dir.path()))?;
/// let report = node.set("rooms/42/topic", "hello").await?;
/// assert_eq!(report.seq, Some(1));
/// let stored = node.get("rooms/42/topic")?.expect("just written");
/// assert_eq!(stored.event.value.as_deref(), Some(&b"hello"[..]));
///
/// let mut sub = node.subscribe("rooms/42", None)?;
/// assert!(matches!(sub.next().await, Some(StreamItem::Snapshot(_))));
/// assert!(matches!(sub.next().await, Some(StreamItem::Ready { .. })));
/// node.delete("rooms/42/topic").await?;
/// match sub.next().await {
///     Some(StreamItem::Update(change)) => assert!(change.event.is_deleted()),
///     other => panic!("expected the delete, got {other:?}"),
/// }
/// assert_eq!(node.history("rooms/42/topic", Default::default())?.len(), 2);
/// # Ok(()) }
/// # actix::System::new().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// Refuses a write whose fields the store could not hold, before it joins
/// a batch with other clients' writes.
fn check_fields(write: &Write) -> Result<(), FieldError> {
    if let Some(ct) = &write.content_type {
        limits::check_content_type(ct)?;
    }
    if let Some(author) = &write.author {
        limits::check_author(author)?;
    }
    if let Some(value) = &write.value {
        limits::check_value(value)?;
    }
    if let Some(ttl) = write.ttl_secs {
        limits::check_ttl(ttl)?;
    }
    Ok(())
}

fn meta_u64(store: &dyn Store, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(store
        .meta(name)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes))
}

fn meta_text(store: &dyn Store, name: &str) -> Result<Option<String>, StoreError> {
    Ok(store.meta(name)?.and_then(|v| String::from_utf8(v).ok()))
}

impl Node {
    /// Opens the store in `config.data_dir` (creating it) and starts the node.
    pub fn open(config: Config) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            NodeError::Store(StoreError::Failed(format!(
                "{}: {e}",
                config.data_dir.display()
            )))
        })?;
        // With `lazy`, sled's background flush runs at the configured period
        // too (the committer's own flush also does; sled's alone would flush
        // every 500 ms whatever the setting).
        let flush_every = match config.durability {
            Durability::Lazy => config.lazy_flush_interval,
            Durability::Flush | Durability::Batch => crate::store::SLED_FLUSH_EVERY,
        };
        let store: Arc<dyn Store> = Arc::new(SledStore::open_flushing_every(
            &config.data_dir,
            config.cache_bytes,
            flush_every,
        )?);
        Node::start(config, store)
    }

    /// Starts a node on an opened store (tests hand in a store that fails
    /// on demand).
    pub(crate) fn start(config: Config, store: Arc<dyn Store>) -> Result<Node, NodeError> {
        // Identity and layout, fixed when the store is created.
        let stored_id = meta_text(&*store, "node_id")?;
        let node_id = match (&config.node_id, &stored_id) {
            (Some(id), _) => {
                NodeId::new(id).map_err(|e| NodeError::BadConfig(format!("node id: {e}")))?
            }
            (None, Some(id)) => NodeId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            (None, None) => NodeId::random(),
        };
        if stored_id.as_deref() != Some(node_id.as_str()) {
            if let Some(old) = &stored_id {
                log::warn!("node id changes from '{old}' to '{node_id}'");
            }
            store.set_meta("node_id", node_id.as_str().as_bytes())?;
        }
        let previous_durability = meta_text(&*store, "durability")?;
        let clean = store.meta("clean")?.is_some();
        let mut incarnation = meta_text(&*store, "incarnation")?;
        if previous_durability.as_deref() == Some("lazy") && !clean {
            // A lazy node that crashed may have streamed changes it then lost,
            // so its seqs may be reused: old cursors must not resume here.
            log::warn!("unclean stop with lazy durability: starting a new log incarnation");
            incarnation = None;
        }
        let incarnation = match incarnation {
            Some(i) => i,
            None => {
                let i = format!("{:016x}", rand::random::<u64>());
                store.set_meta("incarnation", i.as_bytes())?;
                i
            }
        };
        let partitions = match meta_u64(&*store, "partitions")? {
            Some(p) => p as u32,
            None => {
                let p = config.partitions.max(1);
                store.set_meta("partitions", &u64::from(p).to_be_bytes())?;
                p
            }
        };
        let shard_depth = match meta_u64(&*store, "shard_depth")? {
            Some(d) => d as usize,
            None => {
                let d = config.shard_depth.max(1);
                store.set_meta("shard_depth", &(d as u64).to_be_bytes())?;
                d
            }
        };
        store.set_meta("durability", config.durability.to_string().as_bytes())?;
        // Marked clean again only by an orderly stop.
        store.remove_meta("clean")?;
        store.flush()?;

        let log_head = store.log_head()?;
        let head = log_head.seq;
        let clock = Arc::new(Clock::starting_after(log_head.clock));
        let log_first = store.log_first()?.unwrap_or(head + 1);
        let stats = Arc::new(NodeStats::default());
        // Opening flushed the store: all of it is on disk.
        stats.durable_seq.store(head, Ordering::Relaxed);

        // The engine: an actix system on its own thread.
        let (commit_tx, commit_rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let tick = (config.ping_interval / 3).max(std::time::Duration::from_millis(10));
        let hub_stats = stats.hub.clone();
        let engine_store = store.clone();
        let engine_clock = clock.clone();
        let engine_node = node_id.clone();
        let skew = config.max_future_skew;
        let thread = std::thread::Builder::new()
            .name("spread-engine".into())
            .spawn(move || {
                let system = System::new();
                system.block_on(async move {
                    let hub = Hub::new(head, tick, hub_stats).start();
                    let writers = Arbiter::new();
                    let sessions = Arbiter::new();
                    let parts = (0..partitions)
                        .map(|i| {
                            let (store, clock, node, tx) = (
                                engine_store.clone(),
                                engine_clock.clone(),
                                engine_node.clone(),
                                commit_tx.clone(),
                            );
                            Partition::start_on(&writers.handle(), i, store, clock, node, tx, skew)
                        })
                        .collect::<Vec<_>>();
                    drop(commit_tx);
                    let _ = started_tx.send((System::current(), hub, parts, sessions.handle()));
                });
                system.run().ok();
            })
            .map_err(|e| StoreError::Failed(format!("cannot start the engine thread: {e}")))?;
        let (system, hub, parts, sessions) = started_rx
            .recv()
            .map_err(|_| StoreError::Failed("the engine did not start".into()))?;

        let incarnation: Arc<str> = Arc::from(incarnation);
        let committer = Committer {
            store: store.clone(),
            clock: clock.clone(),
            hub: hub.clone(),
            incarnation: incarnation.clone(),
            durability: config.durability,
            batch_interval: config.batch_interval,
            lazy_flush_interval: config.lazy_flush_interval,
            log_retention: config.log_retention.max(1),
            head,
            log_first,
            failed: Default::default(),
            broken: None,
            store_failed: stats.store_failed.clone(),
            durable: stats.durable_seq.clone(),
        };
        let committer = std::thread::Builder::new()
            .name("spread-committer".into())
            .spawn(move || committer.run(commit_rx))
            .map_err(|e| StoreError::Failed(format!("cannot start the committer thread: {e}")))?;

        let session_ctx = Arc::new(SessionContext {
            store: store.clone(),
            hub,
            incarnation: incarnation.clone(),
            ping_interval: config.ping_interval,
            max_subscriptions: config.max_subscriptions_per_session,
            max_buffered: config.subscriber_queue_items,
            stats: stats.hub.clone(),
        });
        log::info!(
            "node {node_id} open: {} (incarnation {incarnation}, seq {head}, {partitions} partitions, durability {})",
            config.data_dir.display(),
            config.durability
        );
        Ok(Node {
            inner: Arc::new(Inner {
                store: store.clone(),
                clock,
                node_id,
                incarnation,
                shard_depth,
                partitions: parts,
                sessions,
                session_ctx,
                next_session: AtomicU64::new(1),
                stats,
                config,
                engine: Mutex::new(Some(Engine {
                    system,
                    thread: Some(thread),
                    committer: Some(committer),
                    store,
                })),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// The id of this node's store (part of every resume cursor).
    pub fn incarnation(&self) -> &str {
        &self.inner.incarnation
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The durability writes are acknowledged with.
    pub fn durability(&self) -> Durability {
        self.inner.config.durability
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &NodeStats {
        &self.inner.stats
    }

    /// The last seq published to subscribers.
    pub fn head_seq(&self) -> u64 {
        self.inner.stats.hub.head.load(Ordering::Relaxed)
    }

    /// Bytes the store takes on disk.
    pub fn store_size(&self) -> u64 {
        self.inner.store.size_on_disk()
    }

    /// The largest time this node's clock has issued or seen.
    pub fn clock_time(&self) -> u64 {
        self.inner.clock.last()
    }

    /// The number of partitions (fixed when the store was created).
    pub fn partitions(&self) -> usize {
        self.inner.partitions.len()
    }

    /// The partition that owns `path`.
    pub fn partition_of(&self, path: &Path) -> usize {
        let head = path.head(self.inner.shard_depth);
        let hash = blake3::hash(head.as_bytes());
        let n = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        (n % self.inner.partitions.len() as u64) as usize
    }

    /// The actor of partition `index` (tests only).
    #[cfg(test)]
    pub(crate) fn partition_actor(&self, index: usize) -> &Addr<Partition> {
        self.inner.partitions[index].actor()
    }

    /// Applies a write through its partition; answers once it is as durable
    /// as configured and handed to local subscribers.
    pub async fn write(&self, write: Write) -> Result<WriteReport, NodeError> {
        let path = write.path.as_ref().ok_or(crate::model::PathError::Empty)?;
        if path.is_root() {
            return Err(crate::model::PathError::Empty.into());
        }
        check_fields(&write)?;
        let partition = &self.inner.partitions[self.partition_of(path)];
        let (reply, answer) = oneshot::channel();
        // A full inbox makes the writer wait for room (backpressure).
        partition
            .send(Apply { write, reply }, &self.inner.stats.writes_waited)
            .await?;
        answer.await.unwrap_or(Err(NodeError::ShuttingDown))
    }

    /// Writes `value` at `path`.
    pub async fn set(&self, path: &str, value: impl Into<Bytes>) -> Result<WriteReport, NodeError> {
        self.write(Write::set(Path::parse_key(path)?, value)).await
    }

    /// Deletes `path` (writes a tombstone; history keeps the old values).
    pub async fn delete(&self, path: &str) -> Result<WriteReport, NodeError> {
        self.write(Write::delete(Path::parse_key(path)?)).await
    }

    /// The live value of `path`: `None` if absent, deleted or expired.
    pub fn get(&self, path: &str) -> Result<Option<Stored>, NodeError> {
        self.get_path(&Path::parse_key(path)?)
    }

    /// [`Node::get`] for a parsed path.
    pub fn get_path(&self, path: &Path) -> Result<Option<Stored>, NodeError> {
        let stored = self.inner.store.latest(path)?;
        Ok(stored.filter(|s| s.event.is_live_now()))
    }

    /// Live values of `prefix` and below, in path order, after `after`: at
    /// most `limit`, reading at most `limit` + [`LIST_SCAN_SLACK`] entries
    /// (tombstones and expired values are read and skipped). `next` is where
    /// the next page starts, `None` once the prefix is done; a page cut
    /// short by the scan bound may hold fewer than `limit` entries, even
    /// none, and still have a `next`.
    pub fn list(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, NodeError> {
        let now = wall_micros();
        let mut entries = Vec::new();
        let mut cursor = after.map(str::to_string);
        let mut budget = limit.saturating_add(LIST_SCAN_SLACK);
        loop {
            let want = (limit - entries.len()).min(budget);
            if want == 0 {
                break;
            }
            let chunk = self
                .inner
                .store
                .scan_latest(prefix, cursor.as_deref(), want)?;
            let Some(last) = chunk.last() else {
                return Ok(Listing {
                    entries,
                    next: None,
                });
            };
            cursor = Some(last.event.path.as_str().to_string());
            let full = chunk.len() == want;
            budget -= chunk.len();
            entries.extend(chunk.into_iter().filter(|s| s.event.is_live_at(now)));
            if !full {
                return Ok(Listing {
                    entries,
                    next: None,
                });
            }
        }
        Ok(Listing {
            entries,
            next: cursor,
        })
    }

    /// Every event of `path` in `range`, oldest first (tombstones included).
    pub fn history(&self, path: &str, range: HistoryRange) -> Result<Vec<Stored>, NodeError> {
        self.history_of(&Path::parse_key(path)?, range)
    }

    /// [`Node::history`] for a parsed path.
    pub fn history_of(&self, path: &Path, range: HistoryRange) -> Result<Vec<Stored>, NodeError> {
        Ok(self
            .inner
            .store
            .history(path, range.from, range.to, range.limit)?)
    }

    /// Opens a session with no subscription yet (the WebSocket and SSE
    /// endpoints use this; add prefixes with [`Subscribe`]).
    pub fn open_session(&self) -> Session {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (outbox, stream) = Outbox::new(
            self.inner.config.subscriber_queue_items,
            self.inner.config.subscriber_queue_bytes,
        );
        let ctx = self.inner.session_ctx.clone();
        // On the caller's arbiter when there is one (an HTTP worker: the
        // session's transport lives there too, so a delivery crosses one
        // thread, hub to worker), else on the engine's session arbiter.
        let arbiter = actix::Arbiter::try_current().unwrap_or_else(|| self.inner.sessions.clone());
        let actor =
            Subscriber::start_in_arbiter(&arbiter, move |_| Subscriber::new(id, ctx, outbox));
        Session { actor, stream }
    }

    /// Streams `prefix` and everything below: a snapshot, `Ready`, then every
    /// change. With `since` (a cursor from an earlier stream) it sends only
    /// what changed after it instead of the snapshot.
    pub fn subscribe(&self, prefix: &str, since: Option<&str>) -> Result<SessionStream, NodeError> {
        let prefix = Path::parse(prefix)?;
        let session = self.open_session();
        session.actor.do_send(Subscribe {
            prefix,
            since: since.map(str::to_string),
        });
        Ok(session.stream)
    }

    /// Stops the engine after making every acknowledged write durable.
    /// Later calls on any clone fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        let engine = self.inner.engine.lock().map(|mut e| e.take());
        if let Ok(Some(mut engine)) = engine {
            engine.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_node_id_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.node_id = Some("not valid!".into());
        match Node::open(config) {
            Err(NodeError::BadConfig(detail)) => assert!(detail.contains("node id"), "{detail}"),
            Err(other) => panic!("expected BadConfig, got {other}"),
            Ok(_) => panic!("a bad node id was accepted"),
        }
    }

    #[test]
    fn a_listing_over_many_tombstones_reads_a_bounded_page_and_says_where_to_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.durability = Durability::Lazy;
        let node = Node::open(config).unwrap();
        let dead = LIST_SCAN_SLACK + 50;
        actix::System::new().block_on(async {
            let paths: Vec<String> = (0..dead).map(|i| format!("t/{i:05}")).collect();
            for chunk in paths.chunks(1000) {
                let writes = chunk.iter().map(|p| node.delete(p));
                for report in futures_util::future::join_all(writes).await {
                    report.unwrap();
                }
            }
            node.set("t/zzz", "alive").await.unwrap();
        });
        let prefix = Path::parse("t").unwrap();
        let first = node.list(&prefix, None, 10).unwrap();
        assert!(
            first.entries.is_empty(),
            "only tombstones within the scan bound"
        );
        let next = first.next.expect("a page cut short says where to go on");
        let second = node.list(&prefix, Some(&next), 10).unwrap();
        let paths: Vec<_> = second
            .entries
            .iter()
            .map(|s| s.event.path.as_str().to_string())
            .collect();
        assert_eq!(paths, ["t/zzz"]);
        assert_eq!(second.next, None, "the prefix is done");
        node.shutdown();
    }

    #[test]
    fn partition_layout_is_fixed_when_the_store_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.partitions = 8;
        config.shard_depth = 1;
        let node = Node::open(config.clone()).unwrap();
        assert_eq!(node.partitions(), 8);
        let a = Path::parse("rooms/1/x").unwrap();
        let b = Path::parse("rooms/2/y").unwrap();
        assert_eq!(
            node.partition_of(&a),
            node.partition_of(&b),
            "depth 1: same first segment"
        );
        let before = node.partition_of(&a);
        node.shutdown();
        drop(node);

        config.partitions = 64;
        config.shard_depth = 2;
        let node = Node::open(config).unwrap();
        assert_eq!(
            node.partitions(),
            8,
            "an existing store keeps its partition count"
        );
        assert_eq!(node.partition_of(&a), before, "and its shard depth");
        assert_eq!(node.partition_of(&a), node.partition_of(&b));
    }
}
