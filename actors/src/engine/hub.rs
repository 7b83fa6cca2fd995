//! The hub: hands committed changes to the subscribers whose prefix covers
//! them, in change-log order.
//!
//! The committer sends it each durable batch in seq order; the hub is one
//! actor, so every subscriber receives matching changes in seq order and its
//! last cursor is an exact resume point. Registration is a message too, so a
//! new subscription gets a clean cut: the head it is told is the last change
//! it will *not* receive live; everything after it arrives in its mailbox.
//!
//! Delivery never blocks: a subscriber whose mailbox is full is dropped from
//! the index and told it lags; it can resume from its last cursor. So a slow
//! client costs the node at most its bounded queues, never the writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use indexmap::IndexSet;
use tokio::sync::oneshot;

pub use crate::engine::change::Change;
use crate::engine::committer::WriteDone;
use crate::engine::partition::{finish, Decided};
use crate::error::NodeError;
use crate::model::Path;
use crate::store::StoreError;

/// Identifies a subscriber session to the hub.
pub type SubscriberId = u64;

/// What the hub sends a subscriber.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Deliver {
    /// A change under one of its prefixes.
    Change(Arc<Change>),
    /// Periodic: everything up to `head` has been delivered.
    Tick {
        /// The log head.
        head: u64,
    },
    /// Its mailbox overflowed; it was dropped from the index.
    Lagged,
}

/// Adds a prefix to a subscriber's interest. Answers the log head at the cut.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Register {
    /// The subscriber.
    pub id: SubscriberId,
    /// Its mailbox.
    pub mailbox: Recipient<Deliver>,
    /// The prefix.
    pub prefix: Path,
}

/// Removes one prefix of a subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// The subscriber.
    pub id: SubscriberId,
    /// The prefix.
    pub prefix: Path,
}

/// Removes a subscriber entirely.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The subscriber.
    pub id: SubscriberId,
}

/// One committed batch of one partition, answered after fan-out.
pub(crate) struct PublishGroup {
    /// Per event written, its seq, and the change when it became a latest
    /// value (`None` for a late, history-only event: no session sees it).
    pub changes: Vec<(u64, Option<Arc<Change>>)>,
    pub replies: Vec<Decided>,
    /// Told `true`: the batch is applied (even when not durable).
    pub done: oneshot::Sender<bool>,
    /// Set when the batch is applied but could not be made durable.
    pub failure: Option<String>,
}

/// Durable batches from the committer, in seq order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Publish {
    pub groups: Vec<PublishGroup>,
    pub head: u64,
}

/// Counters the hub keeps for metrics.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Changes handed to subscribers (one per subscriber per change).
    pub fanned_out: AtomicU64,
    /// Sessions ended for lagging (mailbox or outbox full).
    pub lagged: AtomicU64,
    /// Subscribers currently registered.
    pub subscribers: AtomicU64,
    /// The log head the hub has published up to.
    pub head: AtomicU64,
}

struct Entry {
    mailbox: Recipient<Deliver>,
    prefixes: Vec<Path>,
    last_seq: u64,
}

/// The fan-out actor of a node.
pub struct Hub {
    /// Subscribers by prefix. An `IndexSet` iterates like a `Vec` for the
    /// fan-out and removes in O(1), so a session leaving costs the same
    /// whatever the number of sessions on its prefix (a reconnect storm on
    /// one prefix would otherwise be quadratic on the hub's thread).
    index: HashMap<Box<str>, IndexSet<SubscriberId>>,
    subscribers: HashMap<SubscriberId, Entry>,
    head: u64,
    tick_interval: Duration,
    stats: Arc<HubStats>,
}

impl Hub {
    /// A hub whose log head is `head`, ticking subscribers every `tick_interval`.
    pub fn new(head: u64, tick_interval: Duration, stats: Arc<HubStats>) -> Hub {
        stats.head.store(head, Ordering::Relaxed);
        Hub {
            index: HashMap::new(),
            subscribers: HashMap::new(),
            head,
            tick_interval,
            stats,
        }
    }

    fn remove(&mut self, id: SubscriberId) -> Option<Entry> {
        let entry = self.subscribers.remove(&id)?;
        for prefix in &entry.prefixes {
            self.unindex(id, prefix.as_str());
        }
        self.stats
            .subscribers
            .store(self.subscribers.len() as u64, Ordering::Relaxed);
        Some(entry)
    }

    fn unindex(&mut self, id: SubscriberId, prefix: &str) {
        if let Some(ids) = self.index.get_mut(prefix) {
            ids.swap_remove(&id);
            if ids.is_empty() {
                self.index.remove(prefix);
            }
        }
    }

    /// Hands one change to every subscriber that covers it; returns how many.
    fn fan_out(&mut self, change: &Arc<Change>, dropped: &mut Vec<(SubscriberId, bool)>) -> usize {
        let mut delivered = 0;
        for prefix in change.event.path.ancestors() {
            let Some(ids) = self.index.get(prefix) else {
                continue;
            };
            for id in ids {
                let Some(entry) = self.subscribers.get_mut(id) else {
                    continue;
                };
                if entry.last_seq == change.seq {
                    continue; // already delivered through another prefix
                }
                entry.last_seq = change.seq;
                match entry.mailbox.try_send(Deliver::Change(change.clone())) {
                    Ok(()) => delivered += 1,
                    Err(SendError::Full(_)) => dropped.push((*id, true)),
                    Err(SendError::Closed(_)) => dropped.push((*id, false)),
                }
            }
        }
        delivered
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick_interval, |hub, _| {
            let head = hub.head;
            for entry in hub.subscribers.values() {
                // A full mailbox will be caught by the next change; a tick is
                // only a hint and can be skipped.
                let _ = entry.mailbox.try_send(Deliver::Tick { head });
            }
        });
    }
}

impl Handler<Register> for Hub {
    type Result = u64;
    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> u64 {
        let entry = self.subscribers.entry(msg.id).or_insert_with(|| Entry {
            mailbox: msg.mailbox,
            prefixes: Vec::new(),
            last_seq: 0,
        });
        if !entry.prefixes.contains(&msg.prefix) {
            entry.prefixes.push(msg.prefix.clone());
            self.index
                .entry(Box::from(msg.prefix.as_str()))
                .or_default()
                .insert(msg.id);
        }
        self.stats
            .subscribers
            .store(self.subscribers.len() as u64, Ordering::Relaxed);
        self.head
    }
}

impl Handler<Unregister> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        if let Some(entry) = self.subscribers.get_mut(&msg.id) {
            entry.prefixes.retain(|p| p != &msg.prefix);
            self.unindex(msg.id, msg.prefix.as_str());
        }
    }
}

impl Handler<Leave> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        self.remove(msg.id);
    }
}

impl Handler<Publish> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        let mut dropped = Vec::new();
        let mut total = 0u64;
        for group in msg.groups {
            let mut results = Vec::with_capacity(group.changes.len());
            for (seq, change) in &group.changes {
                let subscribers = match change {
                    Some(change) => self.fan_out(change, &mut dropped),
                    None => 0,
                };
                total += subscribers as u64;
                results.push(WriteDone {
                    seq: Some(*seq),
                    subscribers,
                });
            }
            let answer = match group.failure {
                None => Ok(results),
                Some(detail) => Err(NodeError::Store(StoreError::Failed(detail))),
            };
            // The partition first, so a writer that writes again at once is
            // decided by a partition that already knows this batch's end.
            let _ = group.done.send(true);
            finish(group.replies, answer);
        }
        self.head = msg.head;
        self.stats.head.store(msg.head, Ordering::Relaxed);
        self.stats.fanned_out.fetch_add(total, Ordering::Relaxed);
        for (id, lagging) in dropped {
            if let Some(entry) = self.remove(id) {
                if lagging {
                    // The subscriber counts itself as lagged when it ends.
                    log::debug!("subscriber {id} lags; dropped from fan-out");
                    entry.mailbox.do_send(Deliver::Lagged);
                }
            }
        }
    }
}
