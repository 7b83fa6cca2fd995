//! Opening a node: identity and layout from the store's metadata, the clock
//! and the log head restored, and the engine started on its own threads (an
//! actix system with the partitions, the session arbiter and the hub's
//! ticker, and the committer thread); and stopping it, after the last acknowledged write
//! is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use actix::prelude::*;

use super::{Inner, Node, NodeStats};
use crate::cluster::Cluster;
use crate::config::{Config, Durability};
use crate::engine::committer::Committer;
use crate::engine::hub::{Hub, Ticker};
use crate::engine::partition::Partition;
use crate::error::NodeError;
use crate::merkle::maintain::{rebuild_all, Folder, Marks};
use crate::model::{Clock, Layout, NodeId};
use crate::session::SessionContext;
use crate::store::{SledStore, Store, StoreError};

pub(super) struct Engine {
    system: System,
    thread: Option<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
    /// The thread folding commits into the merkle trees, and its marks.
    folder: Option<(JoinHandle<()>, Arc<Marks>)>,
    store: Arc<dyn Store>,
}

impl Engine {
    pub(super) fn stop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The partitions held the committer's senders: it drains and flushes.
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        // After the last commit: the trees fold it before the clean mark.
        if let Some((t, marks)) = self.folder.take() {
            marks.stop();
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
        let layout = Layout::new(config.partitions, config.shard_depth)
            .map_err(|e| NodeError::BadConfig(e.to_string()))?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open_with(
            &config.data_dir,
            config.cache_bytes,
            flush_every,
            layout,
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
        let layout = store.layout();
        let partitions = layout.partitions();
        if (config.partitions, config.shard_depth) != (partitions, layout.shard_depth()) {
            log::warn!(
                "the store keeps its layout ({partitions} partitions at shard depth {}); \
                 the configured {} at {} applies to new stores only",
                layout.shard_depth(),
                config.partitions,
                config.shard_depth
            );
        }
        let cluster = match &config.cluster {
            Some(c) => {
                c.check().map_err(NodeError::BadConfig)?;
                // A new life at each start: the node rejoins under its id.
                let bump = meta_text(&*store, "member_bump")?
                    .and_then(|b| b.parse::<u16>().ok())
                    .map_or(0, |b| b.wrapping_add(1));
                store.set_meta("member_bump", bump.to_string().as_bytes())?;
                Some(Arc::new(Cluster::new(
                    c.clone(),
                    node_id.as_str(),
                    layout,
                    bump,
                    &incarnation,
                )))
            }
            None => None,
        };
        // Anti-entropy's trees: rebuilt from history once if the store does
        // not say they are complete (a store of an earlier build).
        let started = std::time::Instant::now();
        if rebuild_all(&*store)? {
            log::info!(
                "merkle trees of {partitions} partitions built from history in {:?}",
                started.elapsed()
            );
        }
        store.set_meta("durability", config.durability.to_string().as_bytes())?;
        // Marked clean again only by an orderly stop.
        store.remove_meta("clean")?;
        store.flush()?;

        let log_head = store.log_head()?;
        let head = log_head.seq;
        let clock = Arc::new(Clock::starting_after(log_head.clock));
        let stats = Arc::new(NodeStats::default());
        // Opening flushed the store: all of it is on disk.
        stats.durable_seq.store(head, Ordering::Relaxed);

        // The engine: an actix system on its own thread.
        let (commit_tx, commit_rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let tick = (config.ping_interval / 3).max(std::time::Duration::from_millis(10));
        let hub = Arc::new(Hub::new(head, stats.hub.clone()));
        let ticked = hub.clone();
        let engine_store = store.clone();
        let engine_clock = clock.clone();
        let engine_node = node_id.clone();
        let skew = config.max_future_skew;
        let thread = std::thread::Builder::new()
            .name("spread-engine".into())
            .spawn(move || {
                let system = System::new();
                system.block_on(async move {
                    Ticker {
                        hub: ticked,
                        interval: tick,
                    }
                    .start();
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
                    let _ = started_tx.send((System::current(), parts, sessions.handle()));
                });
                system.run().ok();
            })
            .map_err(|e| StoreError::Failed(format!("cannot start the engine thread: {e}")))?;
        let (system, parts, sessions) = started_rx
            .recv()
            .map_err(|_| StoreError::Failed("the engine did not start".into()))?;

        let incarnation: Arc<str> = Arc::from(incarnation);
        let tap = Arc::new(crate::engine::tap::Tap::default());
        let marks = Arc::new(Marks::new(partitions as usize, head));
        let folder = Folder::new(store.clone(), marks.clone())?;
        let folder = std::thread::Builder::new()
            .name("spread-merkle".into())
            .spawn(move || folder.run())
            .map_err(|e| StoreError::Failed(format!("cannot start the merkle thread: {e}")))?;
        let committer = Committer {
            store: store.clone(),
            marks: marks.clone(),
            clock: clock.clone(),
            hub: hub.clone(),
            tap: tap.clone(),
            incarnation: incarnation.clone(),
            durability: config.durability,
            batch_interval: config.batch_interval,
            lazy_flush_interval: config.lazy_flush_interval,
            log_retention: config.log_retention.max(1),
            head,
            failed: Default::default(),
            broken: None,
            store_failed: stats.store_failed.clone(),
            durable: stats.durable_seq.clone(),
            compaction: Some(crate::engine::compaction::Compaction::new(
                &config,
                partitions,
                stats.compacted.clone(),
                stats.compaction_sweeps.clone(),
            )),
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
            interest: Default::default(),
        });
        log::info!(
            "node {node_id} open: {} (incarnation {incarnation}, seq {head}, {partitions} partitions, durability {})",
            config.data_dir.display(),
            config.durability
        );
        let node = Node {
            inner: Arc::new(Inner {
                store: store.clone(),
                clock,
                node_id,
                incarnation,
                layout,
                partitions: parts,
                acks: Default::default(),
                tap,
                cluster,
                sessions,
                session_ctx,
                next_session: AtomicU64::new(1),
                stats,
                marks: marks.clone(),
                config,
                engine: Mutex::new(Some(Engine {
                    system,
                    thread: Some(thread),
                    committer: Some(committer),
                    folder: Some((folder, marks)),
                    store,
                })),
            }),
        };
        // Expiries are written by a thread that holds the node weakly: it
        // ends once the node is gone.
        super::expiry::start(Arc::downgrade(&node.inner)).map_err(|e| {
            NodeError::Store(StoreError::Failed(format!(
                "cannot start the expiry thread: {e}"
            )))
        })?;
        Ok(node)
    }
}
