//! Frames from peers that a node merges one at a time per peer (watched
//! values, anti-entropy events): each peer's queue, what it weighs, and
//! whether one of its frames is merging. A peer whose frames waiting pass
//! the bound is the caller's to cut off (a frame alone is always taken).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// What the work in flight weighs (frames being merged, out of their
/// queues; writes a peer forwarded, being coordinated): each piece of work
/// holds its weight in a [`FlightShare`] that gives it back when the work
/// ends, or is dropped with it (the replicator stopping).
#[derive(Default)]
pub(super) struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    /// Counts `weight` as in flight until the share is dropped.
    pub fn hold(&self, weight: usize) -> FlightShare {
        self.0.set(self.0.get() + weight);
        FlightShare {
            total: self.0.clone(),
            weight,
        }
    }

    /// [`InFlight::hold`], unless `weight` would take what is in flight
    /// past `bound` (work alone is always held).
    pub fn hold_within(&self, weight: usize, bound: usize) -> Option<FlightShare> {
        let now = self.0.get();
        (now == 0 || now + weight <= bound).then(|| self.hold(weight))
    }

    /// What the work in flight weighs now.
    pub fn weight(&self) -> usize {
        self.0.get()
    }
}

/// One piece of work's weight in [`InFlight`].
pub(super) struct FlightShare {
    total: Rc<Cell<usize>>,
    weight: usize,
}

impl Drop for FlightShare {
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
        let merging = InFlight::default();
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
        // Within a bound: work alone always, more only while it fits.
        let big = merging.hold_within(500, 100).expect("alone");
        assert!(merging.hold_within(1, 100).is_none());
        drop(big);
        let a = merging.hold_within(60, 100).expect("fits");
        let b = merging.hold_within(40, 100).expect("fits");
        assert!(merging.hold_within(1, 100).is_none());
        assert_eq!(merging.weight(), 100);
        drop((a, b));
        assert_eq!(merging.weight(), 0);
    }
}
