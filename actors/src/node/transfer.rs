//! Export and import: every event under a prefix, history included, read
//! out in path order a bounded chunk at a time; and events merged back by
//! the LWW rule, so importing into a fresh node reproduces latest values,
//! versions and histories, and importing twice changes nothing.

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::Node;
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
/// Merges of an import in flight at once.
const MERGES_IN_FLIGHT: usize = 64;

/// The events of an export, a chunk at a time, in path order and, for each
/// path, oldest first. Dropping it stops the reading.
pub type ExportStream = mpsc::Receiver<Result<Vec<Stored>, NodeError>>;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Events that became their path's value.
    pub new: usize,
    /// Events already held (importing again changes nothing).
    pub existing: usize,
    /// Events older than their path's value: kept in history.
    pub too_late: usize,
}

impl Node {
    /// Every event under `prefix`, history included ([`ExportStream`]).
    /// Reads this node's store: in a cluster, run it at a node that holds
    /// the prefix ([`Node::holds`]).
    pub fn export(&self, prefix: &Path) -> Result<ExportStream, NodeError> {
        self.holds(prefix)?;
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
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
    /// first: if one is refused, none is merged. In a cluster, the node
    /// must hold the partition of every path ([`NodeError::NotHeld`]); the
    /// owners' replication carries the events on.
    pub async fn import(&self, events: Vec<Event>) -> Result<ImportReport, NodeError> {
        let limit =
            wall_micros().saturating_add(self.inner.config.max_future_skew.as_micros() as u64);
        for event in &events {
            super::check_fields(
                event.content_type.as_deref(),
                event.author.as_deref(),
                event.value.as_ref(),
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
            self.holds(&event.path)?;
        }
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

/// Every event of `path`, oldest first, read a step at a time: a step
/// starts at the time of the last event read, skipping those already read.
fn path_history<'a>(
    store: &'a dyn Store,
    path: &'a Path,
) -> impl Iterator<Item = Result<Stored, NodeError>> + 'a {
    let mut last: Option<(Version, Digest)> = None;
    let mut step = HISTORY_STEP;
    let mut cap = CHUNK_BYTES;
    let mut ready: std::vec::IntoIter<Stored> = Vec::new().into_iter();
    let mut done = false;
    std::iter::from_fn(move || loop {
        if let Some(s) = ready.next() {
            last = Some((s.event.version.clone(), s.digest));
            return Some(Ok(s));
        }
        if done {
            return None;
        }
        let from = last.as_ref().map_or(0, |(v, _)| v.time);
        let read = match store.history_within(path, from, u64::MAX, step, cap) {
            Ok(read) => read,
            Err(e) => {
                done = true;
                return Some(Err(e.into()));
            }
        };
        let bytes: usize = read
            .iter()
            .map(|s| s.event.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        done = read.len() < step && bytes < cap;
        let fresh: Vec<Stored> = read
            .into_iter()
            .filter(|s| {
                last.as_ref()
                    .is_none_or(|l| (&s.event.version, &s.digest) > (&l.0, &l.1))
            })
            .collect();
        // A full step of events all read before (many, or big ones, at one
        // time): read wider.
        if fresh.is_empty() && !done {
            step = step.saturating_mul(2);
            cap = cap.saturating_mul(2);
        }
        ready = fresh.into_iter();
    })
}
