//! Copies nobody needs: partitions this node holds data of but neither
//! owns nor watches (a watch that ended, a partition placement moved
//! away). Such a copy is never read (reads go to an owner, `?local=true`
//! aside), so it is a cache, bounded by `--copy-cache-mb`.
//!
//! Once membership has been still for a while and a copy has been unneeded
//! as long, its size is measured and its events are *handed over*: an
//! anti-entropy session with an owner that sends the owner whatever it
//! lacks and fetches nothing (`Differ::handing_over`). So a write that only
//! this node took — acked while it owned the partition, or kept while it
//! stood in for a dead owner — reaches the owners before the copy can go.
//! The events go as imports the owner answers once it merged them (one it
//! keeps no more counts as taken), so a copy counts as handed over once a
//! session ends well, and only while its root stays as it was when the
//! session began; a change of membership has every copy measured and
//! handed over again.
//! Then, while the copies take more than the bound, the one unneeded
//! longest is dropped whole (`Node::drop_partition`), with the cursors that
//! followed it, so a later owner here is reset (and pulls by its trees)
//! and a later watch starts from a snapshot.
//! A copy not handed over (no owner reachable) is never dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::following::forget_cursors;
use super::Replicator;
use crate::cluster::differ::Differ;
use crate::merkle::Fingerprint;

/// How long a copy waits, after membership last changed and after it was
/// last needed, before it is handed over: at least this, and two of the
/// peers' death timeouts (a membership change in flight settles first).
const SETTLE: Duration = Duration::from_secs(2);

/// How long a copy whose hand-over failed waits before the next try.
const RETRY: Duration = Duration::from_secs(10);

/// Counters of the copies nobody needs (`/metrics`).
#[derive(Default, Debug)]
pub struct CopyStats {
    /// Partitions held here that nobody needs now.
    pub idle_partitions: AtomicU64,
    /// Bytes (keys and values) those partitions take, as last measured.
    pub idle_bytes: AtomicU64,
    /// Partitions whose events were handed to an owner.
    pub handed_over: AtomicU64,
    /// Hand-overs that failed (tried again later).
    pub handovers_failed: AtomicU64,
    /// Partitions dropped.
    pub dropped: AtomicU64,
    /// Bytes those took.
    pub dropped_bytes: AtomicU64,
}

/// A partition held here that nobody needs.
#[derive(Debug)]
struct Idle {
    /// Since when.
    since: Instant,
    /// Bytes it takes (`None`: not measured yet).
    bytes: Option<u64>,
    /// Its events are at an owner: a hand-over found nothing the owner
    /// lacked.
    handed: bool,
    /// Its merkle root then: a drop goes ahead only while it is the same
    /// (else what came since is handed over first).
    handed_root: Option<Fingerprint>,
    /// Not tried again before then (a hand-over failed).
    retry_at: Option<Instant>,
}

/// The copies nobody needs, and what is being done with them.
#[derive(Debug)]
pub(super) struct Copies {
    idle: BTreeMap<u16, Idle>,
    /// The members placement was last seen with, and since when.
    members: Vec<String>,
    stable_since: Instant,
    /// A step (measuring, handing over, dropping) is under way.
    busy: bool,
    /// The partition being dropped, if one is.
    dropping: Option<u16>,
}

impl Default for Copies {
    fn default() -> Copies {
        Copies {
            idle: BTreeMap::new(),
            members: Vec::new(),
            stable_since: Instant::now(),
            busy: false,
            dropping: None,
        }
    }
}

/// What to do next with the copies.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Measure these partitions.
    Measure(Vec<u16>),
    /// Hand these partitions over, to each owner those it is given.
    HandOver(BTreeMap<String, Vec<u16>>),
    /// Drop this partition.
    Drop(u16),
}

impl Copies {
    /// The partition being dropped, if one is: nothing follows or watches
    /// it until the drop is done (what either brought could be decided
    /// before the drop, and go with it).
    pub(super) fn dropping(&self) -> Option<u16> {
        self.dropping
    }

    /// Brings the idle set to `needed` (by partition: owned or watched
    /// here) and notes membership `members`.
    fn update(&mut self, needed: &[bool], members: &[String], now: Instant) {
        if self.members != members {
            self.members = members.to_vec();
            self.stable_since = now;
            // Owners changed: measured and handed over again.
            for i in self.idle.values_mut() {
                i.bytes = None;
                i.handed = false;
                i.handed_root = None;
            }
        }
        for (part, &need) in needed.iter().enumerate() {
            let part = part as u16;
            if need {
                self.idle.remove(&part);
            } else {
                self.idle.entry(part).or_insert(Idle {
                    since: now,
                    bytes: None,
                    handed: false,
                    handed_root: None,
                    retry_at: None,
                });
            }
        }
    }

    /// The next step, if one is due: measure what is not measured, hand
    /// over what is not handed, then drop the copy unneeded longest while
    /// the copies take more than `bound` bytes. `owner` names the owner a
    /// partition's events go to (one linked now).
    fn next(
        &self,
        now: Instant,
        settle: Duration,
        bound: u64,
        owner: impl Fn(u16) -> Option<String>,
    ) -> Option<Step> {
        if self.busy || now < self.stable_since + settle {
            return None;
        }
        let settled = |i: &Idle| i.since + settle <= now;
        let measure: Vec<u16> = self
            .idle
            .iter()
            .filter(|(_, i)| i.bytes.is_none() && settled(i))
            .map(|(p, _)| *p)
            .collect();
        if !measure.is_empty() {
            return Some(Step::Measure(measure));
        }
        let mut hand: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for (&part, i) in &self.idle {
            let due = i.retry_at.is_none_or(|t| t <= now);
            if settled(i) && !i.handed && i.bytes.unwrap_or(0) > 0 && due {
                if let Some(to) = owner(part) {
                    hand.entry(to).or_default().push(part);
                }
            }
        }
        if !hand.is_empty() {
            return Some(Step::HandOver(hand));
        }
        if self.bytes() <= bound {
            return None;
        }
        self.idle
            .iter()
            .filter(|(_, i)| i.handed && i.bytes.unwrap_or(0) > 0)
            .min_by_key(|(p, i)| (i.since, **p))
            .map(|(p, _)| Step::Drop(*p))
    }

    /// Bytes the idle copies take, as measured.
    fn bytes(&self) -> u64 {
        self.idle.values().filter_map(|i| i.bytes).sum()
    }

    fn publish(&self, stats: &CopyStats) {
        let held = self
            .idle
            .values()
            .filter(|i| i.bytes.unwrap_or(0) > 0)
            .count();
        stats.idle_partitions.store(held as u64, Ordering::Relaxed);
        stats.idle_bytes.store(self.bytes(), Ordering::Relaxed);
    }
}

impl Replicator {
    /// Looks at the copies nobody needs and starts the next step due (one
    /// at a time). Called every second, and when a step ends.
    pub(super) fn check_copies(&mut self, ctx: &mut Context<Self>) {
        let placement = self.cluster.placement();
        let me = self.cluster.identity.node.as_str();
        let layout = self.node.layout();
        let mut needed: Vec<bool> = (0..layout.partitions())
            .map(|p| placement.owns(me, p as u16))
            .collect();
        for prefix in self.node.interest().watched() {
            for part in layout.covering(&prefix).iter() {
                needed[usize::from(part)] = true;
            }
        }
        let now = Instant::now();
        self.copies.update(&needed, placement.members(), now);
        self.copies.publish(&self.cluster.copies);
        let settle = SETTLE.max(self.cluster.config.peer_dead_after * 2);
        let bound = self.cluster.config.copy_cache_bytes;
        let links = &self.cluster.links;
        let owner = |part: u16| {
            placement
                .owners(part)
                .find(|o| *o != me && links.link(o).is_some())
                .map(str::to_string)
        };
        match self.copies.next(now, settle, bound, owner) {
            None => {}
            Some(Step::Measure(parts)) => self.measure_copies(parts, ctx),
            Some(Step::HandOver(by_owner)) => self.hand_over(by_owner, ctx),
            Some(Step::Drop(part)) => self.drop_copy(part, ctx),
        }
    }

    /// Measures partitions' sizes on a blocking thread.
    fn measure_copies(&mut self, parts: Vec<u16>, ctx: &mut Context<Self>) {
        self.copies.busy = true;
        let node = self.node.clone();
        let work = tokio::task::spawn_blocking(move || {
            parts
                .into_iter()
                .map(|p| (p, node.partition_bytes(p)))
                .collect::<Vec<_>>()
        });
        ctx.spawn(work.into_actor(self).map(|measured, this, ctx| {
            this.copies.busy = false;
            for (part, bytes) in measured.unwrap_or_default() {
                match bytes {
                    Ok(bytes) => {
                        if let Some(i) = this.copies.idle.get_mut(&part) {
                            i.bytes = Some(bytes);
                        }
                    }
                    Err(e) => log::error!("measuring partition {part}: {e}"),
                }
            }
            this.check_copies(ctx);
        }));
    }

    /// Hands partitions' events over to owners: one session per owner.
    fn hand_over(&mut self, by_owner: BTreeMap<String, Vec<u16>>, ctx: &mut Context<Self>) {
        let mut waits = Vec::new();
        for (owner, parts) in by_owner {
            let Some((link, _)) = self.cluster.links.link(&owner) else {
                continue;
            };
            log::debug!(
                "handing {} partitions nobody needs here over to '{owner}'",
                parts.len()
            );
            // Each root as the session starts: what the walk hands over.
            // An event folded into the tree while it runs (the trees trail
            // writes) may not be walked, and the copy must not count as
            // handed with it: its root then differs from this one.
            let roots: Vec<(u16, Option<_>)> = parts
                .iter()
                .map(|&p| (p, self.node.partition_root(p).ok()))
                .collect();
            let (tx, rx) = tokio::sync::oneshot::channel();
            Differ::new(
                self.node.clone(),
                self.cluster.clone(),
                (owner, link),
                parts,
                String::new(),
                Some(tx),
            )
            .handing_over()
            .start();
            waits.push(async move { (roots, rx.await.ok()) });
        }
        if waits.is_empty() {
            return;
        }
        self.copies.busy = true;
        let work = futures_util::future::join_all(waits);
        ctx.spawn(work.into_actor(self).map(|reports, this, ctx| {
            this.copies.busy = false;
            let stats = &this.cluster.copies;
            let now = Instant::now();
            for (roots, report) in reports {
                // A session that ended well had the owner take every event
                // it lacked (one it keeps no more counts as taken): handed.
                let ok = report.as_ref().is_some_and(|r| r.failed.is_none());
                let counter = if ok {
                    &stats.handed_over
                } else {
                    &stats.handovers_failed
                };
                counter.fetch_add(roots.len() as u64, Ordering::Relaxed);
                for (part, root) in roots {
                    if let Some(i) = this.copies.idle.get_mut(&part) {
                        if ok {
                            i.handed = true;
                            i.handed_root = root;
                        } else {
                            i.retry_at = Some(now + RETRY);
                        }
                    }
                }
            }
            this.check_copies(ctx);
        }));
    }

    /// Drops a copy handed over and still unneeded (checked by the caller
    /// in this same turn), with the cursors that followed it: a follow
    /// started meanwhile is reset, and what it merges waits for the
    /// drop.
    fn drop_copy(&mut self, part: u16, ctx: &mut Context<Self>) {
        // Taken events since it was handed over (a write a peer with an
        // older view forwarded here): handed over again first.
        let root = self.node.partition_root(part).ok();
        if let Some(i) = self.copies.idle.get_mut(&part) {
            if root.is_none() || i.handed_root != root {
                i.handed = false;
                i.handed_root = None;
                return;
            }
        }
        if let Err(e) = forget_cursors(&self.node, part) {
            log::error!("dropping the copy of partition {part}: {e}");
            return;
        }
        let bytes = self
            .copies
            .idle
            .get(&part)
            .and_then(|i| i.bytes)
            .unwrap_or(0);
        self.copies.busy = true;
        self.copies.dropping = Some(part);
        let node = self.node.clone();
        ctx.spawn(
            async move { node.drop_partition(part).await }
                .into_actor(self)
                .map(move |dropped, this, ctx| {
                    this.copies.busy = false;
                    this.copies.dropping = None;
                    match dropped {
                        Ok(()) => {
                            log::info!(
                                "dropped the copy of partition {part} ({bytes} bytes): \
                                 nobody here owns or watches it"
                            );
                            let stats = &this.cluster.copies;
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                            stats.dropped_bytes.fetch_add(bytes, Ordering::Relaxed);
                            if let Some(i) = this.copies.idle.get_mut(&part) {
                                i.bytes = Some(0);
                            }
                        }
                        Err(e) => {
                            log::error!("dropping the copy of partition {part}: {e}");
                            // Not again and again: after the next hand-over.
                            if let Some(i) = this.copies.idle.get_mut(&part) {
                                i.handed = false;
                                i.handed_root = None;
                                i.retry_at = Some(Instant::now() + RETRY);
                            }
                        }
                    }
                    // The next step at once (the next drop, when the
                    // copies still take more than the bound).
                    this.check_copies(ctx);
                }),
        );
    }
}

/// The copies' steps, by the policy alone.
#[cfg(test)]
mod tests {
    use super::*;

    fn owner(part: u16) -> Option<String> {
        (part != 3).then(|| format!("o{}", part % 2))
    }

    #[test]
    fn copies_are_measured_handed_over_then_dropped_oldest_first_past_the_bound() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(2);
        let members = vec!["a".to_string(), "b".to_string()];
        let mut c = Copies::default();
        // Partitions 1, 2 and 3 unneeded from t0, 0 owned.
        c.update(&[true, false, false, false], &members, t0);
        assert_eq!(
            c.next(t0, settle, 0, owner),
            None,
            "membership just changed"
        );
        let later = t0 + settle;
        assert_eq!(
            c.next(later, settle, 0, owner),
            Some(Step::Measure(vec![1, 2, 3]))
        );
        for (p, b) in [(1, 100), (2, 0), (3, 50)] {
            c.idle.get_mut(&p).unwrap().bytes = Some(b);
        }
        // The empty one is not handed over; 3 has no owner linked.
        let mut by = BTreeMap::new();
        by.insert("o1".to_string(), vec![1]);
        assert_eq!(c.next(later, settle, 0, owner), Some(Step::HandOver(by)));
        c.idle.get_mut(&1).unwrap().handed = true;
        // Within the bound: kept.
        assert_eq!(c.next(later, settle, 150, owner), None);
        // Past it: the handed one goes; the one not handed never does.
        assert_eq!(c.next(later, settle, 149, owner), Some(Step::Drop(1)));
        c.idle.get_mut(&1).unwrap().bytes = Some(0);
        assert_eq!(c.next(later, settle, 0, owner), None);
        // Needed again, then unneeded: measured and handed over afresh.
        c.update(&[true, true, false, false], &members, later);
        c.update(&[true, false, false, false], &members, later);
        assert_eq!(c.next(later, settle, 0, owner), None, "not settled");
        assert_eq!(
            c.next(later + settle, settle, 0, owner),
            Some(Step::Measure(vec![1]))
        );
    }

    #[test]
    fn the_copy_unneeded_longest_goes_first_and_nothing_moves_while_busy() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(1);
        let members = vec!["a".to_string()];
        let mut c = Copies::default();
        c.update(&[true, true, false], &members, t0);
        c.update(&[true, false, false], &members, t0 + settle);
        let now = t0 + settle * 3;
        for p in [1, 2] {
            let i = c.idle.get_mut(&p).unwrap();
            i.bytes = Some(10);
            i.handed = true;
        }
        assert_eq!(c.next(now, settle, 0, owner), Some(Step::Drop(2)));
        c.busy = true;
        assert_eq!(c.next(now, settle, 0, owner), None);
    }
}
