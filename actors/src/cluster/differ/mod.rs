//! `Differ`: one anti-entropy session with one peer over some partitions
//! (sdiff's differ). It compares the partitions' merkle roots with the
//! peer's in one question, walks the trees of those that differ (only
//! where they differ, see `merkle::diff`), then exchanges what each side
//! lacks: the events only the peer holds are fetched and merged here, those
//! only this node holds are sent and merged there. Every merge is by the
//! LWW rule, so the order does not matter and a stale event never reverts
//! a newer write made while the session ran (it joins history as a late
//! event): sdiff's rule of dropping keys written during the diff from its
//! replay holds by construction.
//!
//! The walk asks one question at a time over the link (`DiffAsk` /
//! `DiffAnswer` frames, in order with the live stream) from a blocking
//! thread; the actor routes each answer to it. A session whose link goes
//! down ends at once and leaves nothing half done: what it merged is
//! merged, and the next session starts over from the roots.

pub mod question;
pub mod sides;
pub mod throttle;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use self::question::{DiffQuestion, DiffReply, FETCH_PAGE};
use self::sides::{LocalSide, RemoteSide};
use super::frame::PeerFrame;
use super::peer::SendFrame;
use super::wire::{merge_all_acking, AckFor, WireError, WireEvent};
use super::Cluster;
use crate::merkle::diff::{diff_into, Found};
use crate::merkle::{Fingerprint, Tree, Want};
use crate::model::version::wall_micros;
use crate::store::StoreError;
use crate::Node;

/// How long a question waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Value bytes per `DiffEvents` frame, about.
const EVENTS_FRAME_BYTES: usize = 1 << 20;

/// How long a session waits for room on its link before it gives way to
/// the live stream (and fails; a later session starts over).
const SEND_WAIT: Duration = Duration::from_secs(30);

/// Partitions whose roots one question asks.
const ROOTS_PER_QUESTION: usize = 1024;

/// Anti-entropy counters of a node (`/metrics`).
#[derive(Default, Debug)]
pub struct DiffStats {
    /// Sessions that ended well.
    pub sessions_ok: AtomicU64,
    /// Sessions that failed (link down, no answer, a store error).
    pub sessions_failed: AtomicU64,
    /// Partitions whose trees were walked (their roots differed).
    pub partitions_walked: AtomicU64,
    /// Questions asked (each a round trip).
    pub questions: AtomicU64,
    /// Tree items (fingerprints, segments, names) compared, in bytes
    /// received from the peer.
    pub bytes_in: AtomicU64,
    /// Bytes of events sent to peers.
    pub bytes_out: AtomicU64,
    /// Events sent to peers.
    pub events_sent: AtomicU64,
    /// Events fetched from peers and merged here.
    pub events_received: AtomicU64,
    /// Time spent in sessions, ms.
    pub millis: AtomicU64,
    /// Time sessions' sends and answers waited for the throttle, µs.
    pub throttled_micros: AtomicU64,
}

/// A running session: its peer, its link, its actor.
type SessionEntry = (String, u64, Addr<Differ>);

/// The sessions of a node, by number (answers are routed by it).
pub struct Differs {
    sessions: Mutex<HashMap<u64, SessionEntry>>,
    next: AtomicU64,
    /// Counters.
    pub stats: DiffStats,
    /// What sessions' events may take of the links, per second.
    pub throttle: throttle::Throttle,
}

impl Differs {
    /// No sessions yet; their events throttled to `rate` bytes a second
    /// (0: not throttled).
    pub fn new(rate: u64) -> Differs {
        Differs {
            sessions: Mutex::default(),
            next: AtomicU64::default(),
            stats: DiffStats::default(),
            throttle: throttle::Throttle::new(rate),
        }
    }

    /// Waits (on a blocking thread) until the throttle lets `bytes` of
    /// events go, counting the time waited: at most
    /// [`throttle::MAX_WAIT`], so that a peer waiting for an answer (up to
    /// [`ANSWER_TIMEOUT`]) gets it, if faster than the rate.
    pub fn pace(&self, bytes: usize) {
        let wait = self.throttle.take(bytes).min(throttle::MAX_WAIT);
        if !wait.is_zero() {
            self.stats
                .throttled_micros
                .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
            std::thread::sleep(wait);
        }
    }

    /// Hands an answer from `peer` to its session, if it runs.
    pub fn answered(&self, peer: &str, session: u64, answer: Result<DiffReply, WireError>) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((with, _, addr)) = sessions.get(&session) {
            if with == peer {
                addr.do_send(Answered(answer));
            }
        }
    }

    /// Link `link` to `peer` went down: its sessions end (failed). (A
    /// second link refused while the first lasts ends nothing.)
    pub fn link_down(&self, peer: &str, link: u64) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for (with, on, addr) in sessions.values() {
            if with == peer && *on == link {
                addr.do_send(LinkGone);
            }
        }
    }

    /// Sessions running now.
    pub fn running(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// What a session did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// The peer.
    pub peer: String,
    /// Partitions compared by root.
    pub partitions: usize,
    /// Partitions whose roots differed (walked).
    pub walked: usize,
    /// Questions asked.
    pub questions: usize,
    /// Events fetched from the peer and merged here.
    pub received: usize,
    /// Events sent to the peer.
    pub sent: usize,
    /// Why it failed, if it did.
    pub failed: Option<String>,
}

impl DiffReport {
    /// Adds what another session with the same peer did (the first
    /// failure stands).
    pub fn add(&mut self, other: &DiffReport) {
        self.partitions += other.partitions;
        self.walked += other.walked;
        self.questions += other.questions;
        self.received += other.received;
        self.sent += other.sent;
        if self.failed.is_none() {
            self.failed.clone_from(&other.failed);
        }
    }
}

/// Value bytes of one frame of a hand-over's imports, about (at least one
/// event): a frame of them and one more event fit a peer frame.
const HAND_OVER_FRAME_BYTES: usize = 4 << 20;
const _: () = assert!(
    HAND_OVER_FRAME_BYTES + crate::cluster::MAX_VALUE_BYTES + (1 << 20)
        <= crate::cluster::MAX_FRAME_BYTES
);

/// What an event weighs in a frame, about.
fn wire_bytes(event: &WireEvent) -> usize {
    event.path.len() + event.value.as_ref().map_or(0, |v| v.len()) + 64
}

/// `events` in frames of about [`HAND_OVER_FRAME_BYTES`] (one event at
/// least each).
fn import_frames(events: Vec<WireEvent>) -> Vec<Vec<WireEvent>> {
    let mut frames: Vec<Vec<WireEvent>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = wire_bytes(&event);
        match frames.last_mut() {
            Some(frame) if bytes + size <= HAND_OVER_FRAME_BYTES => frame.push(event),
            _ => {
                frames.push(vec![event]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    frames
}

/// An answer to the session's question.
#[derive(Message)]
#[rtype(result = "()")]
struct Answered(Result<DiffReply, WireError>);

/// The session's link went down.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkGone;

/// Acknowledges events held here already (see [`Push`]).
type AckHeld = Box<dyn Fn(&[crate::store::Stored]) + Send>;

/// What the walk does with the events it finds, from its blocking thread.
struct Push {
    /// Merges events fetched from the peer here; answers how many changed
    /// something (fails if one could not be stored).
    merge: Box<dyn Fn(Vec<WireEvent>) -> Result<usize, String> + Send>,
    /// Sends events the peer lacks, waiting for room on the link (in a
    /// hand-over, until the peer says it took them).
    send: Box<dyn Fn(Vec<WireEvent>) -> Result<(), String> + Send>,
    /// Acknowledges the events among these that the peer stamped lately
    /// (held here already, so not fetched).
    ack: AckHeld,
}

/// What a session does with what its walk finds, as it finds it: the
/// events only the peer holds are fetched and merged here, those only this
/// node holds are sent (a page at a time, so a session holds one page).
struct Exchange<'a> {
    node: &'a Node,
    remote: &'a RemoteSide,
    push: &'a Push,
    part: u16,
    received: usize,
    sent: usize,
    /// Fetch questions asked.
    fetches: usize,
}

impl Found for Exchange<'_> {
    fn right(&mut self, mut wanted: Vec<Vec<u8>>) -> Result<(), StoreError> {
        wanted.sort();
        wanted.dedup();
        // What this node's tree lacks may be in its store already: merged
        // moments ago (by a stream, say) and not folded yet (the trees
        // trail the writes by up to a second). Not fetched again; the
        // peer's own recent ones are acknowledged, as if fetched.
        let held = self
            .node
            .events_named(&wanted)
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        if !held.is_empty() {
            (self.push.ack)(&held);
            let held: std::collections::HashSet<Vec<u8>> = held
                .iter()
                .map(|s| crate::store::event_name(&s.event.path, &s.event.version, &s.digest))
                .collect();
            wanted.retain(|n| !held.contains(n));
        }
        let mut at = 0;
        while at < wanted.len() {
            let names = wanted[at..(at + FETCH_PAGE).min(wanted.len())].to_vec();
            self.fetches += 1;
            match self.remote.ask(self.part, DiffQuestion::Fetch { names })? {
                DiffReply::Events { events, answered } => {
                    at += (answered as usize).max(1);
                    self.received += (self.push.merge)(events).map_err(StoreError::Failed)?;
                }
                other => {
                    return Err(StoreError::Failed(format!(
                        "the peer answered out of turn: {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn left(&mut self, names: Vec<Vec<u8>>) -> Result<(), StoreError> {
        for names in names.chunks(FETCH_PAGE) {
            let mine: Vec<WireEvent> = self
                .node
                .events_named(names)
                .map_err(|e| StoreError::Failed(e.to_string()))?
                .iter()
                .map(|s| WireEvent::from(&s.event))
                .collect();
            self.sent += mine.len();
            (self.push.send)(mine).map_err(StoreError::Failed)?;
        }
        Ok(())
    }
}

/// The channel on which the walk waits for its answer, if it waits.
type Waiting = Arc<Mutex<Option<SyncSender<Result<DiffReply, WireError>>>>>;

/// One session.
pub struct Differ {
    node: Node,
    cluster: Arc<Cluster>,
    peer: String,
    link: u64,
    parts: Vec<u16>,
    prefix: String,
    /// Both ways, a hand-over (see [`Differ::handing_over`]) or a pull
    /// (see [`Differ::pulling_after_reset`]).
    want: Want,
    /// The peer's trees must hold its log through this seq (see
    /// [`Differ::pulling_after_reset`]).
    through: u64,
    session: u64,
    /// Where the walk waits for the answer to its question.
    waiting: Waiting,
    started: Instant,
    done: Option<oneshot::Sender<DiffReport>>,
    report: DiffReport,
    finished: bool,
}

impl Differ {
    /// A session with `peer` over link `link`, comparing `parts` under
    /// `prefix` (`""`: the whole partitions); `done` hears its report.
    pub fn new(
        node: Node,
        cluster: Arc<Cluster>,
        (peer, link): (String, u64),
        parts: Vec<u16>,
        prefix: String,
        done: Option<oneshot::Sender<DiffReport>>,
    ) -> Differ {
        let session = cluster.differs.next.fetch_add(1, Ordering::Relaxed) + 1;
        Differ {
            node,
            cluster,
            report: DiffReport {
                peer: peer.clone(),
                ..DiffReport::default()
            },
            peer,
            link,
            parts,
            prefix,
            want: Want::Both,
            through: 0,
            session,
            waiting: Arc::default(),
            started: Instant::now(),
            done,
            finished: false,
        }
    }

    /// Makes the session a hand-over: it sends the peer what it lacks and
    /// fetches nothing (a node giving up a copy it holds, whose events the
    /// peer may lack, and which wants none back).
    pub fn handing_over(mut self) -> Differ {
        self.want = Want::LeftOnly;
        self
    }

    /// Makes the session a follower's pull after its stream from the peer
    /// was reset at `head`: it compares the peer's trees once they hold the
    /// peer's log through `head`, fetches what this node lacks, and sends
    /// nothing (the peer, following this node too, pulls what it lacks).
    pub fn pulling_after_reset(mut self, head: u64) -> Differ {
        self.want = Want::RightOnly;
        self.through = head;
        self
    }

    /// How the walk asks the peer a question and waits for the answer.
    fn asker(&self) -> sides::Ask {
        let cluster = self.cluster.clone();
        let (peer, link, session) = (self.peer.clone(), self.link, self.session);
        let waiting = self.waiting.clone();
        Box::new(move |part, question| {
            let (tx, rx) = sync_channel(1);
            *waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            let Some((id, addr)) = cluster.links.link(&peer) else {
                return Err("the link went down".into());
            };
            if id != link {
                return Err("the link went down".into());
            }
            cluster
                .differs
                .stats
                .questions
                .fetch_add(1, Ordering::Relaxed);
            addr.do_send(SendFrame(PeerFrame::DiffAsk {
                session,
                part,
                question,
            }));
            match rx.recv_timeout(ANSWER_TIMEOUT) {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(format!("it refused: {e:?}")),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    Err(format!("no answer within {ANSWER_TIMEOUT:?}"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    Err("the session ended".into())
                }
            }
        })
    }

    /// The walk, on a blocking thread: roots, trees, then the events.
    fn find(
        node: Node,
        (remote, push): (RemoteSide, Push),
        (parts, prefix, want, through): (Vec<u16>, String, Want, u64),
        mut report: DiffReport,
    ) -> Result<DiffReport, String> {
        let local = LocalSide { node: node.clone() };
        let store = node.store();
        let tree = Tree::new(store.as_ref());
        // Which partitions differ: one question per many roots.
        let mut differing = Vec::new();
        for chunk in parts.chunks(ROOTS_PER_QUESTION) {
            let first = chunk[0];
            let roots = if prefix.is_empty() {
                match remote
                    .ask(
                        first,
                        DiffQuestion::Roots {
                            parts: chunk.to_vec(),
                            through,
                        },
                    )
                    .map_err(|e| e.to_string())?
                {
                    DiffReply::Roots(r) if r.len() == chunk.len() => r,
                    other => return Err(format!("the peer answered out of turn: {other:?}")),
                }
            } else {
                Vec::new()
            };
            report.questions += usize::from(prefix.is_empty());
            for (i, &part) in chunk.iter().enumerate() {
                report.partitions += 1;
                let same = match roots.get(i) {
                    Some(theirs) => {
                        let mine = tree.node(part, "").map_err(|e| e.to_string())?.subtree;
                        mine.truncated() == Fingerprint::from(*theirs)
                    }
                    None => false,
                };
                if !same {
                    differing.push(part);
                }
            }
        }
        // A partition at a time, and within it as the walk finds them: what
        // this node lacks is fetched and merged, what the peer lacks is sent,
        // a page of names at a time (a session holds one page, however many
        // events differ).
        for part in differing {
            let mut exchange = Exchange {
                node: &node,
                remote: &remote,
                push: &push,
                part,
                received: 0,
                sent: 0,
                fetches: 0,
            };
            let walk = diff_into(&local, &remote, (part, &prefix), want, &mut exchange)
                .map_err(|e| e.to_string())?;
            report.walked += 1;
            report.questions += walk.questions + exchange.fetches;
            report.received += exchange.received;
            report.sent += exchange.sent;
        }
        Ok(report)
    }

    fn finish(&mut self, failed: Option<String>, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let stats = &self.cluster.differs.stats;
        match &failed {
            None => stats.sessions_ok.fetch_add(1, Ordering::Relaxed),
            Some(why) => {
                log::warn!("anti-entropy with '{}': {why}", self.peer);
                stats.sessions_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        stats
            .millis
            .fetch_add(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.report.failed = failed;
        ctx.stop();
    }

    /// How the walk merges and sends events: merges through this node's
    /// partitions (driven from the walk's thread), sends in frames of
    /// bounded size, each once the link holds under a quarter of its
    /// queue.
    fn pusher(&self) -> Push {
        let (node, handle) = (self.node.clone(), tokio::runtime::Handle::current());
        let cluster = self.cluster.clone();
        let whose = format!("an anti-entropy event from '{}'", self.peer);
        let (peer, link) = (self.peer.clone(), self.link);
        let merge = Box::new(move |events: Vec<WireEvent>| {
            // The peer's own recent events are acknowledged once held here,
            // as the replication stream does: a write it coordinated before
            // this node followed it may be waiting for this owner.
            let recent_after =
                wall_micros().saturating_sub(2 * cluster.config.ack_timeout.as_micros() as u64);
            let ack = AckFor {
                node: &peer,
                after: recent_after,
            };
            let merged = handle.block_on(merge_all_acking(&node, events, &whose, Some(ack)));
            if !merged.acks.is_empty() {
                if let Some((id, addr)) = cluster.links.link(&peer) {
                    if id == link {
                        addr.do_send(SendFrame(PeerFrame::Ack {
                            events: merged.acks,
                        }));
                    }
                }
            }
            if merged.failed > 0 {
                return Err(format!("{} events could not be stored here", merged.failed));
            }
            // An event that was here already moves nothing: not counted.
            cluster
                .differs
                .stats
                .events_received
                .fetch_add(merged.changed as u64, Ordering::Relaxed);
            Ok(merged.changed)
        });
        let cluster = self.cluster.clone();
        let (peer, link, session) = (self.peer.clone(), self.link, self.session);
        if self.want == Want::LeftOnly {
            return Push {
                merge,
                send: self.hand_over_sender(),
                ack: self.acker(),
            };
        }
        let send = Box::new(move |events: Vec<WireEvent>| {
            let high_water = cluster.config.send_queue_bytes / 4;
            let stats = &cluster.differs.stats;
            let mut frame = Vec::new();
            let mut bytes = 0;
            let total = events.len();
            for (i, event) in events.into_iter().enumerate() {
                bytes += event.path.len() + event.value.as_ref().map_or(0, |v| v.len()) + 64;
                frame.push(event);
                if bytes < EVENTS_FRAME_BYTES && i + 1 < total {
                    continue;
                }
                let mut waited = Duration::ZERO;
                loop {
                    let Some((id, addr, queue)) = cluster.links.link_and_queue(&peer) else {
                        return Err("the link went down".to_string());
                    };
                    if id != link {
                        return Err("the link went down".to_string());
                    }
                    if queue.room(high_water).is_some() {
                        cluster.differs.pace(bytes);
                        stats.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
                        stats
                            .events_sent
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        let frame = PeerFrame::DiffEvents {
                            session,
                            events: std::mem::take(&mut frame),
                        };
                        queue.sent_unmerged(frame.merge_weight());
                        queue.hand(bytes);
                        addr.do_send(super::peer::SendPaced {
                            frame,
                            weight: bytes,
                        });
                        break;
                    }
                    if waited >= SEND_WAIT {
                        return Err(format!(
                            "the link stayed full for {SEND_WAIT:?} (the session gives way)"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    waited += Duration::from_millis(10);
                }
                bytes = 0;
            }
            Ok(())
        });
        Push {
            merge,
            send,
            ack: self.acker(),
        }
    }

    /// How a hand-over sends what the peer lacks: as imports it asks the
    /// peer to merge, a frame of about [`HAND_OVER_FRAME_BYTES`] at a time,
    /// each answered once merged as durably as the peer writes (so an event
    /// the peer takes as too late, older than what it keeps, counts as
    /// taken: it is not sent again for ever). Fails unless the peer took
    /// every event.
    fn hand_over_sender(&self) -> Box<dyn Fn(Vec<WireEvent>) -> Result<(), String> + Send> {
        let handle = tokio::runtime::Handle::current();
        let cluster = self.cluster.clone();
        let (peer, link) = (self.peer.clone(), self.link);
        Box::new(move |events: Vec<WireEvent>| {
            let stats = &cluster.differs.stats;
            for frame in import_frames(events) {
                let Some((id, addr)) = cluster.links.link(&peer) else {
                    return Err("the link went down".to_string());
                };
                if id != link {
                    return Err("the link went down".to_string());
                }
                let (n, bytes) = (frame.len(), frame.iter().map(wire_bytes).sum::<usize>());
                cluster.differs.pace(bytes);
                stats.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
                stats.events_sent.fetch_add(n as u64, Ordering::Relaxed);
                let deadline = cluster.config.ack_timeout + cluster.config.peer_dead_after;
                let asked = |id| PeerFrame::Import { id, events: frame };
                let answer = handle.block_on(crate::cluster::fetch::ask_within(
                    &cluster,
                    (&peer, (link, addr)),
                    asked,
                    deadline,
                ));
                match answer {
                    Ok(super::Answer::Import(Ok(r))) if r.new + r.existing + r.too_late == n => {}
                    Ok(super::Answer::Import(Ok(r))) => {
                        return Err(format!(
                            "the owner took {} of {n} events handed over",
                            r.new + r.existing + r.too_late
                        ))
                    }
                    Ok(super::Answer::Import(Err(e))) => {
                        return Err(format!("the owner refused a hand-over: {e:?}"))
                    }
                    _ => return Err("the owner did not answer a hand-over in time".to_string()),
                }
            }
            Ok(())
        })
    }

    /// How the walk acknowledges the peer's recent events it finds held
    /// here already (not fetched, so not acknowledged by a merge).
    fn acker(&self) -> AckHeld {
        let cluster = self.cluster.clone();
        let (peer, link) = (self.peer.clone(), self.link);
        Box::new(move |held: &[crate::store::Stored]| {
            let recent_after =
                wall_micros().saturating_sub(2 * cluster.config.ack_timeout.as_micros() as u64);
            let events: Vec<crate::cluster::wire::AckedEvent> = held
                .iter()
                .filter(|s| {
                    s.event.version.node.as_str() == peer && s.event.version.time > recent_after
                })
                .map(|s| {
                    (
                        s.event.path.as_str().to_string(),
                        s.event.version.time,
                        s.digest,
                    )
                })
                .collect();
            if events.is_empty() {
                return;
            }
            if let Some((id, addr)) = cluster.links.link(&peer) {
                if id == link {
                    addr.do_send(SendFrame(PeerFrame::Ack { events }));
                }
            }
        })
    }
}

impl Actor for Differ {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.cluster
            .differs
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.session, (self.peer.clone(), self.link, ctx.address()));
        let remote = RemoteSide { ask: self.asker() };
        let push = self.pusher();
        let node = self.node.clone();
        let what = (
            self.parts.clone(),
            self.prefix.clone(),
            self.want,
            self.through,
        );
        let report = self.report.clone();
        let walk =
            tokio::task::spawn_blocking(move || Differ::find(node, (remote, push), what, report));
        ctx.spawn(walk.into_actor(self).map(|found, this, ctx| match found {
            Ok(Ok(report)) => {
                this.cluster
                    .differs
                    .stats
                    .partitions_walked
                    .fetch_add(report.walked as u64, Ordering::Relaxed);
                this.report = report;
                this.finish(None, ctx);
            }
            Ok(Err(why)) => this.finish(Some(why), ctx),
            Err(e) => this.finish(Some(format!("the walk failed: {e}")), ctx),
        }));
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // The walk, if it still waits, hears the session ended.
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.cluster
            .differs
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.session);
        if self.report.failed.is_none() && self.report.partitions == 0 && !self.parts.is_empty() {
            self.report.failed = Some("the session ended early".into());
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(self.report.clone());
        }
    }
}

impl Handler<LinkGone> for Differ {
    type Result = ();

    fn handle(&mut self, _: LinkGone, ctx: &mut Self::Context) {
        self.finish(Some("the link went down".into()), ctx);
    }
}

impl Handler<Answered> for Differ {
    type Result = ();

    fn handle(&mut self, msg: Answered, _: &mut Self::Context) {
        let stats = &self.cluster.differs.stats;
        if let Ok(reply) = &msg.0 {
            stats
                .bytes_in
                .fetch_add(reply_bytes(reply) as u64, Ordering::Relaxed);
        }
        if let Some(tx) = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(msg.0);
        }
    }
}

/// What an answer weighs, about.
fn reply_bytes(reply: &DiffReply) -> usize {
    const FP: usize = crate::merkle::fingerprint::WIRE_BYTES;
    match reply {
        DiffReply::Roots(r) => r.len() * FP,
        DiffReply::Node(..) => 2 * FP,
        DiffReply::Children(c) => c.iter().map(|(s, _)| s.len() + FP).sum(),
        DiffReply::RangeSums(r) => r.len() * (FP + 8),
        DiffReply::Names(n) | DiffReply::Subtree { names: n, .. } => n.iter().map(Vec::len).sum(),
        DiffReply::Events { events: e, .. } => e
            .iter()
            .map(|e| e.path.len() + e.value.as_ref().map_or(0, |v| v.len()) + 64)
            .sum(),
    }
}

/// The partitions `me` and `peer` both own under `placement`.
pub fn shared_parts(
    placement: &super::placement::Placement,
    me: &str,
    peer: &str,
    partitions: usize,
) -> Vec<u16> {
    (0..partitions as u16)
        .filter(|&p| placement.owns(me, p) && placement.owns(peer, p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
