//! `Subscriber`: the actor of one client session and its subscriptions, and
//! the messages it takes ([`Subscribe`], [`Unsubscribe`], the hub's
//! `Deliver`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::initial::send_initial;
use super::interest::Readiness;
use super::outbox::{Outbox, PushError};
use super::StreamItem;
use crate::engine::hub::{Change, Deliver, Hub, HubStats, SubscriberId};
use crate::error::NodeError;
use crate::model::cursor::Cursor;
use crate::model::Path;
use crate::store::Store;

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
    /// Play history back instead of sending a snapshot (ignored with a
    /// `since` the node can honour: the client resumes).
    pub playback: Option<Playback>,
}

/// What a playback sends: every event with `from <= time`, and `time <=
/// to` when bounded (then it ends there instead of going live).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Playback {
    /// The first time (µs) played.
    pub from: u64,
    /// The last time (µs) played: the subscription ends after it.
    pub to: Option<u64>,
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
    pub hub: Arc<Hub>,
    pub incarnation: Arc<str>,
    pub ping_interval: Duration,
    pub max_subscriptions: usize,
    pub max_buffered: usize,
    pub stats: Arc<HubStats>,
    /// The prefixes this node's clients watch.
    pub interest: Arc<super::interest::Interest>,
}

struct Subscription {
    prefix: Path,
    live: bool,
    /// Registered with the hub (a playback is not until it catches up):
    /// only such a subscription holds live changes before `ready`.
    registered: bool,
    /// Set when it goes: a playback still running for it stops.
    gone: Arc<std::sync::atomic::AtomicBool>,
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
    /// Its subscriptions count as this node's interest (a client's do; a
    /// peer's watch, served here, does not).
    counts_interest: bool,
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
            counts_interest: true,
        }
    }

    /// A session whose subscriptions are not this node's interest (a
    /// peer's watch served here).
    pub(crate) fn for_peer(mut self) -> Subscriber {
        self.counts_interest = false;
        self
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

impl Actor for Subscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.ctx.max_buffered.max(16));
        ctx.spawn(
            self.outbox
                .reader_gone()
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.ctx.hub.leave(self.id);
        if self.counts_interest {
            for s in &self.subscriptions {
                self.ctx.interest.remove(&s.prefix);
            }
        }
    }
}

impl Handler<Subscribe> for Subscriber {
    type Result = Result<(), NodeError>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if self.subscriptions.iter().any(|s| s.prefix == msg.prefix) {
            return Ok(());
        }
        if self.subscriptions.len() >= self.ctx.max_subscriptions {
            return Err(NodeError::TooManySubscriptions(self.ctx.max_subscriptions));
        }
        self.generation += 1;
        let generation = self.generation;
        self.subscriptions.push(Subscription {
            prefix: msg.prefix.clone(),
            live: false,
            registered: false,
            gone: Default::default(),
            generation,
            pending: Vec::new(),
        });
        let readiness = if self.counts_interest {
            self.ctx.interest.add(&msg.prefix)
        } else {
            Readiness::Now
        };
        match readiness {
            Readiness::Now => self.start(generation, msg, ctx),
            // In a cluster, the snapshot waits for this node's copy of the
            // prefix to be complete (or the deadline: then it is what the
            // node holds, and the rest comes as updates).
            Readiness::Wait(ready, deadline) => {
                ctx.spawn(tokio::time::timeout(deadline, ready).into_actor(self).map(
                    move |waited, act, ctx| {
                        if waited.is_err() {
                            log::info!(
                                "session {}: the copy of '{}' is not complete after \
                                     {deadline:?}; its snapshot is what this node holds",
                                act.id,
                                msg.prefix
                            );
                        }
                        act.start(generation, msg, ctx);
                    },
                ));
            }
        }
        Ok(())
    }
}

impl Subscriber {
    /// Registers subscription `generation` (if it still exists) with the
    /// hub and sends its snapshot or replay.
    fn start(&mut self, generation: u64, msg: Subscribe, ctx: &mut Context<Self>) {
        if !self
            .subscriptions
            .iter()
            .any(|s| s.generation == generation)
        {
            return;
        }
        let Subscribe {
            prefix,
            since,
            playback,
        } = msg;
        if let Some(playback) = playback.filter(|_| !self.resumable(since.as_deref())) {
            return self.play(generation, prefix, playback, ctx);
        }
        // The cut: every change after `head` arrives in this mailbox.
        let head = self
            .ctx
            .hub
            .register(self.id, ctx.address().recipient(), &prefix);
        self.mark_registered(generation);
        let initial = send_initial(
            self.ctx.clone(),
            self.outbox.clone(),
            prefix.clone(),
            since,
            head,
            !self.counts_interest,
        );
        ctx.spawn(
            initial
                .into_actor(self)
                .map(move |sent, act, ctx| match sent {
                    Ok(()) => act.go_live(generation, head, ctx),
                    Err(e) => act.stopped_by(e, prefix, ctx),
                }),
        );
    }
}

impl Subscriber {
    /// True if `since` names a point of this store's log (it may still be
    /// trimmed: then the client gets a reset).
    fn resumable(&self, since: Option<&str>) -> bool {
        Cursor::names_store(since, &self.ctx.incarnation)
    }

    /// Plays back history for subscription `generation`: the events up to
    /// the log head now, in version order; then, unbounded, it registers
    /// with the hub and sends the changes made meanwhile from the log before
    /// going live; bounded, it ends with `End`.
    fn play(&mut self, generation: u64, prefix: Path, playback: Playback, ctx: &mut Context<Self>) {
        let head = self.ctx.hub.head();
        let (session, outbox) = (self.ctx.clone(), self.outbox.clone());
        let range = (playback.from, playback.to.unwrap_or(u64::MAX));
        let scope = prefix.clone();
        let gone = self
            .subscriptions
            .iter()
            .find(|s| s.generation == generation)
            .map(|s| s.gone.clone())
            .unwrap_or_default();
        let played = async move {
            super::playback::play(&session, &outbox, scope, range, head, &gone).await
        };
        ctx.spawn(
            played
                .into_actor(self)
                .map(move |sent, act, ctx| match sent {
                    Ok(()) if playback.to.is_some() => act.end(generation, prefix, ctx),
                    Ok(()) => act.catch_up(generation, prefix, head, ctx),
                    Err(e) => act.stopped_by(e, prefix, ctx),
                }),
        );
    }

    /// After a playback up to `played`: registers with the hub, sends the
    /// changes since `played` from the log, then goes live.
    fn catch_up(&mut self, generation: u64, prefix: Path, played: u64, ctx: &mut Context<Self>) {
        if !self
            .subscriptions
            .iter()
            .any(|s| s.generation == generation)
        {
            return;
        }
        let head = self
            .ctx
            .hub
            .register(self.id, ctx.address().recipient(), &prefix);
        self.mark_registered(generation);
        let (session, outbox, scope) = (self.ctx.clone(), self.outbox.clone(), prefix.clone());
        let replayed =
            async move { super::initial::replay(&session, &outbox, &scope, played, head).await };
        ctx.spawn(replayed.into_actor(self).map(move |sent, act, ctx| {
            match sent {
                Ok(true) => act.go_live(generation, head, ctx),
                Ok(false) => act.fail(
                    prefix,
                    "the change log no longer holds the changes made during the playback \
                 (--log-retention): start it again"
                        .into(),
                    ctx,
                ),
                Err(e) => act.stopped_by(e, prefix, ctx),
            }
        }));
    }

    fn mark_registered(&mut self, generation: u64) {
        if let Some(s) = self
            .subscriptions
            .iter_mut()
            .find(|s| s.generation == generation)
        {
            s.registered = true;
        }
    }

    /// A bounded playback is done: `End`, and the subscription is gone.
    fn end(&mut self, generation: u64, prefix: Path, ctx: &mut Context<Self>) {
        let Some(i) = self
            .subscriptions
            .iter()
            .position(|s| s.generation == generation)
        else {
            return;
        };
        let gone = self.subscriptions.remove(i);
        if self.counts_interest {
            self.ctx.interest.remove(&prefix);
        }
        self.push_live(StreamItem::End { prefix }, ctx);
        // (It never registered, so it holds no changes; as `Unsubscribe`
        // does, in case.)
        self.buffered -= gone.pending.len();
        for change in gone.pending {
            self.handle(Deliver::Change(change), ctx);
        }
    }

    /// What ends a session whose snapshot, replay or playback could not be
    /// sent.
    fn stopped_by(&mut self, e: PushError, prefix: Path, ctx: &mut Context<Self>) {
        match e {
            PushError::Closed => ctx.stop(),
            PushError::Full => self.lag(ctx),
            PushError::Failed(detail) => self.fail(prefix, detail, ctx),
        }
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
        gone.gone.store(true, Ordering::Relaxed);
        self.ctx.hub.unregister(self.id, &gone.prefix);
        if self.counts_interest {
            self.ctx.interest.remove(&gone.prefix);
        }
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
                    .find(|s| s.registered && s.prefix.covers(path))
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
