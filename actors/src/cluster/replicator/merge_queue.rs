//! Frames from peers that a node merges one at a time per peer (watched
//! values, anti-entropy events): each peer's queue, what it weighs, and
//! whether one of its frames is merging. A peer whose frames waiting pass
//! the bound is the caller's to cut off (a frame alone is always taken).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// What the frames being merged now weigh, out of their queues: each merge
/// holds its weight in a [`MergeShare`] that gives it back when the merge
/// ends, or is dropped with it (the replicator stopping).
#[derive(Default)]
pub(super) struct InMerge(Rc<Cell<usize>>);

impl InMerge {
    /// Counts `weight` as merging until the share is dropped.
    pub fn hold(&self, weight: usize) -> MergeShare {
        self.0.set(self.0.get() + weight);
        MergeShare {
            total: self.0.clone(),
            weight,
        }
    }

    /// What the merges running now weigh.
    pub fn weight(&self) -> usize {
        self.0.get()
    }
}

/// One running merge's weight in [`InMerge`].
pub(super) struct MergeShare {
    total: Rc<Cell<usize>>,
    weight: usize,
}

impl Drop for MergeShare {
    fn drop(&mut self) {
        self.total.set(self.total.get() - self.weight);
    }
}

/// One peer's frames: (link, frame, its merge weight), and whether one is
/// merging now.
struct Queue<T> {
    items: VecDeque<(u64, T, usize)>,
    /// What the frames waiting weigh.
    weight: usize,
    busy: bool,
}

/// By peer, the frames waiting to merge.
pub(super) struct MergeQueues<T>(HashMap<String, Queue<T>>);

impl<T> Default for MergeQueues<T> {
    fn default() -> Self {
        MergeQueues(HashMap::new())
    }
}

/// What [`MergeQueues::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued; none of the peer's frames is merging: start.
    Start,
    /// Queued behind the one merging.
    Behind,
    /// The frames waiting weigh this much, past the bound: the peer's
    /// queue is dropped.
    Overloaded(usize),
}

impl<T> MergeQueues<T> {
    /// Queues `item` (weighing `weight`) from `peer` over `link`.
    pub fn push(
        &mut self,
        peer: &str,
        (link, item, weight): (u64, T, usize),
        bound: usize,
    ) -> Pushed {
        let queue = self.0.entry(peer.to_string()).or_insert_with(|| Queue {
            items: VecDeque::new(),
            weight: 0,
            busy: false,
        });
        queue.items.push_back((link, item, weight));
        queue.weight += weight;
        if queue.weight > bound && queue.items.len() > 1 {
            let waiting = queue.weight;
            // (A frame merging finds its queue gone and stops there.)
            self.0.remove(peer);
            return Pushed::Overloaded(waiting);
        }
        if queue.busy {
            Pushed::Behind
        } else {
            Pushed::Start
        }
    }

    /// The next frame of `peer` to merge, the queue now busy with it;
    /// `None` (and the queue gone) when none waits.
    pub fn next(&mut self, peer: &str) -> Option<(u64, T, usize)> {
        let queue = self.0.get_mut(peer)?;
        let Some(next) = queue.items.pop_front() else {
            self.0.remove(peer);
            return None;
        };
        queue.weight = queue.weight.saturating_sub(next.2);
        queue.busy = true;
        Some(next)
    }

    /// What the frames waiting weigh, all peers together.
    pub fn waiting(&self) -> usize {
        self.0.values().map(|q| q.weight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_merge_one_at_a_time_and_a_peer_past_the_bound_is_dropped() {
        let mut q = MergeQueues::default();
        assert_eq!(q.push("p", (1, "a", 10), 100), Pushed::Start);
        assert_eq!(q.next("p"), Some((1, "a", 10)));
        assert_eq!(q.push("p", (1, "b", 60), 100), Pushed::Behind);
        assert_eq!(q.waiting(), 60);
        // A frame alone passes whatever it weighs; two past the bound do not.
        assert_eq!(q.push("p", (1, "c", 50), 100), Pushed::Overloaded(110));
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.next("p"), None);
        assert_eq!(q.push("p", (2, "big", 500), 100), Pushed::Start);
        assert_eq!(q.next("p"), Some((2, "big", 500)));
        assert_eq!(q.next("p"), None, "drained: the queue is gone");
        assert_eq!(q.push("p", (2, "d", 1), 100), Pushed::Start);
    }

    #[test]
    fn a_merge_weighs_until_its_share_is_dropped_run_or_not() {
        let merging = InMerge::default();
        let a = merging.hold(10);
        let b = merging.hold(5);
        assert_eq!(merging.weight(), 15);
        drop(a);
        assert_eq!(merging.weight(), 5);
        // A merge whose future is dropped unrun (the actor stopping) gives
        // its weight back too.
        let unrun = async move {
            let _held = b;
        };
        drop(unrun);
        assert_eq!(merging.weight(), 0);
    }
}
