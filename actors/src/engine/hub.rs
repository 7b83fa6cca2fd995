//! The hub: hands committed changes to the subscribers whose prefix covers
//! them, in change-log order. It only fans out; writers are answered by the
//! committer (see `committer::Committer::answer`).
//!
//! The committer calls [`Hub::publish`] with each durable commit, in seq
//! order, on its own thread: a change goes from the committer straight into
//! the mailboxes of the sessions that want it, with no thread in between.
//! Registration takes the same lock, so a new subscription gets a clean cut:
//! the head it is told is the last change it will *not* receive live;
//! everything after it arrives in its mailbox.
//!
//! Delivery never blocks: a subscriber whose mailbox is full is dropped from
//! the index and told it lags; it can resume from its last cursor. So a slow
//! client costs the node at most its bounded queues, never the writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use indexmap::IndexSet;

pub use crate::engine::change::Change;
use crate::model::Path;

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

/// Who wants what, and the head published so far.
struct Index {
    /// Subscribers by prefix. An `IndexSet` iterates like a `Vec` for the
    /// fan-out and removes in O(1), so a session leaving costs the same
    /// whatever the number of sessions on its prefix (a reconnect storm on
    /// one prefix would otherwise be quadratic).
    by_prefix: HashMap<Box<str>, IndexSet<SubscriberId>>,
    subscribers: HashMap<SubscriberId, Entry>,
    head: u64,
}

impl Index {
    fn remove(&mut self, id: SubscriberId) -> Option<Entry> {
        let entry = self.subscribers.remove(&id)?;
        for prefix in &entry.prefixes {
            self.unindex(id, prefix.as_str());
        }
        Some(entry)
    }

    fn unindex(&mut self, id: SubscriberId, prefix: &str) {
        if let Some(ids) = self.by_prefix.get_mut(prefix) {
            ids.swap_remove(&id);
            if ids.is_empty() {
                self.by_prefix.remove(prefix);
            }
        }
    }

    /// Hands one change to every subscriber that covers it; returns how
    /// many. Subscribers whose mailbox is full or closed go to `dropped`.
    fn fan_out(&mut self, change: &Arc<Change>, dropped: &mut Vec<(SubscriberId, bool)>) -> usize {
        let mut delivered = 0;
        for prefix in change.event.path.ancestors() {
            let Some(ids) = self.by_prefix.get(prefix) else {
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

/// The fan-out of a node, shared by the committer (which publishes) and the
/// sessions (which register).
pub struct Hub {
    index: Mutex<Index>,
    stats: Arc<HubStats>,
}

impl Hub {
    /// A hub whose log head is `head`.
    pub fn new(head: u64, stats: Arc<HubStats>) -> Hub {
        stats.head.store(head, Ordering::Relaxed);
        Hub {
            index: Mutex::new(Index {
                by_prefix: HashMap::new(),
                subscribers: HashMap::new(),
                head,
            }),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding it leaves a consistent index (every step
        // is a whole insert or remove): go on with it.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_subscribers(&self, index: &Index) {
        self.stats
            .subscribers
            .store(index.subscribers.len() as u64, Ordering::Relaxed);
    }

    /// Adds `prefix` to a subscriber's interest; answers the log head at the
    /// cut: every change after it arrives in `mailbox`.
    pub fn register(&self, id: SubscriberId, mailbox: Recipient<Deliver>, prefix: &Path) -> u64 {
        let mut index = self.lock();
        let entry = index.subscribers.entry(id).or_insert_with(|| Entry {
            mailbox,
            prefixes: Vec::new(),
            last_seq: 0,
        });
        if !entry.prefixes.contains(prefix) {
            entry.prefixes.push(prefix.clone());
            index
                .by_prefix
                .entry(Box::from(prefix.as_str()))
                .or_default()
                .insert(id);
        }
        self.count_subscribers(&index);
        index.head
    }

    /// The log head published so far: every change up to it is in the
    /// store.
    pub fn head(&self) -> u64 {
        self.lock().head
    }

    /// Removes one prefix of a subscriber.
    pub fn unregister(&self, id: SubscriberId, prefix: &Path) {
        let mut index = self.lock();
        if let Some(entry) = index.subscribers.get_mut(&id) {
            entry.prefixes.retain(|p| p != prefix);
            index.unindex(id, prefix.as_str());
        }
    }

    /// Removes a subscriber entirely.
    pub fn leave(&self, id: SubscriberId) {
        let mut index = self.lock();
        index.remove(id);
        self.count_subscribers(&index);
    }

    /// Hands committed changes, in seq order, to the subscribers that cover
    /// them; the log head is `head` afterwards. Answers, per change, how
    /// many subscribers it reached (0 for `None`: a late event).
    pub(crate) fn publish<'a>(
        &self,
        changes: impl IntoIterator<Item = Option<&'a Arc<Change>>>,
        head: u64,
    ) -> Vec<usize> {
        let mut dropped = Vec::new();
        let mut lagging = Vec::new();
        let reached: Vec<usize> = {
            let mut index = self.lock();
            let reached = changes
                .into_iter()
                .map(|change| change.map_or(0, |c| index.fan_out(c, &mut dropped)))
                .collect();
            index.head = head;
            for (id, lags) in dropped {
                if let Some(entry) = index.remove(id) {
                    if lags {
                        lagging.push((id, entry.mailbox));
                    }
                }
            }
            self.count_subscribers(&index);
            reached
        };
        self.stats.head.store(head, Ordering::Release);
        self.stats
            .fanned_out
            .fetch_add(reached.iter().sum::<usize>() as u64, Ordering::Relaxed);
        for (id, mailbox) in lagging {
            // The subscriber counts itself as lagged when it ends.
            log::debug!("subscriber {id} lags; dropped from fan-out");
            mailbox.do_send(Deliver::Lagged);
        }
        reached
    }

    /// Tells every subscriber the log head (a hint for pings; one whose
    /// mailbox is full is caught by the next change).
    fn tick(&self) {
        let index = self.lock();
        let head = index.head;
        for entry in index.subscribers.values() {
            let _ = entry.mailbox.try_send(Deliver::Tick { head });
        }
    }
}

/// Ticks the hub's subscribers every `interval`, on the engine's system.
pub(crate) struct Ticker {
    /// The hub.
    pub hub: Arc<Hub>,
    /// How often.
    pub interval: Duration,
}

impl Actor for Ticker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |ticker, _| ticker.hub.tick());
    }
}
