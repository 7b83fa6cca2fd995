//! The committer: the one writer of the store and keeper of the change log.
//!
//! Partitions decide *what* to write (LWW, preconditions); the committer
//! decides *when*: it takes every commit request waiting, assigns each
//! event the next node-local seq, applies them as one commit (which
//! a crash cannot tear), makes it as durable as configured, and only then
//! hands the changes to the [`Hub`](crate::engine::hub::Hub) in seq order,
//! from its own thread, then answers the writers. One
//! thread, one commit at a time: seqs are gap-free and streams see changes
//! in log order, so a resume cursor is an exact position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::Durability;
use crate::engine::hub::{Change, Hub};
use crate::engine::partition::{finish, refuse, Decided};
use crate::error::NodeError;
use crate::model::{Clock, Digest, Event};
use crate::store::{Commit, CommitEntry, Store, StoreError};

/// Most events gathered into one batch.
const MAX_BATCH_EVENTS: usize = 4096;

/// One event a partition wants written.
pub(crate) struct PendingWrite {
    pub event: Arc<Event>,
    pub digest: Digest,
    /// True when it becomes the latest value; false for history only.
    pub latest: bool,
}

/// What became of one written event.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteDone {
    /// Its seq in the change log.
    pub seq: Option<u64>,
    /// Local subscribers it was handed to.
    pub subscribers: usize,
}

/// A partition's batch. Once durable and fanned out, the committer tells
/// the partition through `done` whether the batch was committed, then
/// answers each writer directly (one thread hop less than going back
/// through the partition). The partition looks at `done` the next time it
/// runs.
pub(crate) struct CommitRequest {
    /// The partition that decided it.
    pub partition: u32,
    /// The partition's count of failures it knew of when deciding it: a
    /// batch after a failed one of the same epoch may rest on it, and fails.
    pub epoch: u64,
    pub writes: Vec<PendingWrite>,
    pub replies: Vec<Decided>,
    pub done: oneshot::Sender<bool>,
    /// Drop the partition whole instead (`writes` and `replies` are
    /// empty): after the batches sent before it, before those after.
    pub drop: bool,
}

/// The committer's settings and state.
pub(crate) struct Committer {
    pub store: Arc<dyn Store>,
    /// Tells the merkle trees' folder what to fold, and how far the log
    /// may be trimmed.
    pub marks: Arc<crate::merkle::maintain::Marks>,
    pub clock: Arc<Clock>,
    pub hub: Arc<Hub>,
    /// Every commit's events, for the cluster's replicator.
    pub tap: Arc<crate::engine::tap::Tap>,
    pub incarnation: Arc<str>,
    pub durability: Durability,
    pub batch_interval: Duration,
    pub lazy_flush_interval: Duration,
    pub log_retention: u64,
    /// Last seq assigned.
    pub head: u64,
    /// Per partition, the epoch of its last failed batch: later batches of
    /// that epoch fail too.
    pub failed: HashMap<u32, u64>,
    /// Set once a flush failed: what was applied may not be on
    /// disk, so no later write is acked until the node restarts (a later
    /// fsync could succeed over lost pages and make a lost write look
    /// durable). Every later batch fails with this reason. (A commit that
    /// fails partway is refused by the store itself, see `Store::commit`.)
    pub broken: Option<String>,
    /// Shared with the node: true once `broken` is set (for metrics).
    pub store_failed: Arc<AtomicBool>,
    /// Shared with the node: the last seq known to be on disk (flushed).
    pub durable: Arc<AtomicU64>,
    /// History compaction and the reclaiming of expired values, run
    /// between commits (`None`: none at all).
    pub compaction: Option<crate::engine::compaction::Compaction>,
}

impl Committer {
    /// Runs until every sender is gone, then makes everything durable.
    pub fn run(mut self, requests: Receiver<CommitRequest>) {
        let mut last_flush = Instant::now();
        // `lazy`: something was committed since the last flush.
        let mut unflushed = false;
        // A request taken while looking whether compaction may run.
        let mut stashed: Option<CommitRequest> = None;
        loop {
            // `lazy` with something unflushed waits no longer than the flush
            // is due, so a write followed by silence is flushed in time too.
            let flush_due = unflushed.then(|| last_flush + self.lazy_flush_interval);
            let compaction_due = self.compaction.as_ref().map(|c| c.due());
            let next = match (
                stashed.take(),
                flush_due.into_iter().chain(compaction_due).min(),
            ) {
                (Some(r), _) => Ok(r),
                (None, Some(due)) => {
                    requests.recv_timeout(due.saturating_duration_since(Instant::now()))
                }
                (None, None) => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let first = match next {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    if flush_due.is_some_and(|due| due <= Instant::now()) {
                        self.lazy_flush();
                        unflushed = false;
                        last_flush = Instant::now();
                    }
                    self.compact_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            let mut events = group[0].writes.len();
            if self.durability == Durability::Batch {
                // At most one fsync per interval: a write after a quiet spell
                // is flushed at once; under load, writes gather until the
                // interval since the last fsync is over.
                let deadline = last_flush + self.batch_interval;
                while events < MAX_BATCH_EVENTS {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match requests.recv_timeout(left) {
                        Ok(r) => {
                            events += r.writes.len();
                            group.push(r);
                        }
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            while events < MAX_BATCH_EVENTS {
                match requests.try_recv() {
                    Ok(r) => {
                        events += r.writes.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.durability == Durability::Batch {
                last_flush = Instant::now();
            }
            self.commit_group(group);
            // Writes first: compaction runs when no write waits (or when it
            // has waited too long for a quiet moment).
            match requests.try_recv() {
                Ok(r) => {
                    stashed = Some(r);
                    if self.compaction.as_ref().is_some_and(|c| c.starved()) {
                        self.compact_if_due();
                    }
                }
                Err(_) => self.compact_if_due(),
            }
            if self.durability == Durability::Lazy && self.broken.is_none() {
                unflushed = last_flush.elapsed() < self.lazy_flush_interval;
                if !unflushed {
                    self.lazy_flush();
                    last_flush = Instant::now();
                }
            }
        }
        match self.store.flush() {
            Ok(()) => self.durable.store(self.head, Ordering::Relaxed),
            Err(e) => log::error!("final flush failed: {e}"),
        }
    }

    /// One bounded step of compaction, when one is due (never once the
    /// store is broken).
    fn compact_if_due(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if let Some(compaction) = &mut self.compaction {
            if compaction.due() <= Instant::now() {
                compaction.step(&*self.store, &self.marks);
            }
        }
    }

    /// `lazy`'s periodic flush of everything committed.
    fn lazy_flush(&mut self) {
        match self.store.flush() {
            Ok(()) => self.durable.store(self.head, Ordering::Relaxed),
            Err(e) => self.break_down(format!("a background flush failed: {e}")),
        }
    }

    /// Fails the batches that may rest on a failed batch of their partition.
    fn drop_dependents(&mut self, group: Vec<CommitRequest>) -> Vec<CommitRequest> {
        if self.failed.is_empty() {
            return group;
        }
        let mut kept = Vec::with_capacity(group.len());
        for request in group {
            if self.failed.get(&request.partition) == Some(&request.epoch) {
                fail(
                    request,
                    "an earlier write of this partition failed to commit",
                );
                continue;
            }
            kept.push(request);
        }
        kept
    }

    /// Refuses every later write: the store may have lost what was applied.
    fn break_down(&mut self, reason: String) {
        if self.broken.is_none() {
            log::error!("{reason}; every later write is refused until the node restarts");
            self.broken = Some(reason);
            self.store_failed.store(true, Ordering::Relaxed);
        }
    }

    /// Commits a group of batches, and runs the drops among them in
    /// their place.
    fn commit_group(&mut self, group: Vec<CommitRequest>) {
        if !group.iter().any(|r| r.drop) {
            return self.commit_writes(group);
        }
        let mut run = Vec::with_capacity(group.len());
        for request in group {
            if request.drop {
                self.commit_writes(std::mem::take(&mut run));
                self.drop_partition(request);
            } else {
                run.push(request);
            }
        }
        self.commit_writes(run);
    }

    /// Drops a partition whole (see `Store::drop_partition`) while the
    /// merkle trees' folder keeps off it, then flushes, so that a crash
    /// does not bring part of it back.
    fn drop_partition(&mut self, request: CommitRequest) {
        if let Some(reason) = &self.broken {
            let detail = format!("{reason}; writes are refused until the node restarts");
            return fail(request, &detail);
        }
        let part = request.partition as u16;
        let head = self.head;
        let store = &self.store;
        let dropped = self
            .marks
            .dropping(part, head, || store.drop_partition(part, head));
        if let Err(e) = dropped {
            // Dropping again finishes it.
            log::error!("dropping partition {part}: {e}");
            let _ = request.done.send(false);
            return;
        }
        match self.store.flush() {
            Ok(()) => {
                self.durable.store(self.head, Ordering::Relaxed);
                let _ = request.done.send(true);
            }
            Err(e) => {
                self.break_down(format!(
                    "a flush after dropping partition {part} failed: {e}"
                ));
                let _ = request.done.send(false);
            }
        }
    }

    fn commit_writes(&mut self, group: Vec<CommitRequest>) {
        if let Some(reason) = &self.broken {
            let detail = format!("{reason}; writes are refused until the node restarts");
            for request in group {
                fail(request, &detail);
            }
            return;
        }
        let group = self.drop_dependents(group);
        if group.is_empty() {
            return;
        }
        let mut seq = self.head;
        let mut commit = Commit::default();
        let mut changes = Vec::with_capacity(group.len());
        for request in &group {
            let mut items = Vec::with_capacity(request.writes.len());
            for w in &request.writes {
                // Every event gets a seq, a late one too: whoever follows
                // the log sees every event. Only a new latest value is a
                // change for the sessions.
                seq += 1;
                commit.entries.push(CommitEntry {
                    event: w.event.clone(),
                    digest: w.digest,
                    seq,
                    late: !w.latest,
                });
                let change = w
                    .latest
                    .then(|| Arc::new(Change::new(w.event.clone(), seq, &self.incarnation)));
                items.push((seq, change));
            }
            changes.push(items);
        }
        commit.head_seq = seq;
        commit.clock = self.clock.last();
        // Entries older than the retention may go, once the merkle trees
        // have them; the store trims a few partitions' tails per commit, in
        // bounded steps.
        let kept_from = (seq + 1)
            .saturating_sub(self.log_retention)
            .min(self.marks.safe_trim());
        commit.trim_below = (kept_from > 1).then_some(kept_from);
        // The trees' folder learns of the entries before they are written.
        let layout = self.store.layout();
        for entry in &commit.entries {
            self.marks
                .mark(layout.partition_of(&entry.event.path), entry.seq);
        }
        if let Err(e) = self.store.commit(&commit) {
            // Part of it may be written (the store completes it when it is
            // next opened, and refuses further commits until then): its
            // writers are told it failed, like any write whose outcome is
            // unknown, and the batches built on it fail too.
            log::error!("commit of {} events failed: {e}", commit.entries.len());
            let detail = e.to_string();
            for request in group {
                self.failed.insert(request.partition, request.epoch);
                fail(request, &detail);
            }
            return;
        }
        self.head = seq;
        self.marks.committed(seq);
        // Applied and visible: fan out even if the flush fails, so streams
        // agree with the store, but then tell the writers their write is not
        // known to be durable, and refuse every later write: a later fsync
        // could succeed over pages this one lost.
        let flushed = match self.durability {
            Durability::Flush | Durability::Batch => self.store.flush(),
            Durability::Lazy => Ok(()),
        };
        if flushed.is_ok() && self.durability != Durability::Lazy {
            self.durable.store(seq, Ordering::Relaxed);
        }
        let failure = flushed.err().map(|e| {
            self.break_down(format!(
                "a flush of {} events failed: {e}",
                commit.entries.len()
            ));
            e.to_string()
        });
        // Straight into the sessions' mailboxes, from this thread.
        let reached = self.hub.publish(
            changes
                .iter()
                .flat_map(|items| items.iter().map(|(_, change)| change.as_ref())),
            seq,
        );
        if self.tap.attached() {
            let entries = group
                .iter()
                .flat_map(|request| {
                    let part = request.partition as u16;
                    request.writes.iter().map(move |w| (part, w.event.clone()))
                })
                .zip(commit.entries.iter().map(|e| e.seq))
                .map(|((part, event), seq)| (seq, part, event))
                .collect();
            self.tap.send(entries);
        }
        let mut reached = reached.into_iter();
        for (request, items) in group.into_iter().zip(changes) {
            let done: Vec<WriteDone> = items
                .iter()
                .map(|(seq, _)| WriteDone {
                    seq: Some(*seq),
                    subscribers: reached.next().unwrap_or(0),
                })
                .collect();
            self.answer(request.done, request.replies, &done, failure.as_deref());
        }
    }

    /// Answers the writers of a committed batch with their local outcome,
    /// once it is as durable as configured and handed to local subscribers
    /// (`failure`: applied, but the flush failed); a write that waits for
    /// other owners' acks then waits in `Acks` (see `Node::write`). The partition
    /// is told first, so a writer that writes again at once is decided by a
    /// partition that already knows how this batch ended.
    fn answer(
        &self,
        done: oneshot::Sender<bool>,
        replies: Vec<Decided>,
        written: &[WriteDone],
        failure: Option<&str>,
    ) {
        // Applied (even when not durable): the partition's overlay holds.
        let _ = done.send(true);
        match failure {
            None => finish(replies, written),
            Some(detail) => refuse(replies, || store_failure(detail)),
        }
    }
}

/// Tells a batch's partition, then its writers, that it was not committed.
fn fail(request: CommitRequest, detail: &str) {
    let _ = request.done.send(false);
    refuse(request.replies, || store_failure(detail));
}

/// The error a writer gets when its write is not known to be stored.
fn store_failure(detail: &str) -> NodeError {
    NodeError::Store(StoreError::Failed(detail.to_string()))
}
