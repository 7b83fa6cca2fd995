//! The bounded queue between a session and its transport: [`Outbox`] on the
//! session's side, [`SessionStream`] on the transport's. Bounded in items and
//! in bytes; one slot is always kept for the final item (`Lagged`, `Failed`).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use tokio::sync::{mpsc, Notify};

use super::StreamItem;

struct OutboxState {
    queued_bytes: AtomicUsize,
    drained: Notify,
}

/// The bounded queue between a session and its transport (sending side).
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<StreamItem>,
    state: Arc<OutboxState>,
    max_bytes: usize,
    headroom: usize,
}

/// The transport's end of a session: a `Stream` of [`StreamItem`]s. Dropping
/// it ends the session.
pub struct SessionStream {
    rx: mpsc::Receiver<StreamItem>,
    state: Arc<OutboxState>,
}

#[derive(Debug)]
pub(super) enum PushError {
    Full,
    Closed,
    /// A store read failed: the snapshot cannot be whole.
    Failed(String),
}

impl Outbox {
    /// Resolves once the transport dropped its [`SessionStream`].
    pub(super) fn reader_gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// An outbox of at most `items` items and about `max_bytes` bytes.
    pub fn new(items: usize, max_bytes: usize) -> (Outbox, SessionStream) {
        let items = items.max(4);
        let (tx, rx) = mpsc::channel(items);
        let state = Arc::new(OutboxState {
            queued_bytes: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let outbox = Outbox {
            tx,
            state: state.clone(),
            max_bytes,
            headroom: items / 4,
        };
        (outbox, SessionStream { rx, state })
    }

    /// Queues a live item now, or fails when the budget is spent. One slot
    /// is always kept free for the final `Lagged`.
    pub(super) fn try_push(&self, item: StreamItem) -> Result<(), PushError> {
        if self.tx.is_closed() {
            return Err(PushError::Closed);
        }
        let w = item.weight();
        let queued = self.state.queued_bytes.load(Ordering::Acquire);
        if self.tx.capacity() <= 1 || (queued > 0 && queued + w > self.max_bytes) {
            return Err(PushError::Full);
        }
        self.state.queued_bytes.fetch_add(w, Ordering::AcqRel);
        self.tx.try_send(item).map_err(|e| {
            self.state.queued_bytes.fetch_sub(w, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::Closed,
            }
        })
    }

    /// Queues an item once the reader has made room, keeping headroom for
    /// live items. Fails only when the reader is gone.
    pub(super) async fn push_paced(&self, item: StreamItem) -> Result<(), PushError> {
        let w = item.weight();
        loop {
            let drained = self.state.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.tx.is_closed() {
                return Err(PushError::Closed);
            }
            let queued = self.state.queued_bytes.load(Ordering::Acquire);
            if self.tx.capacity() > self.headroom + 1
                && (queued == 0 || queued + w <= self.max_bytes / 2)
            {
                break;
            }
            drained.await;
        }
        self.try_push(item)
    }

    /// Queues the final item, using the reserved slot.
    pub(super) fn push_last(&self, item: StreamItem) {
        let _ = self.tx.try_send(item);
    }
}

impl Stream for SessionStream {
    type Item = StreamItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<StreamItem>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(item)) = &polled {
            let w = item.weight();
            // `Lagged` used the reserved slot without being counted.
            let _ =
                self.state
                    .queued_bytes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                        Some(q.saturating_sub(w))
                    });
            self.state.drained.notify_waiters();
        }
        polled
    }
}
