//! The bounded queue between a `Peer` and its socket: the `Peer` pushes
//! frames ([`SendQueue`]), the socket pulls them as a stream
//! ([`SendStream`]) only as fast as it can write them. Frames stay in
//! order, a close travels behind the frames before it, and a peer that
//! cannot keep up fills the queue's byte budget: the push fails and the
//! `Peer` closes the link (the other side resumes from its cursors) rather
//! than buffer without bound.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, Notify};

/// What the socket is asked to do, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// Send this binary frame.
    Frame(Bytes),
    /// Answer a WebSocket ping.
    Pong(Bytes),
    /// Close the socket, giving this reason.
    Close(String),
}

/// How many bytes a link's queue holds now (shared by both ends; paced
/// senders read it), counting frames handed to the `Peer` and not yet
/// queued by it; and what was sent that the peer has not yet reported
/// merged, against the window the peer named (see [`SendGauge::room`]).
#[derive(Clone, Debug, Default)]
pub struct SendGauge(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// In the queue.
    queued: AtomicUsize,
    /// Handed to the `Peer`, on their way to the queue.
    handed: AtomicUsize,
    /// Sent frames the peer merges, not yet reported merged (see
    /// `PeerFrame::merge_weight`).
    unmerged: AtomicUsize,
    /// The most the peer takes in flight unmerged (its `Hello`; 0: not
    /// known, no limit).
    window: AtomicUsize,
    /// Frames waiting for their turn (see `in_turn`), not handed yet.
    waiting: AtomicUsize,
    /// Told when the socket takes a frame and the queue holds at most half
    /// its budget: frames waiting for their turn look again.
    room: Notify,
}

/// Takes `bytes` off a count, stopping at zero.
fn take_from(count: &AtomicUsize, bytes: usize) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
        Some(q.saturating_sub(bytes))
    });
}

impl SendGauge {
    /// Bytes queued or on their way, not yet taken by the socket.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Acquire) + self.0.handed.load(Ordering::Acquire)
    }

    /// About `bytes` more are handed to the `Peer` to send.
    pub fn hand(&self, bytes: usize) {
        self.0.handed.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Hands `bytes` to the `Peer` if the queue (with what is on its way)
    /// is empty, or holds at most `limit` bytes with them; says whether it
    /// did.
    pub fn try_hand(&self, bytes: usize, limit: usize) -> bool {
        self.0
            .handed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |handed| {
                let queued = self.0.queued.load(Ordering::Acquire) + handed;
                (queued == 0 || queued + bytes <= limit).then_some(handed + bytes)
            })
            .is_ok()
    }

    /// Counts `bytes` as waiting for their turn until the guard is dropped,
    /// if nothing waits or they fit within `limit` with what does.
    pub fn wait_turn(&self, bytes: usize, limit: usize) -> Option<WaitingTurn> {
        self.0
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w == 0 || w + bytes <= limit).then_some(w + bytes)
            })
            .ok()?;
        Some(WaitingTurn {
            counts: self.0.clone(),
            bytes,
        })
    }

    /// Resolves when the queue may have room again (see `Counts::room`):
    /// created before looking, so no such moment is missed.
    pub fn room_told(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.0.room.notified()
    }

    /// The `Peer` took what was handed with [`SendGauge::hand`].
    pub fn taken(&self, bytes: usize) {
        take_from(&self.0.handed, bytes);
    }

    /// The peer takes at most `bytes` in flight unmerged.
    pub fn set_window(&self, bytes: usize) {
        self.0.window.store(bytes, Ordering::Release);
    }

    /// A frame the peer merges and reports, weighing `bytes`, is sent.
    pub fn sent_unmerged(&self, bytes: usize) {
        self.0.unmerged.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The peer reported frames weighing `bytes` merged.
    pub fn merged(&self, bytes: usize) {
        take_from(&self.0.unmerged, bytes);
    }

    /// Sent and not yet reported merged.
    pub fn unmerged(&self) -> usize {
        self.0.unmerged.load(Ordering::Acquire)
    }

    /// How much more a paced sender may send now, if anything: what keeps
    /// the queue within `high_water` and what is in flight unmerged within
    /// the smaller of `high_water` and the peer's window (`None`: wait).
    pub fn room(&self, high_water: usize) -> Option<usize> {
        let queued = self.queued();
        let window = match self.0.window.load(Ordering::Acquire) {
            0 => high_water,
            w => w.min(high_water),
        };
        let unmerged = self.unmerged();
        if queued > high_water || unmerged > window {
            return None;
        }
        Some((high_water - queued).min(window - unmerged).max(1))
    }

    fn in_queue(&self) -> &AtomicUsize {
        &self.0.queued
    }
}

/// Bytes of a frame waiting for its turn (see [`SendGauge::wait_turn`]).
pub struct WaitingTurn {
    counts: Arc<Counts>,
    bytes: usize,
}

impl Drop for WaitingTurn {
    fn drop(&mut self) {
        take_from(&self.counts.waiting, self.bytes);
    }
}

/// The queue is full: the bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Bytes queued when the push failed.
    pub queued: usize,
}

/// The `Peer`'s end of a link's queue.
#[derive(Clone)]
pub struct SendQueue {
    tx: mpsc::UnboundedSender<Outgoing>,
    gauge: SendGauge,
    max_bytes: usize,
    closing: Arc<Notify>,
}

/// The socket's end: a stream of what to write, in order.
pub struct SendStream {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    gauge: SendGauge,
    /// Half the queue's budget: below it, frames waiting for their turn
    /// are told.
    half: usize,
}

fn weight(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(b) | Outgoing::Pong(b) => b.len(),
        Outgoing::Close(r) => r.len(),
    }
}

impl SendQueue {
    /// A queue of about `max_bytes` (one frame larger than that still goes
    /// through an empty queue).
    pub fn new(max_bytes: usize) -> (SendQueue, SendStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gauge = SendGauge::default();
        let queue = SendQueue {
            tx,
            gauge: gauge.clone(),
            max_bytes: max_bytes.max(1),
            closing: Arc::new(Notify::new()),
        };
        let half = max_bytes.max(1) / 2;
        (queue, SendStream { rx, gauge, half })
    }

    /// The queue's gauge.
    pub fn gauge(&self) -> SendGauge {
        self.gauge.clone()
    }

    fn put(&self, item: Outgoing) {
        let w = weight(&item);
        self.gauge.in_queue().fetch_add(w, Ordering::AcqRel);
        if self.tx.send(item).is_err() {
            // The socket is gone; nothing will take it out.
            self.gauge.in_queue().fetch_sub(w, Ordering::AcqRel);
        }
    }

    /// Queues a frame, or fails if that would pass the budget.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        let queued = self.gauge.in_queue().load(Ordering::Acquire);
        if queued > 0 && queued + frame.len() > self.max_bytes {
            return Err(Overflow { queued });
        }
        self.put(Outgoing::Frame(frame));
        Ok(())
    }

    /// Queues a frame past the budget: the last ones of a link (its
    /// refusal), which are small and end it.
    pub fn push_last(&self, frame: Bytes) {
        self.put(Outgoing::Frame(frame));
    }

    /// Queues a pong, dropped if the queue is full (the next ping gets one).
    pub fn pong(&self, payload: Bytes) {
        if self.gauge.in_queue().load(Ordering::Acquire) + payload.len() <= self.max_bytes {
            self.put(Outgoing::Pong(payload));
        }
    }

    /// Queues the close, behind the frames before it, and tells the socket
    /// it may give up writing those after a grace period
    /// ([`SendQueue::closing`]).
    pub fn close(&self, reason: String) {
        self.put(Outgoing::Close(reason));
        self.closing.notify_one();
    }

    /// Resolves once [`SendQueue::close`] was called.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + 'static {
        let closing = self.closing.clone();
        async move { closing.notified().await }
    }
}

impl Stream for SendStream {
    type Item = Outgoing;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Outgoing>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(item)) = &polled {
            take_from(self.gauge.in_queue(), weight(item));
            if self.gauge.queued() <= self.half {
                self.gauge.0.room.notify_waiters();
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn a_full_queue_refuses_until_the_socket_takes_frames() {
        actix::System::new().block_on(full_queue());
    }

    async fn full_queue() {
        let (q, mut s) = SendQueue::new(100);
        // One frame bigger than the budget goes through an empty queue.
        q.push(frame(150)).unwrap();
        assert_eq!(q.push(frame(1)), Err(Overflow { queued: 150 }));
        assert!(matches!(s.next().await, Some(Outgoing::Frame(b)) if b.len() == 150));
        assert_eq!(q.gauge().queued(), 0);
        q.push(frame(60)).unwrap();
        q.push(frame(40)).unwrap();
        assert_eq!(q.push(frame(1)), Err(Overflow { queued: 100 }));
        // The refusal and the close still go, behind the frames, in order.
        q.push_last(frame(3));
        q.close("bye".into());
        let mut sizes = Vec::new();
        for _ in 0..3 {
            match s.next().await {
                Some(Outgoing::Frame(b)) => sizes.push(b.len()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sizes, [60, 40, 3]);
        assert!(matches!(s.next().await, Some(Outgoing::Close(r)) if r == "bye"));
        assert_eq!(q.gauge().queued(), 0);
    }

    #[test]
    fn a_paced_sender_keeps_what_the_peer_has_not_merged_within_its_window() {
        let (q, _s) = SendQueue::new(1000);
        let gauge = q.gauge();
        // No window known: the share alone.
        assert_eq!(gauge.room(100), Some(100));
        gauge.set_window(40);
        assert_eq!(gauge.room(100), Some(40));
        gauge.sent_unmerged(30);
        assert_eq!(gauge.room(100), Some(10));
        gauge.sent_unmerged(30);
        assert_eq!(gauge.room(100), None, "60 in flight, window 40");
        gauge.merged(50);
        assert_eq!(gauge.room(100), Some(30));
        gauge.merged(500);
        assert_eq!(gauge.unmerged(), 0, "never below nothing");
        // The queue counts too, and a window above the share is the share.
        gauge.set_window(1 << 20);
        gauge.hand(95);
        assert_eq!(gauge.room(100), Some(5));
        gauge.hand(10);
        assert_eq!(gauge.room(100), None);
    }

    #[test]
    fn pongs_are_dropped_when_full_and_a_gone_socket_counts_nothing() {
        let (q, s) = SendQueue::new(10);
        q.push(frame(10)).unwrap();
        q.pong(frame(2));
        assert_eq!(q.gauge().queued(), 10);
        drop(s);
        q.push_last(frame(5));
        assert_eq!(q.gauge().queued(), 10);
    }

    #[test]
    fn a_frame_is_handed_in_turn_only_within_the_limit_or_to_an_empty_queue() {
        let gauge = SendGauge::default();
        assert!(gauge.try_hand(500, 100), "an empty queue takes any frame");
        assert!(!gauge.try_hand(1, 100), "500 on their way");
        gauge.taken(500);
        assert!(gauge.try_hand(60, 100));
        assert!(gauge.try_hand(40, 100));
        assert!(!gauge.try_hand(1, 100));
        assert_eq!(gauge.queued(), 100);
    }

    #[test]
    fn frames_waiting_their_turn_are_bounded_and_told_when_the_queue_has_room() {
        actix::System::new().block_on(async {
            let (queue, mut stream) = SendQueue::new(100);
            let gauge = queue.gauge();
            // What waits is bounded: one alone always, more within the limit.
            let a = gauge.wait_turn(500, 100).expect("alone");
            assert!(gauge.wait_turn(1, 100).is_none());
            drop(a);
            let b = gauge.wait_turn(60, 100).expect("fits");
            assert!(gauge.wait_turn(50, 100).is_none());
            drop(b);
            // Told once the socket takes a frame and the queue holds at
            // most half its budget, not before.
            queue.push(frame(40)).unwrap();
            queue.push(frame(40)).unwrap();
            let told = gauge.room_told();
            futures_util::pin_mut!(told);
            assert!(futures_util::FutureExt::now_or_never(told.as_mut()).is_none());
            stream.next().await.unwrap();
            assert!(futures_util::FutureExt::now_or_never(told.as_mut()).is_some());
        });
    }
}
