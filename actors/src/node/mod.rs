//! `Node`: an embedded Spread node — the library API, and what the HTTP
//! layer drives.
//!
//! `Node::open` opens the store, restores the clock and the log head, and
//! starts the engine on its own threads: an actix system holding the
//! partitions, the session actors and the hub's ticker, plus the committer
//! thread, which fans out through the hub itself. A `Node` is
//! cheap to clone and can be used from any thread or async runtime; the
//! engine stops when the last clone is dropped (or on [`Node::shutdown`]),
//! after making every acknowledged write durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::cluster::Cluster;
use crate::config::{Config, Durability};
use crate::engine::acks::Acks;
use crate::engine::partition::{Apply, Inbox, Input, Write, WriteReport};
use crate::error::NodeError;
use crate::model::{
    limits, version::wall_micros, AsOf, Clock, Event, FieldError, Layout, NodeId, Path, Version,
};
use crate::session::{Outbox, SessionContext, SessionStream, Subscribe, Subscriber};
use crate::store::{LogPage, PartitionDigest, Store, StoreError, Stored};

pub mod expiry;
mod list_page;
mod query;
mod reads;
mod rollback;
mod start;
mod stats;
mod transfer;

pub use list_page::{merge_pages, ListEntry, ListPage};
pub use query::{HistoryRange, Listing, PrefixDigest, DIGEST_MAX_CHILDREN, LIST_SCAN_SLACK};
pub use reads::HISTORY_ANSWER_BYTES;
pub use rollback::RollbackReport;
use start::Engine;
pub use stats::NodeStats;
pub use transfer::{ExportStream, ImportReport};

/// An open session: its actor and the stream of what it sends.
pub struct Session {
    /// The session actor (send it `Subscribe` / `Unsubscribe`).
    pub actor: Addr<Subscriber>,
    /// What it streams; dropping this ends the session.
    pub stream: SessionStream,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<Clock>,
    node_id: NodeId,
    incarnation: Arc<str>,
    layout: Layout,
    partitions: Vec<Inbox>,
    acks: Acks,
    tap: Arc<crate::engine::tap::Tap>,
    cluster: Option<Arc<Cluster>>,
    sessions: ArbiterHandle,
    session_ctx: Arc<SessionContext>,
    next_session: AtomicU64,
    stats: Arc<NodeStats>,
    /// What the committer and the merkle trees' folder tell each other.
    marks: Arc<crate::merkle::maintain::Marks>,
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
fn check_fields(
    content_type: Option<&str>,
    author: Option<&str>,
    value: Option<&Bytes>,
    max_value: usize,
) -> Result<(), FieldError> {
    if let Some(ct) = content_type {
        limits::check_content_type(ct)?;
    }
    if let Some(author) = author {
        limits::check_author(author)?;
    }
    if let Some(value) = value {
        limits::check_value(value, max_value)?;
    }
    Ok(())
}

impl Node {
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
        self.inner.stats.hub.head.load(Ordering::Acquire)
    }

    /// The store (anti-entropy reads its trees).
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// The names of `path`'s events (history included), oldest first.
    pub fn event_names(&self, path: &Path) -> Result<Vec<Vec<u8>>, NodeError> {
        self.event_names_after(path, None, usize::MAX)
    }

    /// The names of `path`'s events ordered after the order key `after`
    /// (`time node \0 digest`, see `store::keys::order`), at most `limit`,
    /// in order.
    pub fn event_names_after(
        &self,
        path: &Path,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, NodeError> {
        let after = match after {
            None => None,
            Some(order) => Some(crate::store::parse_order(order).ok_or_else(|| {
                NodeError::Invalid("an event's order key that does not parse".into())
            })?),
        };
        let range = HistoryRange {
            from: 0,
            to: u64::MAX,
            limit,
        };
        Ok(self
            .history_bounded(path, range, usize::MAX, after.as_ref())?
            .0
            .iter()
            .map(|s| crate::store::event_name(path, &s.event.version, &s.digest))
            .collect())
    }

    /// The events this node holds among those named `names` (`path \0
    /// order`); names it does not hold, or that do not parse, are skipped.
    pub fn events_named(&self, names: &[Vec<u8>]) -> Result<Vec<Stored>, NodeError> {
        // Each read alone (the page that would hold it), so a path with a
        // long history costs no more than one with a short one. In the
        // names' order, each once.
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for name in names {
            if seen.insert(name.as_slice()) {
                out.extend(self.inner.store.named(name)?);
            }
        }
        Ok(out)
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

    /// This node's side of the cluster (`None`: a single node, which
    /// accepts no peers).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.as_ref()
    }

    /// The partition layout (fixed when the store was created).
    pub fn layout(&self) -> Layout {
        self.inner.layout
    }

    /// The partition that owns `path`.
    pub fn partition_of(&self, path: &Path) -> usize {
        usize::from(self.inner.layout.partition_of(path))
    }

    /// The actor of partition `index` (tests only).
    #[cfg(test)]
    pub(crate) fn partition_actor(
        &self,
        index: usize,
    ) -> &Addr<crate::engine::partition::Partition> {
        self.inner.partitions[index].actor()
    }

    /// The largest value this node takes: what a peer frame carries in a
    /// cluster (every value must reach the other owners), the engine's
    /// limit otherwise.
    pub fn max_value_bytes(&self) -> usize {
        match &self.inner.cluster {
            Some(_) => crate::cluster::MAX_VALUE_BYTES,
            None => limits::MAX_VALUE_BYTES,
        }
    }

    /// Applies a write through its partition; answers once it is as durable
    /// as configured and handed to local subscribers.
    pub async fn write(&self, write: Write) -> Result<WriteReport, NodeError> {
        check_fields(
            write.content_type.as_deref(),
            write.author.as_deref(),
            write.value.as_ref(),
            self.max_value_bytes(),
        )?;
        if let Some(ttl) = write.ttl_secs {
            limits::check_ttl(ttl)?;
        }
        match &self.inner.cluster {
            Some(cluster) => crate::cluster::route::write(self, cluster, write).await,
            None => self.apply(Input::Write(write)).await,
        }
    }

    /// Applies a write here, as its coordinator: stamped by this node, then
    /// waiting for what [`Write::wait`] says (the cluster's `route` decides
    /// that).
    pub(crate) async fn write_here(&self, write: Write) -> Result<WriteReport, NodeError> {
        self.apply(Input::Write(write)).await
    }

    /// Merges a foreign event (from a peer, an import) with the version it
    /// already has, by the LWW rule, through its partition like a write:
    /// `new` if it is newer than the path's value, `too_late` if older (it
    /// joins history), `existing` if this exact event is held already (so
    /// merging twice changes nothing). Every event merged gets a seq in the
    /// change log; subscribers see it only when it becomes the value.
    pub async fn merge(&self, event: Event) -> Result<WriteReport, NodeError> {
        check_fields(
            event.content_type.as_deref(),
            event.author.as_deref(),
            event.value.as_ref(),
            self.max_value_bytes(),
        )?;
        self.apply(Input::Merge(event)).await
    }

    /// Hands a write or a merge to the partition of its path; answers once
    /// it is as durable as configured and handed to local subscribers.
    async fn apply(&self, input: Input) -> Result<WriteReport, NodeError> {
        let wait = match &input {
            Input::Write(w) => w.wait,
            Input::Merge(_) => None,
        };
        let report = self.apply_here(input).await?;
        match wait {
            // A write held already commits nothing, so no acknowledgement
            // of it may come: it counts those heard, at once, and the
            // cluster's route asks the owners it needs more of.
            Some(wait) if report.status == crate::engine::partition::WriteStatus::Existing => {
                Ok(self.inner.acks.heard_now(report, wait))
            }
            Some(wait) => self.inner.acks.wait(report, wait).await,
            None => Ok(report),
        }
    }

    /// Counts an acknowledgement, from owner `from`, that it holds the
    /// event `(path, version, digest)` durably: a write waiting for it
    /// ([`Write::wait`]) is answered once it has heard enough owners (each
    /// counts once). True if a writer was waiting; an acknowledgement that
    /// comes before its writer waits is kept for a while and counted then.
    pub fn ack(&self, event: (&Path, &Version, crate::model::Digest), from: &str) -> bool {
        self.inner.acks.ack(event, from)
    }

    /// Writers waiting for acks, and acks kept for writers to come (tests).
    #[cfg(test)]
    pub(crate) fn inner_acks_sizes(&self) -> (usize, usize) {
        self.inner.acks.sizes()
    }

    /// The local part of [`Node::apply`]: through the partition and the
    /// committer.
    async fn apply_here(&self, input: Input) -> Result<WriteReport, NodeError> {
        let path = input.path().ok_or(crate::model::PathError::Empty)?;
        if path.is_root() {
            return Err(crate::model::PathError::Empty.into());
        }
        let partition = &self.inner.partitions[self.partition_of(path)];
        let (reply, answer) = oneshot::channel();
        // A full inbox makes the writer wait for room (backpressure).
        partition
            .send(Apply { input, reply }, &self.inner.stats.writes_waited)
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

    /// The value `path` had at `time` (µs since the epoch, as versions
    /// count): the event with the greatest version at or before it, `None`
    /// if there was none then or it was a tombstone or had expired by then.
    pub fn get_at(&self, path: &str, time: u64) -> Result<Option<Stored>, NodeError> {
        self.get_as_of(&Path::parse_key(path)?, &AsOf::time(time))
    }

    /// True if `since` is a cursor of this node's store: a subscription
    /// with it resumes (a playback asked with it too).
    pub fn resumable(&self, since: Option<&str>) -> bool {
        crate::model::cursor::Cursor::names_store(since, &self.inner.incarnation)
    }

    /// Fails with [`NodeError::Compacted`] if what `path` held at `time` is
    /// no longer known: compaction dropped its history around then. (Before
    /// the oldest event dropped, what stood is known: what is kept then, or
    /// nothing.)
    pub fn check_known(&self, path: &Path, time: u64) -> Result<(), NodeError> {
        match self.inner.store.compacted_span(path)? {
            Some((from, oldest)) if from <= time && time < oldest => Err(NodeError::Compacted {
                path: path.to_string(),
                oldest,
            }),
            _ => Ok(()),
        }
    }

    /// Fails with [`NodeError::Compacted`] if compaction dropped some of
    /// `path`'s history from `time` on: a read of its history from then
    /// would miss events.
    pub fn check_floor(&self, path: &Path, time: u64) -> Result<(), NodeError> {
        match self.inner.store.history_floor(path)? {
            Some(oldest) if time < oldest => Err(NodeError::Compacted {
                path: path.to_string(),
                oldest,
            }),
            _ => Ok(()),
        }
    }

    /// Fails with [`NodeError::Compacted`] if compaction dropped history
    /// from `time` on of a path under `prefix`: a playback from then would
    /// miss events. Quick when no partition under the prefix has a floor
    /// past `time`; else it reads the latest value of every path under the
    /// prefix (call it off the async threads).
    pub fn check_prefix_floor(&self, prefix: &Path, time: u64) -> Result<(), NodeError> {
        let highest = self
            .inner
            .layout
            .covering(prefix)
            .iter()
            .map(|part| self.inner.store.partition_floor(part))
            .max()
            .unwrap_or(0);
        if time >= highest {
            return Ok(());
        }
        let mut after: Option<String> = None;
        loop {
            let chunk = self
                .inner
                .store
                .scan_latest(prefix, after.as_deref(), 1024)?;
            let Some(last) = chunk.last() else {
                return Ok(());
            };
            after = Some(last.event.path.as_str().to_string());
            let full = chunk.len() == 1024;
            // Events dropped are no newer than the path's newest event (a
            // reclaimed path's floor, its expiry's `expires_at`, may be past
            // it): only a path with an event at or after `time` may have
            // lost some from then on.
            for latest in chunk.iter().filter(|s| s.event.version.time >= time) {
                self.check_floor(&latest.event.path, time)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The value `path` had at `as_of` (a time, or a version and what came
    /// before it): `None` if there was none then.
    pub fn get_as_of(&self, path: &Path, as_of: &AsOf) -> Result<Option<Stored>, NodeError> {
        let stored = self.stood_at(path, as_of)?;
        // After the read: a compaction step that ran meanwhile has raised
        // the floor by now (pages and floor go in one batch).
        self.check_known(path, as_of.time)?;
        Ok(stored.filter(|s| s.event.is_live_at(as_of.time)))
    }

    /// The event of `path` that stood at `as_of`, a tombstone too. An
    /// expiry stands from the time it took effect, not from its version's
    /// (see `expiry`): before then, the value it ended stood.
    fn stood_at(&self, path: &Path, as_of: &AsOf) -> Result<Option<Stored>, NodeError> {
        let stored = self.inner.store.event_at(path, as_of)?;
        match stored {
            Some(s)
                if expiry::is_expiry(&s.event)
                    && s.event.expires_at.is_some_and(|at| at > as_of.time) =>
            {
                let before = AsOf::time(s.event.version.time.saturating_sub(1));
                Ok(self.inner.store.event_at(path, &before)?)
            }
            other => Ok(other),
        }
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
        self.list_at(prefix, after, limit, None)
    }

    /// [`Node::list`] as the prefix stood at `at` (µs) when given: each path
    /// with the value it had then ([`Node::get_at`]); paths created later
    /// or deleted or expired by then are left out.
    pub fn list_at(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: usize,
        at: Option<u64>,
    ) -> Result<Listing, NodeError> {
        self.list_in(prefix, None, after, limit, at)
    }

    /// [`Node::list_at`] of the paths in partitions `parts` (sorted) only,
    /// when given: the share of a prefix an owner answers for.
    pub fn list_in(
        &self,
        prefix: &Path,
        parts: Option<&[u16]>,
        after: Option<&str>,
        limit: usize,
        at: Option<u64>,
    ) -> Result<Listing, NodeError> {
        let now = at.unwrap_or_else(wall_micros);
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
                .scan_latest_in(prefix, parts, cursor.as_deref(), want)?;
            let Some(last) = chunk.last() else {
                return Ok(Listing {
                    entries,
                    next: None,
                });
            };
            cursor = Some(last.event.path.as_str().to_string());
            let full = chunk.len() == want;
            budget -= chunk.len();
            for stored in chunk {
                // A path written since `at` is read as it stood then.
                let stored = match at {
                    Some(at)
                        if stored.event.version.time > at || expiry::is_expiry(&stored.event) =>
                    {
                        let then = self.stood_at(&stored.event.path, &AsOf::time(at))?;
                        self.check_known(&stored.event.path, at)?;
                        match then {
                            Some(then) => then,
                            None => continue,
                        }
                    }
                    _ => stored,
                };
                if stored.event.is_live_at(now) {
                    entries.push(stored);
                }
            }
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

    /// [`Node::history`] for a parsed path. A range that starts (`from`
    /// above 0) before what compaction kept of the path fails with
    /// [`NodeError::Compacted`]; from 0, it is what is kept.
    pub fn history_of(&self, path: &Path, range: HistoryRange) -> Result<Vec<Stored>, NodeError> {
        Ok(self.history_bounded(path, range, usize::MAX, None)?.0)
    }

    /// The change log after `after`, in seq order, at most `limit` entries:
    /// every event this node's store took, a late one (history only) too, so
    /// whoever merges them in order holds the same latest values and
    /// histories. Fails with [`StoreError::Trimmed`] when `--log-retention`
    /// has trimmed entries after `after`.
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<Stored>, NodeError> {
        let until = self.log_head();
        let mut out = Vec::new();
        let mut from = after;
        while from < until && out.len() < limit {
            let page = self
                .inner
                .store
                .log_read(&Path::root(), from, until, limit - out.len())?;
            if page.trimmed {
                return Err(StoreError::Trimmed { after }.into());
            }
            out.extend(page.entries);
            from = page.through;
        }
        Ok(out)
    }

    /// The last seq whose commit is complete: every entry up to it can be
    /// read from the store now. (The store's own head is written inside a
    /// commit, a moment before that commit's log entries can be read; this
    /// one is published after the commit returns, and before the commit is
    /// handed to the tap.)
    pub fn log_head(&self) -> u64 {
        self.head_seq()
    }

    /// Where every commit's events are handed as they land (the cluster's
    /// replicator attaches to it).
    pub fn tap(&self) -> &crate::engine::tap::Tap {
        &self.inner.tap
    }

    /// A value this node keeps about itself (e.g. a replication cursor).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.inner.store.meta(name)?)
    }

    /// Sets a value this node keeps about itself (durable with the next
    /// flush).
    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), NodeError> {
        Ok(self.inner.store.set_meta(name, value)?)
    }

    /// Partition `part`'s change log in `(after, until]`, one step of at
    /// most `limit` entries.
    pub fn partition_log_until(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, NodeError> {
        self.check_partition(part)?;
        Ok(self.inner.store.partition_log(part, after, until, limit)?)
    }

    /// One step of partition `part`'s change log after `after` (up to the
    /// last commit): what a peer following that partition reads, without
    /// reading any other partition. `trimmed` says the log no longer reaches
    /// back to `after`.
    pub fn partition_log(&self, part: u16, after: u64, limit: usize) -> Result<LogPage, NodeError> {
        self.partition_log_until(part, after, self.log_head(), limit)
    }

    /// Latest values (tombstones included) of partition `part` in path
    /// order, after `after`: a snapshot of one partition, read in steps.
    pub fn partition_latest(
        &self,
        part: u16,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, NodeError> {
        self.check_partition(part)?;
        Ok(self.inner.store.partition_latest(part, after, limit)?)
    }

    /// The content hash of partition `part`: two nodes that hold the same
    /// events of it (history included) give the same digest.
    pub fn partition_digest(&self, part: u16) -> Result<PartitionDigest, NodeError> {
        self.check_partition(part)?;
        Ok(self.inner.store.partition_digest(part)?)
    }

    /// The merkle digest of everything under `prefix` (history included),
    /// with its children's to `depth` levels: two nodes that hold the same
    /// events under a prefix give the same digest. Read from the merkle
    /// trees, which fold commits in the background: under load a digest
    /// trails the last writes by up to about a second.
    pub fn digest(&self, prefix: &Path, depth: usize) -> Result<PrefixDigest, NodeError> {
        let mut budget = DIGEST_MAX_CHILDREN;
        self.digest_within(prefix, depth, &mut budget)
    }

    /// [`Node::digest`], listing at most `budget` children in all.
    fn digest_within(
        &self,
        prefix: &Path,
        depth: usize,
        budget: &mut usize,
    ) -> Result<PrefixDigest, NodeError> {
        let parts: Vec<u16> = self.layout().covering(prefix).iter().collect();
        let store = self.inner.store.as_ref();
        let tree = crate::merkle::Tree::new(store);
        let mut fingerprint = crate::merkle::Fingerprint::EMPTY;
        for &part in &parts {
            fingerprint.add(&tree.node(part, prefix.as_str())?.subtree);
        }
        let mut digest = PrefixDigest {
            prefix: prefix.as_str().to_string(),
            fingerprint,
            children: Vec::new(),
            truncated: false,
        };
        if depth == 0 {
            return Ok(digest);
        }
        // The children over the partitions the prefix spans, by segment.
        let mut children: std::collections::BTreeMap<String, crate::merkle::Fingerprint> =
            std::collections::BTreeMap::new();
        let unbounded = std::ops::Bound::Unbounded;
        for &part in &parts {
            for (seg, fp) in
                tree.children(part, prefix.as_str(), unbounded, unbounded, *budget + 1)?
            {
                children.entry(seg).or_default().add(&fp);
            }
        }
        for seg in children.into_keys() {
            if *budget == 0 {
                digest.truncated = true;
                break;
            }
            *budget -= 1;
            let child = if prefix.as_str().is_empty() {
                Path::parse(&seg)
            } else {
                Path::parse(&format!("{}/{seg}", prefix.as_str()))
            }
            .map_err(|e| StoreError::Corrupt(format!("a merkle segment: {e}")))?;
            let grandchild = self.digest_within(&child, depth - 1, budget)?;
            digest.truncated |= grandchild.truncated;
            digest.children.push(grandchild);
        }
        Ok(digest)
    }

    /// Change-log entries committed and not yet folded into the merkle
    /// trees (at most; 0 when they have caught up).
    pub fn merkle_unfolded(&self) -> u64 {
        (self.head_seq() + 1).saturating_sub(self.inner.marks.safe_trim().max(1))
    }

    /// Every entry of this node's log up to this seq is in the merkle
    /// trees (`None` until the folder's first pass since the node started).
    pub fn merkle_folded(&self) -> Option<u64> {
        self.inner.marks.safe_trim().checked_sub(1)
    }

    /// Waits (blocking, at most `wait`) until the merkle trees of `parts`
    /// hold every entry of this node's log through `seq`; false if they do
    /// not by then. (Each partition by its own fold: one whose fold keeps
    /// failing holds back only the questions about it.)
    pub fn merkle_folded_through(
        &self,
        parts: &[u16],
        seq: u64,
        wait: std::time::Duration,
    ) -> bool {
        self.inner.marks.wait_folded_through(parts, seq, wait)
    }

    /// The marks of the merkle trees' folder (tests pause it).
    #[cfg(test)]
    pub(crate) fn merkle_marks(&self) -> Arc<crate::merkle::maintain::Marks> {
        self.inner.marks.clone()
    }

    /// Compares this node's merkle trees under `prefix` with the other
    /// owners' (or, for a prefix its clients watch, with the owners'), and
    /// exchanges what either side lacks: one report per peer. A single
    /// node has no one to compare with (no reports).
    pub async fn repair(
        &self,
        prefix: &Path,
    ) -> Result<Vec<crate::cluster::differ::DiffReport>, NodeError> {
        let Some(replicator) = self.cluster().and_then(|c| c.replicator.get().cloned()) else {
            return Ok(Vec::new());
        };
        replicator
            .send(crate::cluster::replicator::Repair {
                prefix: prefix.clone(),
            })
            .await
            .map_err(|_| NodeError::ShuttingDown)
    }

    /// Bytes (keys and values) the merkle trees take in the store: what
    /// anti-entropy costs per key, before the store's own overhead.
    pub fn merkle_bytes(&self) -> Result<u64, NodeError> {
        let mut total = 0u64;
        for part in 0..self.partitions() as u16 {
            for (k, v) in self
                .inner
                .store
                .merkle_range(part, &[], &[0xff], usize::MAX)?
            {
                total += (k.len() + v.len()) as u64;
            }
        }
        Ok(total)
    }

    /// Drops everything partition `part` holds here: its values, history,
    /// log and merkle tree (a copy nobody needs any more). Writes that
    /// reach it meanwhile are decided after the drop. Durable when it
    /// answers.
    pub async fn drop_partition(&self, part: u16) -> Result<(), NodeError> {
        self.check_partition(part)?;
        self.inner.partitions[usize::from(part)].drop_all().await
    }

    /// Bytes partition `part` takes in the store, keys and values (a scan
    /// of its key ranges: for a blocking thread).
    pub fn partition_bytes(&self, part: u16) -> Result<u64, NodeError> {
        self.check_partition(part)?;
        Ok(self.inner.store.partition_bytes(part)?)
    }

    /// The merkle root of partition `part` (every event it holds).
    pub fn partition_root(&self, part: u16) -> Result<crate::merkle::Fingerprint, NodeError> {
        self.check_partition(part)?;
        let store = self.inner.store.as_ref();
        Ok(crate::merkle::Tree::new(store).node(part, "")?.subtree)
    }

    fn check_partition(&self, part: u16) -> Result<(), NodeError> {
        if u32::from(part) >= self.inner.layout.partitions() {
            return Err(NodeError::NoPartition {
                part,
                partitions: self.inner.layout.partitions(),
            });
        }
        Ok(())
    }

    /// The prefixes this node's clients watch.
    pub fn interest(&self) -> &crate::session::interest::Interest {
        &self.inner.session_ctx.interest
    }

    /// Opens a session for a peer that watches a prefix here: like
    /// [`Node::open_session`], but its subscriptions are not this node's
    /// interest.
    pub fn open_peer_session(&self) -> Session {
        self.session(false)
    }

    /// Opens a session with no subscription yet (the WebSocket and SSE
    /// endpoints use this; add prefixes with [`Subscribe`]).
    pub fn open_session(&self) -> Session {
        self.session(true)
    }

    fn session(&self, counts_interest: bool) -> Session {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (outbox, stream) = Outbox::new(
            self.inner.config.subscriber_queue_items,
            self.inner.config.subscriber_queue_bytes,
        );
        let ctx = self.inner.session_ctx.clone();
        // On the caller's arbiter when there is one (an HTTP worker: the
        // session's transport lives there too, so a delivery crosses one
        // thread, committer to worker), else on the engine's session arbiter.
        let arbiter = actix::Arbiter::try_current().unwrap_or_else(|| self.inner.sessions.clone());
        let actor = Subscriber::start_in_arbiter(&arbiter, move |_| {
            let subscriber = Subscriber::new(id, ctx, outbox);
            if counts_interest {
                subscriber
            } else {
                subscriber.for_peer()
            }
        });
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
            playback: None,
        });
        Ok(session.stream)
    }

    /// A subscription to `prefix` that plays history back first: every
    /// event with `from <= time` (history-only ones too) in version order
    /// as [`StreamItem::Played`], then the changes made meanwhile, `Ready`
    /// and live changes; with `to`, the events up to it, then
    /// [`StreamItem::End`]. Reads this node's history: in a cluster, run it
    /// at a node that holds the prefix ([`Node::holds`]).
    pub fn playback(
        &self,
        prefix: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<SessionStream, NodeError> {
        let prefix = Path::parse(prefix)?;
        self.check_prefix_floor(&prefix, from)?;
        let session = self.open_session();
        session.actor.do_send(Subscribe {
            prefix,
            since: None,
            playback: Some(crate::session::Playback { from, to }),
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
mod compaction_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;
