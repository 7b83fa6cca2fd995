//! Export and import: every event under a prefix, history included, read
//! out in path order a bounded chunk at a time; and events merged back by
//! the LWW rule, so importing into a fresh node reproduces latest values,
//! versions and histories, and importing twice changes nothing.

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::{HistoryRange, Node};
use crate::engine::partition::WriteStatus;
use crate::error::NodeError;
use crate::model::{version::wall_micros, Digest, Event, Path, Version};
use crate::store::{Store, Stored};

/// Latest values scanned per step of an export.
const SCAN_PATHS: usize = 256;
/// Events of one path read per step of an export (at first).
const HISTORY_STEP: usize = 512;
/// About the most bytes of values in one chunk of an export.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the reader of an export.
const CHUNKS_AHEAD: usize = 4;
/// Paths whose histories an export across the cluster reads at once.
const PATHS_AT_ONCE: usize = 8;
/// Merges of an import in flight at once.
const MERGES_IN_FLIGHT: usize = 64;

/// The events of an export, a chunk at a time, in path order and, for each
/// path, oldest first. Dropping it stops the reading.
pub type ExportStream = mpsc::Receiver<Result<Vec<Stored>, NodeError>>;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Events that became their path's value.
    pub new: usize,
    /// Events already held (importing again changes nothing).
    pub existing: usize,
    /// Events older than their path's value: kept in history.
    pub too_late: usize,
}

impl ImportReport {
    /// Adds what another part of the import did.
    pub fn add(&mut self, other: &ImportReport) {
        self.new += other.new;
        self.existing += other.existing;
        self.too_late += other.too_late;
    }
}

impl Node {
    /// Every event under `prefix`, history included ([`ExportStream`]).
    /// Reads this node's store when it holds the prefix ([`Node::holds`]);
    /// in a cluster, a node that does not lists the paths across the
    /// cluster and reads each history where it is held (slower: a round
    /// trip per path it does not own). Call it on the actix system.
    pub fn export(&self, prefix: &Path) -> Result<ExportStream, NodeError> {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        if self.holds(prefix).is_err() {
            let (node, prefix) = (self.clone(), prefix.clone());
            actix::spawn(async move {
                if let Err(e) = export_across(&node, &prefix, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            });
            return Ok(rx);
        }
        let store = self.inner.store.clone();
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = export_into(&*store, &prefix, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(rx)
    }

    /// Merges `events` by the LWW rule, keeping their versions (history
    /// only for those older than a path's value). Every event is checked
    /// first: if one is refused, none is merged. In a cluster, each event
    /// is merged at an owner of its partition (here if this node is one),
    /// whose replication carries it to the other owners.
    pub async fn import(&self, events: Vec<Event>) -> Result<ImportReport, NodeError> {
        self.check_import(&events)?;
        match self.cluster() {
            Some(cluster) => crate::cluster::route::import(self, cluster, events).await,
            None => self.merge_here(&events).await,
        }
    }

    /// [`Node::import`] into this node's own partitions, whoever owns them
    /// (an owner merging the events a peer handed it).
    pub async fn import_here(&self, events: Vec<Event>) -> Result<ImportReport, NodeError> {
        self.check_import(&events)?;
        self.merge_here(&events).await
    }

    /// Refuses an import with an event a write could not carry.
    fn check_import(&self, events: &[Event]) -> Result<(), NodeError> {
        let limit =
            wall_micros().saturating_add(self.inner.config.max_future_skew.as_micros() as u64);
        for event in events {
            super::check_fields(
                event.content_type.as_deref(),
                event.author.as_deref(),
                event.value.as_ref(),
                self.max_value_bytes(),
            )?;
            if event.path.is_root() {
                return Err(crate::model::PathError::Empty.into());
            }
            if event.version.time > limit {
                return Err(NodeError::BadTime(format!(
                    "'{}' at {} is more than {}s ahead of this node's clock",
                    event.path,
                    event.version,
                    self.inner.config.max_future_skew.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// Merges checked `events` into this node's partitions.
    pub(crate) async fn merge_here(&self, events: &[Event]) -> Result<ImportReport, NodeError> {
        let mut report = ImportReport::default();
        for chunk in events.chunks(MERGES_IN_FLIGHT) {
            for merged in join_all(chunk.iter().map(|e| self.merge(e.clone()))).await {
                match merged?.status {
                    WriteStatus::New => report.new += 1,
                    WriteStatus::Existing => report.existing += 1,
                    WriteStatus::TooLate => report.too_late += 1,
                }
            }
        }
        Ok(report)
    }
}

/// Reads every event under `prefix` into `tx`, a chunk at a time; stops
/// quietly when the reader is gone.
fn export_into(
    store: &dyn Store,
    prefix: &Path,
    tx: &mpsc::Sender<Result<Vec<Stored>, NodeError>>,
) -> Result<(), NodeError> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let send = |chunk: &mut Vec<Stored>, bytes: &mut usize| {
        *bytes = 0;
        tx.blocking_send(Ok(std::mem::take(chunk))).is_ok()
    };
    let mut after: Option<String> = None;
    loop {
        let paths = store.scan_latest(prefix, after.as_deref(), SCAN_PATHS)?;
        let Some(last) = paths.last() else { break };
        after = Some(last.event.path.as_str().to_string());
        let full = paths.len() == SCAN_PATHS;
        for latest in paths {
            for stored in path_history(store, &latest.event.path) {
                let stored = stored?;
                bytes += 128 + stored.event.value.as_ref().map_or(0, |v| v.len());
                chunk.push(stored);
                if bytes >= CHUNK_BYTES && !send(&mut chunk, &mut bytes) {
                    return Ok(());
                }
            }
        }
        if !full {
            break;
        }
    }
    if !chunk.is_empty() {
        send(&mut chunk, &mut bytes);
    }
    Ok(())
}

/// Where the reading of one path's whole history stands: each step starts
/// at the time of the last event read and skips the events read before
/// (several may share a time).
struct HistorySteps {
    last: Option<(Version, Digest)>,
    step: usize,
    cap: usize,
    done: bool,
}

impl HistorySteps {
    fn new() -> HistorySteps {
        HistorySteps {
            last: None,
            step: HISTORY_STEP,
            cap: CHUNK_BYTES,
            done: false,
        }
    }

    /// The next step's range, `None` once the history is read.
    fn next_range(&self) -> Option<HistoryRange> {
        (!self.done).then(|| HistoryRange {
            from: self.last.as_ref().map_or(0, |(v, _)| v.time),
            to: u64::MAX,
            limit: self.step,
        })
    }

    /// Takes what a step read (`more`: it stopped at its limit or its byte
    /// bound, so more may follow) and gives the events not read before.
    fn took(&mut self, read: Vec<Stored>, more: bool) -> Vec<Stored> {
        self.done = !more;
        let fresh: Vec<Stored> = read
            .into_iter()
            .filter(|s| {
                self.last
                    .as_ref()
                    .is_none_or(|l| (&s.event.version, &s.digest) > (&l.0, &l.1))
            })
            .collect();
        match fresh.last() {
            Some(s) => self.last = Some((s.event.version.clone(), s.digest)),
            // A full step of events all read before (many, or big ones, at
            // one time): read wider.
            None if more => {
                self.step = self.step.saturating_mul(2);
                self.cap = self.cap.saturating_mul(2);
            }
            None => {}
        }
        fresh
    }
}

/// Every event of `path`, oldest first, read from `store` a step at a
/// time ([`HistorySteps`]).
fn path_history<'a>(
    store: &'a dyn Store,
    path: &'a Path,
) -> impl Iterator<Item = Result<Stored, NodeError>> + 'a {
    let mut steps = HistorySteps::new();
    let mut ready: std::vec::IntoIter<Stored> = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(s) = ready.next() {
            return Some(Ok(s));
        }
        let range = steps.next_range()?;
        let read = match store.history_within(path, range.from, range.to, range.limit, steps.cap) {
            Ok(read) => read,
            Err(e) => {
                steps.done = true;
                return Some(Err(e.into()));
            }
        };
        let bytes: usize = read
            .iter()
            .map(|s| s.event.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        let more = read.len() == range.limit || bytes >= steps.cap;
        ready = steps.took(read, more).into_iter();
    })
}

/// [`export_into`] for a node that does not hold every partition under
/// `prefix`: the paths are listed across the cluster and each history read
/// where it is held ([`Node::read_paths`], [`Node::read_history`]), the
/// first steps of [`PATHS_AT_ONCE`] paths at once.
async fn export_across(
    node: &Node,
    prefix: &Path,
    tx: &mpsc::Sender<Result<Vec<Stored>, NodeError>>,
) -> Result<(), NodeError> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut after: Option<String> = None;
    loop {
        let page = node.read_paths(prefix, after.take(), SCAN_PATHS).await?;
        for window in page.entries.chunks(PATHS_AT_ONCE) {
            let first_steps = window.iter().map(|entry| async move {
                let mut steps = HistorySteps::new();
                let range = steps.next_range().expect("a first step");
                let (read, cut) = node.read_history(&entry.path, range, None).await?;
                let more = read.len() == range.limit || cut;
                let fresh = steps.took(read, more);
                Ok::<_, NodeError>((steps, fresh))
            });
            for (entry, first) in window.iter().zip(join_all(first_steps).await) {
                let (mut steps, mut fresh) = first?;
                loop {
                    for stored in fresh {
                        bytes += 128 + stored.event.value.as_ref().map_or(0, |v| v.len());
                        chunk.push(stored);
                    }
                    if bytes >= CHUNK_BYTES {
                        bytes = 0;
                        if tx.send(Ok(std::mem::take(&mut chunk))).await.is_err() {
                            return Ok(());
                        }
                    }
                    let Some(range) = steps.next_range() else {
                        break;
                    };
                    let after = steps.last.clone();
                    let (read, cut) = node.read_history(&entry.path, range, after).await?;
                    let more = read.len() == range.limit || cut;
                    fresh = steps.took(read, more);
                    // Each step starts after the last event read: one that
                    // brings nothing new yet says "more" would never end.
                    if fresh.is_empty() && more {
                        return Err(NodeError::Store(crate::store::StoreError::Failed(format!(
                            "the history of '{}' did not move on past {:?}",
                            entry.path, steps.last
                        ))));
                    }
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk)).await;
    }
    Ok(())
}
