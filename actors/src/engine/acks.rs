//! Where a write's answer waits for acknowledgements beyond this node's own
//! commit: the cluster's `w` (API.md: `?w=1|quorum|all`).
//!
//! A write is answered by the future that asked for it ([`Node::write`]):
//! the committer hands it the local outcome once the commit is as durable
//! as configured and fanned out to local subscribers (the hub only fans
//! out). A write that asks for more ([`WaitFor`]) then waits here for that
//! many acknowledgements of its event — `(path, version)` — from other
//! owners ([`Node::ack`]), or until its timeout, when it fails with
//! [`NodeError::Unavailable`] naming how many acked. Each owner counts once,
//! however often it acknowledges (a stream resent after a reconnect is
//! merged and acknowledged again). An acknowledgement may
//! arrive before the writer starts waiting (a peer can be faster than the
//! local commit's answer): it is kept for a while and counted then. A write
//! found held already (`existing`, a retry) commits nothing, so nothing
//! brings acknowledgements of it: it waits for none, counting those heard
//! ([`Acks::heard_now`]), and the cluster's `route` asks the owners.
//!
//! [`Node::write`]: crate::Node::write
//! [`Node::ack`]: crate::Node::ack

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::engine::partition::WriteReport;
use crate::error::NodeError;
use crate::model::{Digest, Path, Version};

/// Most acknowledgements kept for writes that are not waiting (yet).
const MAX_EARLY_ACKS: usize = 65_536;

/// What a write waits for after its local commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitFor {
    /// Acknowledgements needed from other owners.
    pub acks: usize,
    /// Owners in all (this node included), for the report.
    pub of: usize,
    /// How long to wait for them.
    pub timeout: Duration,
}

/// The event an acknowledgement names: two writes with one explicit time
/// at one node share a version, and differ by their digest.
type Key = (Path, Version, Digest);

/// The writers of one event waiting for acknowledgements (a retry of the
/// same event may wait beside the first, for another count).
#[derive(Default)]
struct Waiter {
    /// The owners heard from.
    heard: Vec<Box<str>>,
    /// Writers still waiting: the acks each needs, and where to say so.
    pending: Vec<(usize, oneshot::Sender<usize>)>,
    /// Writers registered (answered or not), until each one leaves.
    writers: usize,
}

#[derive(Default)]
struct State {
    waiting: HashMap<Key, Waiter>,
    /// Acknowledgements of events nobody waits for yet, with the
    /// generation of their entry in `early_order`.
    early: HashMap<Key, (Vec<Box<str>>, u64)>,
    /// Early acknowledgements, oldest first, to bound their number.
    early_order: VecDeque<(Key, u64)>,
    generation: u64,
}

/// The writers waiting for acknowledgements, and acknowledgements waiting
/// for their writers.
#[derive(Default)]
pub(crate) struct Acks {
    state: Mutex<State>,
}

/// Adds `from` to the owners heard from; false if it was heard already.
fn hear(heard: &mut Vec<Box<str>>, from: &str) -> bool {
    if heard.iter().any(|h| &**h == from) {
        return false;
    }
    heard.push(Box::from(from));
    true
}

/// The event `report` names. (A report from a peer carries no digest; no
/// acknowledgement names the zero digest.)
fn key_of(report: &WriteReport) -> Key {
    (
        report.path.clone(),
        report.version.clone(),
        report.digest.unwrap_or_default(),
    )
}

/// Leaves the waiter of `key` when the writer's future ends, answered,
/// timed out or dropped (its client went away): nothing stays behind.
struct Leave<'a> {
    acks: &'a Acks,
    key: Key,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut state = self.acks.state();
        if let Some(waiter) = state.waiting.get_mut(&self.key) {
            waiter.writers -= 1;
            waiter.pending.retain(|(_, done)| !done.is_closed());
            if waiter.writers == 0 {
                state.waiting.remove(&self.key);
            }
        }
    }
}

impl Acks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts owner `from`'s acknowledgement of the event `(path,
    /// version, digest)` (once per owner); true if a writer was waiting
    /// for it.
    pub fn ack(&self, (path, version, digest): (&Path, &Version, Digest), from: &str) -> bool {
        let key = (path.clone(), version.clone(), digest);
        let mut state = self.state();
        if let Some(waiter) = state.waiting.get_mut(&key) {
            if !hear(&mut waiter.heard, from) {
                return true;
            }
            let heard = waiter.heard.len();
            let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(&mut waiter.pending)
                .into_iter()
                .partition(|(needed, _)| *needed <= heard);
            waiter.pending = still;
            for (_, done) in ready {
                // A writer gone meanwhile is harmless.
                let _ = done.send(heard);
            }
            return true;
        }
        let State {
            early,
            early_order,
            generation,
            ..
        } = &mut *state;
        match early.get_mut(&key) {
            Some((heard, _)) => {
                hear(heard, from);
            }
            None => {
                if early_order.len() >= MAX_EARLY_ACKS {
                    if let Some((old, gen)) = early_order.pop_front() {
                        if early.get(&old).is_some_and(|(_, g)| *g == gen) {
                            early.remove(&old);
                        }
                    }
                }
                *generation += 1;
                early_order.push_back((key.clone(), *generation));
                early.insert(key, (vec![Box::from(from)], *generation));
            }
        }
        false
    }

    /// Answers `report` once `wait.acks` acknowledgements of its event are
    /// heard (with its `acked` count raised), or fails when `wait.timeout`
    /// passes first.
    pub async fn wait(
        &self,
        mut report: WriteReport,
        wait: WaitFor,
    ) -> Result<WriteReport, NodeError> {
        report.of = wait.of;
        if wait.acks == 0 {
            return Ok(report);
        }
        let key = key_of(&report);
        let (done, heard) = oneshot::channel();
        {
            let mut state = self.state();
            let early = state.early.remove(&key).map(|(heard, _)| heard);
            let waiter = state.waiting.entry(key.clone()).or_default();
            for from in early.into_iter().flatten() {
                hear(&mut waiter.heard, &from);
            }
            if waiter.heard.len() >= wait.acks {
                report.acked += waiter.heard.len();
                if waiter.writers == 0 {
                    state.waiting.remove(&key);
                }
                return Ok(report);
            }
            waiter.writers += 1;
            waiter.pending.push((wait.acks, done));
        }
        let _leave = Leave {
            acks: self,
            key: key.clone(),
        };
        match tokio::time::timeout(wait.timeout, heard).await {
            Ok(Ok(count)) => {
                report.acked += count;
                Ok(report)
            }
            _ => {
                // An ack may have come in since the timer fired.
                let heard = self.state().waiting.get(&key).map_or(0, |w| w.heard.len());
                if heard >= wait.acks {
                    report.acked += heard;
                    return Ok(report);
                }
                Err(NodeError::Unavailable {
                    acked: report.acked + heard,
                    needed: 1 + wait.acks,
                    of: wait.of,
                })
            }
        }
    }

    /// `report` of a write found held already (`existing`: it commits
    /// nothing, so no acknowledgement of it is coming unless a writer of the
    /// same event still waits for its own), with the acknowledgements of
    /// its event heard so far counted, at once.
    pub fn heard_now(&self, mut report: WriteReport, wait: WaitFor) -> WriteReport {
        report.of = wait.of;
        let key = key_of(&report);
        let state = self.state();
        report.acked += match state.waiting.get(&key) {
            Some(waiter) => waiter.heard.len(),
            None => state.early.get(&key).map_or(0, |(heard, _)| heard.len()),
        };
        report
    }

    /// Events with writers waiting, and acknowledgements kept for writers
    /// to come.
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.state();
        (state.waiting.len(), state.early.len())
    }
}
