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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::engine::committer::{CommitRequest, PendingWrite, WriteDone};
use crate::error::NodeError;
use crate::model::{
    decide, version::wall_micros, Applied, Clock, Digest, Event, NodeId, Path, Version,
};
use crate::store::{Store, StoreError};

mod drop;
mod inbox;
mod prefetch;
mod write;

pub(crate) use drop::DropAll;
pub use inbox::Apply;
pub(crate) use inbox::{Inbox, Wake};
pub use write::{Input, Precondition, Write, WriteReport, WriteStatus};

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

struct Queued {
    input: Input,
    /// Its event's version and digest, when they are known before it is
    /// decided (a merge, or a write with an explicit time): hashed once,
    /// when the write is taken from the inbox.
    fixed: Option<(Version, Digest)>,
    reply: oneshot::Sender<Result<WriteReport, NodeError>>,
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
    /// The events this batch writes.
    events: Vec<EventKey>,
}

/// An event as history knows it: path, version, content digest.
type EventKey = (Path, Version, Digest);

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
    /// Events decided by batches still in flight, and their batch: the
    /// same event merged again before its batch is committed (a peer's push
    /// and this node's fetch of it) is `existing`, not a second log entry —
    /// also when a newer value overtook it meanwhile.
    pending_events: HashMap<EventKey, u64>,
    /// Events committed lately, with the number of the settle that
    /// committed them: a history look-up prefetched before their batch
    /// settled says they are not there yet. When it holds
    /// [`MAX_KNOWN_PATHS`], it keeps only what settled since the oldest
    /// look-up still to be used was prefetched.
    recent_events: HashMap<EventKey, u64>,
    /// Settles so far.
    settles: u64,
    /// `settles` when the look-ups not yet used were prefetched.
    pub(super) looked_up_at: Option<u64>,
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
    /// A drop of the whole partition is under way: nothing is decided
    /// until it is done (see `drop`).
    dropping: bool,
    /// Drops so far: a prefetch begun before one is not used after it.
    drops: u64,
    /// Batches numbered below this were decided before the last drop:
    /// when they settle, the partition learns nothing from them.
    forget_before: u64,
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
            pending_events: HashMap::new(),
            recent_events: HashMap::new(),
            settles: 0,
            looked_up_at: None,
            known: HashMap::new(),
            in_flight: Vec::with_capacity(MAX_BATCHES_IN_FLIGHT),
            next_batch: 0,
            epoch: 0,
            dropping: false,
            drops: 0,
            forget_before: 0,
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
            // (A delete has nothing to expire: a tombstone with an expiry
            // time is an expiry, see `node::expiry`.)
            expires_at: write
                .ttl_secs
                .filter(|_| write.value.is_some())
                .map(|s| time.saturating_add(s.saturating_mul(1_000_000))),
            value: write.value.clone(),
            content_type: write.content_type.clone(),
            author: write.author.clone(),
        }
    }

    /// The version and digest of `input`'s event, when they do not depend
    /// on the moment it is decided.
    fn fixed_key(&self, input: &Input) -> Option<(Version, Digest)> {
        let event = match input {
            Input::Write(w) => &self.event_of(w.path.clone()?, w, w.time?),
            Input::Merge(e) => e,
        };
        Some((event.version.clone(), event.digest()))
    }

    /// Takes writes from the inbox while the queue has room, decides what
    /// can be decided, and tells writers to wake it when it goes idle.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            while self.queue.len() < MAX_QUEUED_WRITES {
                match self.inbox.try_recv() {
                    Ok(apply) => self.queue.push_back(Queued {
                        fixed: self.fixed_key(&apply.input),
                        input: apply.input,
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
    /// path (the store, overlaid with what batches in flight will write);
    /// `fixed` is its event's version and digest when already known.
    fn decide_one(
        &mut self,
        input: Input,
        fixed: Option<(Version, Digest)>,
        batch: u64,
        now: u64,
    ) -> Result<(WriteReport, Option<PendingWrite>), NodeError> {
        // Stamp a client's write (a version from the clock unless it gave a
        // time); take a foreign event's version as it is.
        let (event, precondition) = match input {
            Input::Write(write) => {
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
                (self.event_of(path, &write, time), write.precondition)
            }
            Input::Merge(event) => {
                self.clock.observe(event.version.time);
                (event, Precondition::None)
            }
        };
        let path = event.path.clone();
        let current = self.current(&path)?;
        let live = current.as_ref().filter(|c| c.live_at(now));
        match &precondition {
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
        let digest = fixed.map_or_else(|| event.digest(), |(_, digest)| digest);
        // An older event is looked up in history (prefetched, see
        // `reads_for`); a failed look-up fails the write rather than guess.
        let mut lookup_failed = None;
        let looked_up = &self.looked_up;
        let pending_events = &self.pending_events;
        let recent_events = &self.recent_events;
        let store = &self.store;
        let applied = decide(
            current.as_ref().map(|c| (&c.version, &c.digest)),
            (&event.version, &digest),
            || {
                let key = (path.clone(), event.version.clone(), digest);
                if pending_events.contains_key(&key) || recent_events.contains_key(&key) {
                    return true;
                }
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
            digest: Some(digest),
            previous: None,
            current: None,
            seq: None,
            subscribers: 0,
            peers: 0,
            acked: 1,
            of: 1,
        };
        let pending = match applied {
            Applied::New { previous } => {
                report.previous = previous;
                self.pending_events
                    .insert((path.clone(), event.version.clone(), digest), batch);
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
                // Older than what compaction keeps of the path: it is not
                // stored (a replica that has not compacted yet, or an
                // import, must not bring back what was dropped).
                // (Older than every event it dropped, it is kept: what stood
                // then is still known here, and a later sweep drops it too.)
                if self
                    .store
                    .compacted_span(&path)?
                    .is_some_and(|(from, floor)| {
                        from <= event.version.time && event.version.time < floor
                    })
                {
                    return Ok((report, None));
                }
                self.pending_events
                    .insert((path.clone(), event.version.clone(), digest), batch);
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
            if self.loading || self.dropping {
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
                events: Vec::new(),
            };
            let now = wall_micros();
            let mut writes = Vec::new();
            let mut decided = Vec::with_capacity(batch.len());
            for q in batch {
                match self.decide_one(q.input, q.fixed, number, now) {
                    Ok((report, pending)) => {
                        let written = pending.map(|p| {
                            if p.latest {
                                sent.paths.push(p.event.path.clone());
                            }
                            sent.events.push((
                                p.event.path.clone(),
                                p.event.version.clone(),
                                p.digest,
                            ));
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
            self.looked_up_at = None;
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
                drop: false,
            };
            if let Err(refused) = self.committer.send(request) {
                refuse(refused.0.replies, || NodeError::ShuttingDown);
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
            && !self.dropping
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
        if sent.batch < self.forget_before {
            // Decided before a drop: what it wrote is gone, and the drop
            // emptied the overlay.
            return;
        }
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
            // In history now: the store answers for them, except to a
            // look-up prefetched before now.
            self.settles += 1;
            if self.recent_events.len() >= MAX_KNOWN_PATHS {
                match self.looked_up_at {
                    None => self.recent_events.clear(),
                    Some(at) => self.recent_events.retain(|_, settled| *settled >= at),
                }
            }
            for key in sent.events {
                if self.pending_events.get(&key) == Some(&sent.batch) {
                    self.pending_events.remove(&key);
                }
                self.recent_events.insert(key, self.settles);
            }
        } else if sent.epoch == self.epoch {
            self.pending.clear();
            self.pending_events.clear();
            self.recent_events.clear();
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

/// Answers every writer of a committed batch: `done` tells what became of
/// each event it wrote.
pub(crate) fn finish(decided: Vec<Decided>, done: &[WriteDone]) {
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

/// Answers every writer of a batch that was not committed with `error`.
pub(crate) fn refuse(decided: Vec<Decided>, error: impl Fn() -> NodeError) {
    for d in decided {
        let _ = d.reply.send(Err(error()));
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
