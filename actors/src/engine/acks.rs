//! Where a write's answer waits for acknowledgements beyond this node's own
//! commit: the cluster's `w` (API.md: `?w=1|quorum|all`).
//!
//! A write is answered by the future that asked for it ([`Node::write`]):
//! the committer hands it the local outcome once the commit is as durable
//! as configured and fanned out to local subscribers (the hub only fans
//! out). A write that asks for more ([`WaitFor`]) then waits here for that
//! many acknowledgements of its event — `(path, version)` — from other
//! owners ([`Node::ack`]), or until its timeout, when it fails with
//! [`NodeError::Unavailable`] naming how many acked. An acknowledgement may
//! arrive before the writer starts waiting (a peer can be faster than the
//! local commit's answer): it is kept for a while and counted then.
//!
//! [`Node::write`]: crate::Node::write
//! [`Node::ack`]: crate::Node::ack

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::engine::partition::WriteReport;
use crate::error::NodeError;
use crate::model::{Path, Version};

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

/// The event an acknowledgement names.
type Key = (Path, Version);

/// The writers of one event waiting for acknowledgements (a retry of the
/// same event may wait beside the first).
struct Waiter {
    needed: usize,
    heard: usize,
    writers: usize,
    done: Vec<oneshot::Sender<usize>>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<Key, Waiter>,
    /// Acknowledgements of events nobody waits for yet, oldest first.
    early: HashMap<Key, usize>,
    early_order: VecDeque<Key>,
}

/// The writers waiting for acknowledgements, and acknowledgements waiting
/// for their writers.
#[derive(Default)]
pub(crate) struct Acks {
    state: Mutex<State>,
}

impl Acks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one acknowledgement of the event `(path, version)`; true if
    /// a writer was waiting for it.
    pub fn ack(&self, path: &Path, version: &Version) -> bool {
        let key = (path.clone(), version.clone());
        let mut state = self.state();
        if let Some(waiter) = state.waiting.get_mut(&key) {
            waiter.heard += 1;
            if waiter.heard >= waiter.needed {
                for done in waiter.done.drain(..) {
                    let _ = done.send(waiter.heard);
                }
            }
            return true;
        }
        if !state.early.contains_key(&key) {
            if state.early_order.len() >= MAX_EARLY_ACKS {
                if let Some(old) = state.early_order.pop_front() {
                    state.early.remove(&old);
                }
            }
            state.early_order.push_back(key.clone());
        }
        *state.early.entry(key).or_default() += 1;
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
        let key = (report.path.clone(), report.version.clone());
        let (done, heard) = oneshot::channel();
        {
            let mut state = self.state();
            let early = state.early.remove(&key).unwrap_or(0);
            if early >= wait.acks {
                report.acked += early;
                return Ok(report);
            }
            let waiter = state.waiting.entry(key.clone()).or_insert(Waiter {
                needed: wait.acks,
                heard: early,
                writers: 0,
                done: Vec::new(),
            });
            waiter.needed = waiter.needed.min(wait.acks);
            waiter.writers += 1;
            waiter.done.push(done);
        }
        let outcome = tokio::time::timeout(wait.timeout, heard).await;
        let heard = {
            let mut state = self.state();
            match state.waiting.get_mut(&key) {
                Some(waiter) => {
                    let heard = waiter.heard;
                    waiter.writers -= 1;
                    if waiter.writers == 0 {
                        state.waiting.remove(&key);
                    }
                    heard
                }
                None => 0,
            }
        };
        match outcome {
            Ok(Ok(count)) => {
                report.acked += count.max(heard);
                Ok(report)
            }
            _ => Err(NodeError::Unavailable {
                acked: report.acked + heard,
                needed: 1 + wait.acks,
                of: wait.of,
            }),
        }
    }

    /// Writers waiting, and acknowledgements kept for writers to come.
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.state();
        (state.waiting.len(), state.early.len())
    }
}
