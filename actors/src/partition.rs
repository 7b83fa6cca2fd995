//! `Partition`: the canonical state of one slice of the topic space.
//!
//! Every write of a path goes through the partition that owns it, which makes
//! the LWW and precondition decisions one batch at a time. Batches are
//! pipelined: while earlier batches are being committed, the next one is
//! decided against the store *plus* what those batches will write (the
//! `pending` overlay), and handed to the committer at once, so a write waits
//! for at most the commit it joins, not for the one before it as well. A hot
//! path still gets group commit. The committed versions of recently written
//! paths are remembered (`known`), so a hot path is decided without a store
//! read. A batch's end is noticed the next time the partition runs, so the
//! end of a commit wakes the partition's thread only when writes wait for a
//! free slot.
//!
//! Writes reach a partition through its *inbox*, a bounded channel the
//! partition drains only while its queue has room: when its batch slots are
//! all in flight and its queue is full, the inbox fills and writers wait for
//! room (backpressure), so what one partition holds is bounded whatever the
//! writers do. A write of a path whose current event the partition does not
//! know is decided only after that event was read on a blocking thread
//! (`prefetch`): a cold read never holds the one thread all partitions share.
//!
//! Should a commit fail, every later batch of the partition that may rest on
//! it fails as well, so no decision rests on a write that did not happen. The
//! partition counts *epochs*: when it learns of a failure it forgets its
//! overlay and starts a new epoch; the committer fails the batches of the
//! failed batch's epoch that come after it (they were decided before the
//! partition knew) and lets the next epoch through. Reads never come here: they
//! go straight to the store.
//!
//! Later issues add the partition's merkle tree and replication here.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::committer::{CommitRequest, PendingWrite, WriteDone};
use crate::error::NodeError;
use crate::model::{
    decide, version::wall_micros, Applied, Clock, Digest, Event, NodeId, Path, Version,
};
use crate::store::{Store, StoreError};

/// Most writes decided in one batch.
const MAX_WRITES_PER_BATCH: usize = 1024;
/// Most batches of one partition handed to the committer and not yet settled.
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Most paths whose committed current event a partition remembers.
const MAX_KNOWN_PATHS: usize = 1024;
/// Most writes a partition takes from its inbox before they are decided.
pub(crate) const MAX_QUEUED_WRITES: usize = 2 * MAX_WRITES_PER_BATCH;
/// Writes an inbox holds; a writer finding it full waits for room.
pub(crate) const INBOX_WRITES: usize = 4 * MAX_WRITES_PER_BATCH;

/// A condition a write must meet against the path's current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Always write.
    #[default]
    None,
    /// Write only if this is the current live version (`If-Match`).
    IfMatch(Version),
    /// Write only if the path has no live value (`If-None-Match: *`).
    IfAbsent,
    /// Write only if the path has a live value (`If-Match: *`).
    IfPresent,
}

/// A write request: a value (or a delete) for one path.
#[derive(Clone, Debug, Default)]
pub struct Write {
    /// The path (not the root).
    pub path: Option<Path>,
    /// The value; `None` deletes.
    pub value: Option<Bytes>,
    /// Media type to store with the value.
    pub content_type: Option<Arc<str>>,
    /// Explicit event time (µs); the node's clock is used when `None`.
    pub time: Option<u64>,
    /// Seconds the value lives.
    pub ttl_secs: Option<u64>,
    /// Who writes (token subject).
    pub author: Option<Arc<str>>,
    /// Condition on the current value.
    pub precondition: Precondition,
}

impl Write {
    /// A write of `value` at `path`.
    pub fn set(path: Path, value: impl Into<Bytes>) -> Write {
        Write {
            path: Some(path),
            value: Some(value.into()),
            ..Write::default()
        }
    }

    /// A delete of `path`.
    pub fn delete(path: Path) -> Write {
        Write {
            path: Some(path),
            ..Write::default()
        }
    }
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    /// It became the value.
    New,
    /// That exact event was already applied.
    Existing,
    /// A newer value stands; it was kept in history.
    TooLate,
}

/// What happened to a write, and how it propagated.
#[derive(Clone, Debug)]
pub struct WriteReport {
    /// The outcome.
    pub status: WriteStatus,
    /// True when the path had no live value before.
    pub created: bool,
    /// The path.
    pub path: Path,
    /// The write's version.
    pub version: Version,
    /// The version it replaced (for `New`).
    pub previous: Option<Version>,
    /// The version that stands (for `TooLate`).
    pub current: Option<Version>,
    /// Its seq in this node's change log (for `New`).
    pub seq: Option<u64>,
    /// Local subscribers it was handed to.
    pub subscribers: usize,
}

/// Applies one write; `reply` gets the report once the write is as durable
/// as configured (or the error). The answer travels on `reply` rather than
/// as a message's result so that the writer is woken once, by whoever
/// finishes the write. Sent through a partition's [`Inbox`].
pub struct Apply {
    /// The write.
    pub write: Write,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<WriteReport, NodeError>>,
}

/// Tells a partition its inbox has writes (sent only when it is idle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// The sending side of a partition: its bounded inbox, and its address to
/// wake it with.
#[derive(Clone)]
pub(crate) struct Inbox {
    writes: mpsc::Sender<Apply>,
    /// True while the partition will look at its inbox again by itself;
    /// a writer that sets it sends [`Wake`].
    scheduled: Arc<AtomicBool>,
    addr: Addr<Partition>,
}

impl Inbox {
    /// Hands a write to the partition, waiting for room when the inbox is
    /// full (counted in `waits` before waiting).
    pub(crate) async fn send(&self, apply: Apply, waits: &AtomicU64) -> Result<(), NodeError> {
        match self.writes.try_send(apply) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(apply)) => {
                waits.fetch_add(1, Ordering::Relaxed);
                self.writes
                    .send(apply)
                    .await
                    .map_err(|_| NodeError::ShuttingDown)?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(NodeError::ShuttingDown),
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.addr.do_send(Wake);
        }
        Ok(())
    }

    /// The partition's actor (tests).
    #[cfg(test)]
    pub(crate) fn actor(&self) -> &Addr<Partition> {
        &self.addr
    }
}

struct Queued {
    write: Write,
    reply: oneshot::Sender<Result<WriteReport, NodeError>>,
}

/// A store read a batch needs before it can be decided.
struct Read {
    path: Path,
    /// Also look this event up in the path's history, when it turns out to
    /// be older than the path's current event (an explicit time).
    lookup: Option<(Version, Digest)>,
}

/// What a [`Read`] found.
struct Found {
    path: Path,
    current: Result<Option<Current>, String>,
    /// The event looked up and whether history has it.
    known: Option<((Version, Digest), Result<bool, String>)>,
}
/// A decided write waiting for its batch to commit.
pub(crate) struct Decided {
    reply: oneshot::Sender<Result<WriteReport, NodeError>>,
    /// The answer if the batch commits: the report, or a refusal (such as a
    /// failed precondition) that may rest on batches still in flight.
    outcome: Result<WriteReport, NodeError>,
    /// Index of its event in the commit request, when it writes one.
    written: Option<usize>,
}

/// What the partition knows of a path's current event.
#[derive(Clone)]
struct Current {
    version: Version,
    digest: Digest,
    /// It holds a value (not a tombstone).
    present: bool,
    expires_at: Option<u64>,
}

impl Current {
    fn of(event: &Event, digest: Digest) -> Current {
        Current {
            version: event.version.clone(),
            digest,
            present: event.value.is_some(),
            expires_at: event.expires_at,
        }
    }

    /// Has a value at `now` (not deleted, not expired).
    fn live_at(&self, now: u64) -> bool {
        self.present && self.expires_at.is_none_or(|t| t > now)
    }
}

/// A decided latest value not yet known to be committed.
struct Pending {
    current: Current,
    /// The batch that writes it.
    batch: u64,
}

/// Where a batch handed to the committer stands, for [`Partition::settle`].
struct InFlight {
    batch: u64,
    epoch: u64,
    /// The paths whose `pending` entry this batch set: settling looks at
    /// these, not at every pending path.
    paths: Vec<Path>,
}

/// A batch handed to the committer and not yet settled.
struct InFlightBatch {
    sent: InFlight,
    /// Fires when the batch is done (true: committed). Looked at without
    /// waiting whenever the partition runs ([`Partition::retire`]); taken
    /// out (`None`) while a future waits on it because the partition cannot
    /// go on without a free slot.
    done: Option<oneshot::Receiver<bool>>,
}

/// The actor owning one partition.
pub struct Partition {
    index: u32,
    store: Arc<dyn Store>,
    clock: Arc<Clock>,
    node: NodeId,
    committer: Sender<CommitRequest>,
    max_future_skew: Duration,
    /// Writes sent to this partition, drained while `queue` has room.
    inbox: mpsc::Receiver<Apply>,
    /// Shared with the [`Inbox`]: set while the partition will look at the
    /// inbox again without being woken.
    scheduled: Arc<AtomicBool>,
    /// Writes taken from the inbox, not yet decided.
    queue: VecDeque<Queued>,
    /// Current events read for the batch about to be decided (a path
    /// absent from the store: `None`; a failed read: its error).
    prefetched: HashMap<Path, Result<Option<Current>, String>>,
    /// History look-ups made for the batch about to be decided.
    looked_up: HashMap<(Path, Version, Digest), Result<bool, String>>,
    /// A prefetch is running: no batch is decided until it is back.
    loading: bool,
    /// Latest values decided by batches still in flight, by path.
    pending: HashMap<Path, Pending>,
    /// Committed current events of recently written or read paths: only
    /// this partition writes its paths' latest values, so what it committed
    /// is what the store holds, and a hot path is decided without a store
    /// read. Bounded by [`MAX_KNOWN_PATHS`] (emptied when full).
    known: HashMap<Path, Current>,
    /// Batches handed to the committer and not yet settled, oldest first.
    /// A done batch is settled the next time the partition runs, so the
    /// commit's end does not wake this actor's thread unless a write is
    /// waiting for a slot.
    in_flight: Vec<InFlightBatch>,
    /// Number of the next batch.
    next_batch: u64,
    /// Failures of this partition's commits seen so far.
    epoch: u64,
    /// Writes decided so far (tests look at it).
    #[cfg(test)]
    decided: u64,
}

impl Partition {
    /// Starts partition `index` on `arbiter`, writing through `committer`;
    /// writes go to it through the returned inbox.
    pub(crate) fn start_on(
        arbiter: &ArbiterHandle,
        index: u32,
        store: Arc<dyn Store>,
        clock: Arc<Clock>,
        node: NodeId,
        committer: Sender<CommitRequest>,
        max_future_skew: Duration,
    ) -> Inbox {
        let (writes, inbox) = mpsc::channel(INBOX_WRITES);
        let scheduled = Arc::new(AtomicBool::new(false));
        let shared = scheduled.clone();
        let addr = Partition::start_in_arbiter(arbiter, move |_| Partition {
            index,
            store,
            clock,
            node,
            committer,
            max_future_skew,
            inbox,
            scheduled: shared,
            queue: VecDeque::new(),
            prefetched: HashMap::new(),
            looked_up: HashMap::new(),
            loading: false,
            pending: HashMap::new(),
            known: HashMap::new(),
            in_flight: Vec::with_capacity(MAX_BATCHES_IN_FLIGHT),
            next_batch: 0,
            epoch: 0,
            #[cfg(test)]
            decided: 0,
        });
        Inbox {
            writes,
            scheduled,
            addr,
        }
    }

    /// What the partition knows of `path`'s current event without reading
    /// the store: `None` when it must be read.
    fn known_current(&self, path: &Path) -> Option<Result<Option<Current>, String>> {
        if let Some(p) = self.pending.get(path) {
            return Some(Ok(Some(p.current.clone())));
        }
        if let Some(c) = self.known.get(path) {
            return Some(Ok(Some(c.clone())));
        }
        self.prefetched.get(path).cloned()
    }

    fn current(&mut self, path: &Path) -> Result<Option<Current>, NodeError> {
        match self.known_current(path) {
            Some(Ok(current)) => return Ok(current),
            Some(Err(e)) => return Err(StoreError::Failed(e).into()),
            None => {}
        }
        // Not prefetched (the batch's own writes moved what it needs): read
        // here, on the partitions' thread. Rare; see `reads_for`.
        let Some(stored) = self.store.latest(path)? else {
            return Ok(None);
        };
        let current = Current::of(&stored.event, stored.digest);
        remember(&mut self.known, path.clone(), current.clone());
        Ok(Some(current))
    }

    /// The event a write makes at `time`.
    fn event_of(&self, path: Path, write: &Write, time: u64) -> Event {
        Event {
            path,
            version: Version::new(time, self.node.clone()),
            expires_at: write
                .ttl_secs
                .map(|s| time.saturating_add(s.saturating_mul(1_000_000))),
            value: write.value.clone(),
            content_type: write.content_type.clone(),
            author: write.author.clone(),
        }
    }

    /// The store reads the first `take` queued writes need before they can
    /// be decided without touching the store: the current event of each
    /// path the partition does not know, and, for a write with an explicit
    /// time older than its path's current event, a look-up in history.
    /// (A write stamped by the clock is newer than anything the clock has
    /// seen, so it never needs one.) A write made older than the current
    /// event only by an earlier write of the same batch is looked up when
    /// it is decided, on this thread: the one case left.
    fn reads_for(&self, take: usize) -> Vec<Read> {
        let mut reads: Vec<Read> = Vec::new();
        for q in self.queue.iter().take(take) {
            let Some(path) = &q.write.path else { continue };
            let known = self.known_current(path);
            let lookup = q.write.time.and_then(|t| {
                let event = self.event_of(path.clone(), &q.write, t);
                let key = (event.version.clone(), event.digest());
                let older = match &known {
                    Some(Ok(Some(c))) => (&key.0, &key.1) < (&c.version, &c.digest),
                    Some(_) => false,
                    None => true, // decided once the current event is read
                };
                let done = self
                    .looked_up
                    .contains_key(&(path.clone(), key.0.clone(), key.1));
                (older && !done).then_some(key)
            });
            if known.is_some() && lookup.is_none() {
                continue;
            }
            match reads.iter_mut().find(|r| &r.path == path) {
                Some(r) if r.lookup.is_none() => r.lookup = lookup,
                Some(_) => {}
                None => reads.push(Read {
                    path: path.clone(),
                    lookup,
                }),
            }
        }
        reads
    }

    /// Reads what a batch needs on a blocking thread, then goes on deciding.
    fn prefetch(&mut self, reads: Vec<Read>, ctx: &mut Context<Self>) {
        self.loading = true;
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            reads
                .into_iter()
                .map(|r| read_one(&*store, r))
                .collect::<Vec<Found>>()
        });
        ctx.spawn(read.into_actor(self).map(|found, act, ctx| {
            act.loading = false;
            match found {
                Ok(found) => {
                    for f in found {
                        if let Some((key, known)) = f.known {
                            act.looked_up.insert((f.path.clone(), key.0, key.1), known);
                        }
                        act.prefetched.insert(f.path, f.current);
                    }
                }
                // The reading thread failed: the batch's writes read again
                // when decided, and fail on their own errors.
                Err(e) => log::error!("partition {}: a store read failed: {e}", act.index),
            }
            act.pump(ctx);
        }));
    }

    /// Takes writes from the inbox while the queue has room, decides what
    /// can be decided, and tells writers to wake it when it goes idle.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            while self.queue.len() < MAX_QUEUED_WRITES {
                match self.inbox.try_recv() {
                    Ok(apply) => self.queue.push_back(Queued {
                        write: apply.write,
                        reply: apply.reply,
                    }),
                    Err(_) => break,
                }
            }
            self.run_batch(ctx);
            // Writes left in the queue wait for a prefetch or a batch slot,
            // and whichever it is pumps again when it is done.
            if !self.queue.is_empty() {
                return;
            }
            self.scheduled.store(false, Ordering::Release);
            // A writer that found `scheduled` set before it was cleared sent
            // no wake-up: look once more.
            if self.inbox.is_empty() || self.scheduled.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Decides one write of batch `batch` against the current state of its
    /// path (the store, overlaid with what batches in flight will write).
    fn decide_one(
        &mut self,
        write: Write,
        batch: u64,
        now: u64,
    ) -> Result<(WriteReport, Option<PendingWrite>), NodeError> {
        let path = write.path.clone().ok_or(crate::model::PathError::Empty)?;
        let time = match write.time {
            Some(t) => {
                let limit = now.saturating_add(self.max_future_skew.as_micros() as u64);
                if t > limit {
                    return Err(NodeError::BadTime(format!(
                        "time {t} is more than {}s ahead of this node's clock",
                        self.max_future_skew.as_secs()
                    )));
                }
                self.clock.observe(t);
                t
            }
            None => self.clock.now(),
        };
        let current = self.current(&path)?;
        let live = current.as_ref().filter(|c| c.live_at(now));
        match &write.precondition {
            Precondition::None => {}
            Precondition::IfMatch(v) if live.is_some_and(|c| &c.version == v) => {}
            Precondition::IfAbsent if live.is_none() => {}
            Precondition::IfPresent if live.is_some() => {}
            _ => {
                return Err(NodeError::PreconditionFailed {
                    current: live.map(|c| c.version.clone()),
                })
            }
        }
        let event = self.event_of(path.clone(), &write, time);
        let digest = event.digest();
        // An older event is looked up in history (prefetched, see
        // `reads_for`); a failed look-up fails the write rather than guess.
        let mut lookup_failed = None;
        let looked_up = &self.looked_up;
        let store = &self.store;
        let applied = decide(
            current.as_ref().map(|c| (&c.version, &c.digest)),
            (&event.version, &digest),
            || {
                let key = (path.clone(), event.version.clone(), digest);
                let known = match looked_up.get(&key) {
                    Some(known) => known.clone().map_err(StoreError::Failed),
                    None => store.contains(&path, &event.version, &digest),
                };
                known.unwrap_or_else(|e| {
                    lookup_failed = Some(e);
                    false
                })
            },
        );
        if let Some(e) = lookup_failed {
            return Err(e.into());
        }
        let mut report = WriteReport {
            status: WriteStatus::New,
            created: live.is_none(),
            path: path.clone(),
            version: event.version.clone(),
            previous: None,
            current: None,
            seq: None,
            subscribers: 0,
        };
        let pending = match applied {
            Applied::New { previous } => {
                report.previous = previous;
                // The pending entry stands for the path until its batch is
                // done; what was known may be overtaken by any batch in flight.
                self.known.remove(&path);
                self.pending.insert(
                    path,
                    Pending {
                        current: Current::of(&event, digest),
                        batch,
                    },
                );
                Some(PendingWrite {
                    event: Arc::new(event),
                    digest,
                    latest: true,
                })
            }
            Applied::Existing => {
                report.status = WriteStatus::Existing;
                report.created = false;
                None
            }
            Applied::TooLate { current } => {
                report.status = WriteStatus::TooLate;
                report.created = false;
                report.current = Some(current);
                Some(PendingWrite {
                    event: Arc::new(event),
                    digest,
                    latest: false,
                })
            }
        };
        Ok((report, pending))
    }

    /// Decides the queued writes and sends them to the committer, as long as
    /// fewer than [`MAX_BATCHES_IN_FLIGHT`] of this partition's batches are
    /// waiting there.
    fn run_batch(&mut self, ctx: &mut Context<Self>) {
        self.retire();
        while self.in_flight.len() < MAX_BATCHES_IN_FLIGHT && !self.queue.is_empty() {
            if self.loading {
                return;
            }
            let take = self.queue.len().min(MAX_WRITES_PER_BATCH);
            let reads = self.reads_for(take);
            if !reads.is_empty() {
                return self.prefetch(reads, ctx);
            }
            let batch: Vec<Queued> = self.queue.drain(..take).collect();
            #[cfg(test)]
            {
                self.decided += batch.len() as u64;
            }
            let number = self.next_batch;
            self.next_batch += 1;
            let mut sent = InFlight {
                batch: number,
                epoch: self.epoch,
                paths: Vec::new(),
            };
            let now = wall_micros();
            let mut writes = Vec::new();
            let mut decided = Vec::with_capacity(batch.len());
            for q in batch {
                match self.decide_one(q.write, number, now) {
                    Ok((report, pending)) => {
                        let written = pending.map(|p| {
                            if p.latest {
                                sent.paths.push(p.event.path.clone());
                            }
                            writes.push(p);
                            writes.len() - 1
                        });
                        decided.push(Decided {
                            reply: q.reply,
                            outcome: Ok(report),
                            written,
                        });
                    }
                    // With nothing in flight a refusal rests on the store alone.
                    Err(e) if self.in_flight.is_empty() => {
                        let _ = q.reply.send(Err(e));
                    }
                    Err(e) => decided.push(Decided {
                        reply: q.reply,
                        outcome: Err(e),
                        written: None,
                    }),
                }
            }
            // What was read for this batch is in its decisions now.
            self.prefetched.clear();
            self.looked_up.clear();
            // Nothing to write and nothing in flight: the answers (`existing`)
            // rest on the store alone. With batches in flight they may rest on
            // those, so they wait behind them in the committer, and fail if
            // one does: no answer, `existing` or a refusal, ever rests on a
            // write that did not happen.
            if writes.is_empty() && self.in_flight.is_empty() {
                for d in decided {
                    let _ = d.reply.send(d.outcome);
                }
                continue;
            }
            let (done, committed) = oneshot::channel();
            let request = CommitRequest {
                partition: self.index,
                epoch: self.epoch,
                writes,
                replies: decided,
                done,
            };
            if let Err(refused) = self.committer.send(request) {
                finish(refused.0.replies, Err(NodeError::ShuttingDown));
                self.settle(sent, false);
                continue;
            }
            self.in_flight.push(InFlightBatch {
                sent,
                done: Some(committed),
            });
        }
        // Writes wait for a free slot: wake up when the oldest batch is done
        // (unless a future already waits on one).
        if !self.queue.is_empty()
            && !self.loading
            && self.in_flight.iter().all(|b| b.done.is_some())
        {
            if let Some(oldest) = self.in_flight.first_mut() {
                let batch = oldest.sent.batch;
                let done = oldest.done.take().expect("checked above");
                ctx.spawn(done.into_actor(self).map(move |result, act, ctx| {
                    if let Some(i) = act.in_flight.iter().position(|b| b.sent.batch == batch) {
                        let b = act.in_flight.remove(i);
                        act.settle(b.sent, result.unwrap_or(false));
                    }
                    act.pump(ctx);
                }));
            }
        }
    }

    /// Settles every batch in flight that is done, without waiting. A
    /// sender dropped without an answer counts as a failed commit.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.in_flight.len() {
            let result = match self.in_flight[i].done.as_mut().map(|d| d.try_recv()) {
                Some(Ok(committed)) => committed,
                Some(Err(oneshot::error::TryRecvError::Closed)) => false,
                Some(Err(oneshot::error::TryRecvError::Empty)) | None => {
                    i += 1;
                    continue;
                }
            };
            let b = self.in_flight.remove(i);
            self.settle(b.sent, result);
        }
    }

    /// Forgets what a batch decided once it is done: committed, the store
    /// has it. Failed in the current epoch: the committer fails every later
    /// batch of this epoch, so nothing pending is true any more; a new epoch
    /// starts from the store. (A failed batch of an older epoch was one of
    /// those: already accounted for.)
    fn settle(&mut self, sent: InFlight, committed: bool) {
        if committed {
            for path in sent.paths {
                // A later batch may have overtaken the entry: then it stays.
                if let Entry::Occupied(entry) = self.pending.entry(path) {
                    if entry.get().batch == sent.batch {
                        let (path, p) = entry.remove_entry();
                        remember(&mut self.known, path, p.current);
                    }
                }
            }
        } else if sent.epoch == self.epoch {
            self.pending.clear();
            self.epoch += 1;
        }
    }
}

/// Records a path's committed current event, emptying the map when full.
fn remember(known: &mut HashMap<Path, Current>, path: Path, current: Current) {
    if known.len() >= MAX_KNOWN_PATHS && !known.contains_key(&path) {
        known.clear();
    }
    known.insert(path, current);
}

/// Answers every writer of a committed batch.
pub(crate) fn finish(decided: Vec<Decided>, result: Result<Vec<WriteDone>, NodeError>) {
    match result {
        Ok(done) => {
            for d in decided {
                let answer = d.outcome.map(|mut report| {
                    if let Some(i) = d.written {
                        let w = done.get(i).copied().unwrap_or_default();
                        report.seq = w.seq;
                        report.subscribers = w.subscribers;
                    }
                    report
                });
                let _ = d.reply.send(answer);
            }
        }
        Err(e) => {
            let detail = e.to_string();
            for d in decided {
                let _ = d
                    .reply
                    .send(Err(NodeError::Store(crate::store::StoreError::Failed(
                        detail.clone(),
                    ))));
            }
        }
    }
}

/// Reads one path's current event (and looks one event up in its history)
/// on a blocking thread.
fn read_one(store: &dyn Store, read: Read) -> Found {
    let current = store
        .latest(&read.path)
        .map(|s| s.map(|s| Current::of(&s.event, s.digest)))
        .map_err(|e| e.to_string());
    let known = read.lookup.and_then(|key| {
        let older = match &current {
            Ok(Some(c)) => (&key.0, &key.1) < (&c.version, &c.digest),
            _ => false,
        };
        older.then(|| {
            let known = store
                .contains(&read.path, &key.0, &key.1)
                .map_err(|e| e.to_string());
            (key, known)
        })
    });
    Found {
        path: read.path,
        current,
        known,
    }
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        log::trace!("partition {} started", self.index);
    }
}

impl Handler<Wake> for Partition {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

/// Asks a partition how many of its batches are in flight, how many writes
/// wait for it (in its queue or inbox) and how many it has decided so far
/// (tests only).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "(usize, usize, u64)")]
pub(crate) struct Probe;

#[cfg(test)]
impl Handler<Probe> for Partition {
    type Result = MessageResult<Probe>;

    fn handle(&mut self, _: Probe, _: &mut Self::Context) -> Self::Result {
        let waiting = self.queue.len() + self.inbox.len();
        MessageResult((self.in_flight.len(), waiting, self.decided))
    }
}
