//! `Subscriber`: one client session (a WebSocket, an SSE stream or an
//! embedded subscription) and its subscriptions.
//!
//! For each subscription it registers with the hub (which fixes the cut: the
//! log head `H`), sends the snapshot of the prefix — or, when resuming, the
//! changes after the client's cursor up to `H` — then `ready`, then every live
//! change after `H`. Live changes that arrive while the snapshot is being sent
//! wait in a per-subscription buffer, so nothing between snapshot and live is
//! lost.
//!
//! Everything it sends goes through an [`Outbox`] bounded in items and bytes.
//! The snapshot is paced by the reader; live changes never wait: when the
//! outbox is full the session is *lagging* — it gets a final
//! [`StreamItem::Lagged`] and stops, and the client resumes from its last
//! cursor. A client that stops reading costs the node at most that bound.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::Stream;
use tokio::sync::{mpsc, Notify};

use crate::cursor::Cursor;
use crate::error::NodeError;
use crate::hub::{Change, Deliver, Hub, HubStats, Leave, Register, SubscriberId, Unregister};
use crate::model::{version::wall_micros, Path};
use crate::store::{Store, StoreError, Stored};

/// Store entries read per step of a snapshot or replay.
const READ_CHUNK: usize = 256;

/// What a session streams to its client, in order.
#[derive(Clone, Debug)]
pub enum StreamItem {
    /// A current value under a new subscription's prefix (before `Ready`).
    Snapshot(Arc<Change>),
    /// The subscription to `prefix` is up to date as of `cursor`.
    Ready {
        /// The subscription.
        prefix: Path,
        /// The resume point.
        cursor: Cursor,
    },
    /// A change (live, or replayed after a resume cursor).
    Update(Arc<Change>),
    /// The resume cursor for `prefix` could not be honoured: drop what you
    /// hold under it; a fresh snapshot follows.
    Reset {
        /// The subscription.
        prefix: Path,
    },
    /// Nothing happened for a while; everything up to `cursor` was delivered.
    Ping {
        /// The log head.
        cursor: Cursor,
    },
    /// The client read too slowly; the session ends here. Resume from the
    /// last cursor received.
    Lagged,
    /// The store failed while sending `prefix`'s snapshot: what was sent of
    /// it is not the whole state, and the session ends here (never with a
    /// `Ready` that would claim it is). The client may retry.
    Failed {
        /// The subscription.
        prefix: Path,
        /// What failed.
        detail: String,
    },
}

impl StreamItem {
    /// Bytes this item is counted as in the outbox budget.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = 96;
        match self {
            StreamItem::Snapshot(c) | StreamItem::Update(c) => {
                OVERHEAD
                    + c.event.path.as_str().len()
                    + c.event.value.as_ref().map_or(0, |v| v.len())
            }
            _ => OVERHEAD,
        }
    }
}

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
enum PushError {
    Full,
    Closed,
    /// A store read failed: the snapshot cannot be whole.
    Failed(String),
}

impl Outbox {
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
    fn try_push(&self, item: StreamItem) -> Result<(), PushError> {
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
    async fn push_paced(&self, item: StreamItem) -> Result<(), PushError> {
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
    fn push_last(&self, item: StreamItem) {
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

/// Starts streaming a prefix to this session. `since` is a resume cursor;
/// one that cannot be honoured (malformed, another store, trimmed) gives a
/// `Reset` and a fresh snapshot.
#[derive(Message)]
#[rtype(result = "Result<(), NodeError>")]
pub struct Subscribe {
    /// The prefix.
    pub prefix: Path,
    /// Resume after this cursor instead of sending a snapshot.
    pub since: Option<String>,
}

/// Stops streaming a prefix.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The prefix.
    pub prefix: Path,
}

/// What a subscriber needs of its node.
pub(crate) struct SessionContext {
    pub store: Arc<dyn Store>,
    pub hub: Addr<Hub>,
    pub incarnation: Arc<str>,
    pub ping_interval: Duration,
    pub max_subscriptions: usize,
    pub max_buffered: usize,
    pub stats: Arc<HubStats>,
}

struct Subscription {
    prefix: Path,
    live: bool,
    generation: u64,
    /// Live changes that arrived before `ready`.
    pending: Vec<Arc<Change>>,
}

/// The actor of one client session.
pub struct Subscriber {
    id: SubscriberId,
    ctx: Arc<SessionContext>,
    outbox: Outbox,
    subscriptions: Vec<Subscription>,
    generation: u64,
    buffered: usize,
    last_sent: Instant,
}

impl Subscriber {
    pub(crate) fn new(id: SubscriberId, ctx: Arc<SessionContext>, outbox: Outbox) -> Subscriber {
        Subscriber {
            id,
            ctx,
            outbox,
            subscriptions: Vec::new(),
            generation: 0,
            buffered: 0,
            last_sent: Instant::now(),
        }
    }

    fn push_live(&mut self, item: StreamItem, ctx: &mut Context<Self>) {
        match self.outbox.try_push(item) {
            Ok(()) => self.last_sent = Instant::now(),
            Err(PushError::Full) => self.lag(ctx),
            // (`Failed` comes only from store reads, never from a push.)
            Err(PushError::Closed | PushError::Failed(_)) => ctx.stop(),
        }
    }

    /// Ends the session with [`StreamItem::Failed`]: a snapshot could not
    /// be read whole.
    fn fail(&mut self, prefix: Path, detail: String, ctx: &mut Context<Self>) {
        log::error!(
            "session {}: the snapshot of '{prefix}' failed: {detail}",
            self.id
        );
        self.outbox.push_last(StreamItem::Failed { prefix, detail });
        ctx.stop();
    }

    fn lag(&mut self, ctx: &mut Context<Self>) {
        if ctx.state() == ActorState::Running {
            self.ctx.stats.lagged.fetch_add(1, Ordering::Relaxed);
        }
        log::debug!("session {} lags; closing it", self.id);
        self.outbox.push_last(StreamItem::Lagged);
        ctx.stop();
    }

    /// The snapshot (or replay) of a subscription is out: send `ready` and
    /// what arrived meanwhile.
    fn go_live(&mut self, generation: u64, head: u64, ctx: &mut Context<Self>) {
        let Some(sub) = self
            .subscriptions
            .iter_mut()
            .find(|s| s.generation == generation)
        else {
            return;
        };
        sub.live = true;
        let prefix = sub.prefix.clone();
        let pending = std::mem::take(&mut sub.pending);
        self.buffered -= pending.len();
        let cursor = Cursor {
            incarnation: self.ctx.incarnation.clone(),
            seq: head,
        };
        self.push_live(StreamItem::Ready { prefix, cursor }, ctx);
        for change in pending {
            if change.seq > head {
                self.push_live(StreamItem::Update(change), ctx);
            }
        }
    }
}

/// Sends the first part of a subscription: a snapshot, or the changes after
/// `since` up to `head` (with a `Reset` + snapshot when that is impossible).
async fn send_initial(
    ctx: Arc<SessionContext>,
    outbox: Outbox,
    prefix: Path,
    since: Option<String>,
    head: u64,
) -> Result<(), PushError> {
    if let Some(since) = since {
        let cursor = Cursor::parse(&since).ok();
        let resumable = cursor
            .filter(|c| *c.incarnation == *ctx.incarnation && c.seq <= head)
            .map(|c| c.seq);
        if let Some(after) = resumable {
            if replay(&ctx, &outbox, &prefix, after, head).await? {
                return Ok(());
            }
        }
        outbox
            .push_paced(StreamItem::Reset {
                prefix: prefix.clone(),
            })
            .await?;
    }
    snapshot(&ctx, &outbox, &prefix).await
}

/// Replays log entries `(after, head]` under `prefix`. False if the log no
/// longer reaches back to `after` (or was trimmed while reading).
async fn replay(
    ctx: &SessionContext,
    outbox: &Outbox,
    prefix: &Path,
    after: u64,
    head: u64,
) -> Result<bool, PushError> {
    let mut next = after + 1;
    while next <= head {
        let from = next - 1;
        let read = off_thread(&ctx.store, move |store| store.log_after(from, READ_CHUNK));
        let entries = match read.await {
            Ok(entries) => entries,
            Err(e) => {
                log::error!("replay from {next} failed: {e}");
                return Ok(false);
            }
        };
        if entries.is_empty() {
            return Ok(false);
        }
        for stored in entries {
            if next > head {
                return Ok(true); // later changes come live from the hub
            }
            if stored.seq != Some(next) {
                return Ok(false); // trimmed away: cannot resume exactly
            }
            next += 1;
            if prefix.covers(&stored.event.path) {
                let change = to_change(stored, &ctx.incarnation);
                outbox.push_paced(StreamItem::Update(change)).await?;
            }
        }
    }
    Ok(true)
}

/// Sends every live value under `prefix`, in path order.
async fn snapshot(ctx: &SessionContext, outbox: &Outbox, prefix: &Path) -> Result<(), PushError> {
    let mut after: Option<String> = None;
    loop {
        let (scanned, from) = (prefix.clone(), after.take());
        let read = off_thread(&ctx.store, move |store| {
            store.scan_latest(&scanned, from.as_deref(), READ_CHUNK)
        });
        let chunk = read.await.map_err(|e| PushError::Failed(e.to_string()))?;
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        after = Some(last.event.path.as_str().to_string());
        let full = chunk.len() == READ_CHUNK;
        let now = wall_micros();
        for stored in chunk {
            if stored.event.is_live_at(now) {
                outbox
                    .push_paced(StreamItem::Snapshot(to_change(stored, &ctx.incarnation)))
                    .await?;
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// Runs a store read on a blocking thread and waits for it without holding
/// the session's thread: a session runs on the HTTP worker that serves its
/// socket, beside many others, and a snapshot over many tombstones or the
/// replay of a stale cursor may read for a long time without sending
/// anything.
async fn off_thread<T: Send + 'static>(
    store: &Arc<dyn Store>,
    read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&*store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Failed(format!("a store read stopped: {e}"))))
}

fn to_change(stored: Stored, incarnation: &Arc<str>) -> Arc<Change> {
    Arc::new(Change::new(
        Arc::new(stored.event),
        stored.seq.unwrap_or(0),
        incarnation,
    ))
}

impl Actor for Subscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.ctx.max_buffered.max(16));
        let tx = self.outbox.tx.clone();
        ctx.spawn(
            async move { tx.closed().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.ctx.hub.do_send(Leave { id: self.id });
    }
}

impl Handler<Subscribe> for Subscriber {
    type Result = ResponseActFuture<Self, Result<(), NodeError>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if self.subscriptions.iter().any(|s| s.prefix == msg.prefix) {
            return Box::pin(fut::ready(Ok(())));
        }
        if self.subscriptions.len() >= self.ctx.max_subscriptions {
            return Box::pin(fut::ready(Err(NodeError::TooManySubscriptions(
                self.ctx.max_subscriptions,
            ))));
        }
        self.generation += 1;
        let generation = self.generation;
        self.subscriptions.push(Subscription {
            prefix: msg.prefix.clone(),
            live: false,
            generation,
            pending: Vec::new(),
        });
        let register = self.ctx.hub.send(Register {
            id: self.id,
            mailbox: ctx.address().recipient(),
            prefix: msg.prefix.clone(),
        });
        Box::pin(register.into_actor(self).map(move |registered, act, ctx| {
            let head = registered.map_err(|_| NodeError::ShuttingDown)?;
            let prefix = msg.prefix.clone();
            let initial = send_initial(
                act.ctx.clone(),
                act.outbox.clone(),
                msg.prefix,
                msg.since,
                head,
            );
            ctx.spawn(
                initial
                    .into_actor(act)
                    .map(move |sent, act, ctx| match sent {
                        Ok(()) => act.go_live(generation, head, ctx),
                        Err(PushError::Closed) => ctx.stop(),
                        Err(PushError::Full) => act.lag(ctx),
                        Err(PushError::Failed(detail)) => act.fail(prefix, detail, ctx),
                    }),
            );
            Ok(())
        }))
    }
}

impl Handler<Unsubscribe> for Subscriber {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        let Some(i) = self
            .subscriptions
            .iter()
            .position(|s| s.prefix == msg.prefix)
        else {
            return;
        };
        let gone = self.subscriptions.remove(i);
        self.ctx.hub.do_send(Unregister {
            id: self.id,
            prefix: gone.prefix,
        });
        self.buffered -= gone.pending.len();
        // Changes it held may be wanted by another subscription.
        for change in gone.pending {
            self.handle(Deliver::Change(change), ctx);
        }
    }
}

impl Handler<Deliver> for Subscriber {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Change(change) => {
                let path = &change.event.path;
                if self
                    .subscriptions
                    .iter()
                    .any(|s| s.live && s.prefix.covers(path))
                {
                    self.push_live(StreamItem::Update(change), ctx);
                } else if let Some(sub) = self
                    .subscriptions
                    .iter_mut()
                    .find(|s| s.prefix.covers(path))
                {
                    sub.pending.push(change);
                    self.buffered += 1;
                    if self.buffered > self.ctx.max_buffered {
                        self.lag(ctx);
                    }
                }
            }
            Deliver::Tick { head } => {
                let all_live = self.subscriptions.iter().all(|s| s.live);
                if all_live && self.last_sent.elapsed() >= self.ctx.ping_interval {
                    let cursor = Cursor {
                        incarnation: self.ctx.incarnation.clone(),
                        seq: head,
                    };
                    // A ping that does not fit is simply skipped.
                    if self.outbox.try_push(StreamItem::Ping { cursor }).is_ok() {
                        self.last_sent = Instant::now();
                    }
                }
            }
            Deliver::Lagged => self.lag(ctx),
        }
    }
}
