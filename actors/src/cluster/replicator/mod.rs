//! `Replicator`: replication is a subscription. The owners of a partition
//! follow each other's logs of it, with cursors like a client's: each node
//! serves its co-owners a stream of every event its partitions take
//! (`serving`), and follows theirs, merging what arrives by the LWW rule
//! and acknowledging it (`following`). A write's coordinator counts those
//! acknowledgements to answer `?w=`. A link that comes back resumes from
//! the cursors; one that cannot be resumed (none saved, another
//! incarnation of the peer's log, or a log trimmed past the cursor) is
//! reset: it follows the log from where the peer's merkle trees reach, and
//! a diff session pulls what came before (the differences, not the data).
//!
//! It also coordinates the writes other nodes forward here (see `route`)
//! and answers their reads of what this node owns (`reads`).
//!
//! Which partitions a pair of nodes share is placement's answer over the
//! live members, checked on every link change and a few times a second,
//! so a membership change moves streams with the owners.

mod copies;
mod following;
mod merge_queue;
mod reads;
mod serving;
mod watch_stream;
mod watching;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use actix::prelude::*;

pub use self::copies::CopyStats;
use self::following::Following;
use self::merge_queue::{InFlight, MergeQueues, Pushed};
use self::serving::Serving;
use self::watch_stream::WatchStream;
use self::watching::{Serve, Served, Watches};
use super::differ::{question, shared_parts, DiffReport, Differ};
use super::fetch::ListAsk;
use super::frame::{Bundled, PeerFrame};
use super::peer::{SendFrame, Shut};
use super::wire::{merge_all, WireError, WireReport};
use super::Cluster;
use crate::engine::tap::Committed;
use crate::error::NodeError;
use crate::model::{version::wall_micros, Event, Path, Version};
use crate::node::HistoryRange;
use crate::session::interest::InterestChanged;
use crate::session::Subscribe;
use crate::Node;

/// Pages a turn of catching up reads before other messages are handled.
const PAGES_PER_TURN: usize = 8;

/// How long catching up waits for a full link before it looks again.
const LINK_WAIT: Duration = Duration::from_millis(10);

/// Commits the tap may hold for the replicator before marking one lost.
const TAP_MAILBOX: usize = 4096;

/// A replication or forwarding frame from `node` over link `link`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FromPeer {
    /// The peer.
    pub node: String,
    /// The link's number.
    pub link: u64,
    /// The frame.
    pub frame: PeerFrame,
}

/// A link came up.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LinkUp {
    /// The peer.
    pub node: String,
    /// The link's number.
    pub link: u64,
}

/// A link went down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LinkDown {
    /// The peer.
    pub node: String,
    /// The link's number.
    pub link: u64,
}

/// What a watched owner sent, kept in the order it came.
enum WatchedItem {
    /// Values to keep.
    Events(Vec<super::wire::WireEvent>),
    /// The owner's snapshot of these partitions is out.
    Ready(Vec<u16>),
    /// The owner ended its stream (in turn with what it sent before: a
    /// readiness still queued is of the stream that ended).
    Ended,
}

/// Compare merkle trees with the owners of what `prefix` covers now, and
/// repair what differs; answers each session's report.
#[derive(Message)]
#[rtype(result = "Vec<DiffReport>")]
pub struct Repair {
    /// The prefix (the root: everything this node holds).
    pub prefix: Path,
}

/// A sweep with a peer ended (`None`: its session was dropped).
#[derive(Message)]
#[rtype(result = "()")]
struct SweepDone {
    peer: String,
    report: Option<DiffReport>,
}

/// Sweeps that follow one that exchanged events, before the interval
/// applies again: the trees are compared again soon until they agree (or
/// writes keep them apart).
const FOLLOW_UP_SWEEPS: u32 = 3;

/// Bytes of the writes one peer forwarded that this node coordinates at
/// once, at most (a write alone passes): its partitions may be slower than
/// the link, and what waits for them is held here. Past it, the peer's
/// writes are answered `503` at once until some are done.
const FORWARDED_BYTES: usize = 256 << 20;

/// `Merged` for stream batches without acks waits until it reports this
/// much, or the next tick: an eighth of the least window a sender can
/// keep (a quarter of the least `--peer-send-queue-bytes`), so a sender
/// never waits on it for room.
const MERGED_UNSAID_BYTES: usize = (crate::config::MIN_SEND_QUEUE_BYTES / 4) / 8;

/// How long a due sweep waits for the streams with its peer to catch up.
const SWEEP_WAITS_FOR_STREAMS: Duration = Duration::from_secs(60);

/// Read a few more pages for streams catching up.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

/// The replication of one node.
pub struct Replicator {
    node: Node,
    cluster: Arc<Cluster>,
    serving: Serving,
    following: Following,
    watches: Watches,
    served: Served,
    /// By owner, what its watches sent that is still to be kept.
    watched: MergeQueues<(Path, WatchedItem)>,
    /// By peer, when the next anti-entropy sweep with it is due.
    sweep_due: HashMap<String, Instant>,
    /// Peers a sweep runs with now.
    sweeping: HashSet<String>,
    /// By peer, frames of diff events waiting to be merged, and whether
    /// one is merging.
    diff_in: MergeQueues<Vec<super::wire::WireEvent>>,
    /// By peer, follow-up sweeps (or retries) made in a row.
    sweep_streak: HashMap<String, u32>,
    next_watch: u64,
    pumping: bool,
    /// Copies of partitions nobody here needs (see `copies`).
    copies: copies::Copies,
    /// The peer whose trees a follower's pull compares now (one at a time:
    /// a partition reset by several co-owners is fetched from the first,
    /// and the next finds only where they differ).
    pulling: Option<String>,
    /// By peer, when a pull that failed may be tried again.
    pull_after: HashMap<String, Instant>,
    /// What the frames being merged now weigh (out of their queues).
    merging: InFlight,
    /// By peer, the link and the weight of its stream batches merged and
    /// not reported with `Merged` yet.
    merged_unsaid: HashMap<String, (u64, u64)>,
    /// By peer, the bytes of the writes it forwarded that are being
    /// coordinated here (at most [`FORWARDED_BYTES`]).
    forwarded_bytes: HashMap<String, InFlight>,
}

impl Replicator {
    /// The replicator of `node` (which is in a cluster).
    pub fn new(node: Node, cluster: Arc<Cluster>) -> Replicator {
        Replicator {
            serving: Serving::new(&cluster.identity.node),
            node,
            cluster,
            following: Following::default(),
            watches: Watches::default(),
            served: Served::default(),
            watched: MergeQueues::default(),
            sweep_due: HashMap::new(),
            sweeping: HashSet::new(),
            diff_in: MergeQueues::default(),
            sweep_streak: HashMap::new(),
            next_watch: 0,
            pumping: false,
            copies: copies::Copies::default(),
            pulling: None,
            pull_after: HashMap::new(),
            merging: InFlight::default(),
            merged_unsaid: HashMap::new(),
            forwarded_bytes: HashMap::new(),
        }
    }

    /// Follows, from each linked member, the partitions this node and it
    /// both own; stops following the others.
    fn refresh(&mut self) {
        let placement = self.cluster.placement();
        let me = self.cluster.identity.node.clone();
        let partitions = self.node.layout().partitions();
        for link in self.cluster.links.list() {
            let desired: BTreeSet<u16> = if placement.members().contains(&link.node) {
                (0..partitions)
                    .map(|p| p as u16)
                    .filter(|&p| placement.owns(&me, p) && placement.owns(&link.node, p))
                    .filter(|&p| self.copies.dropping() != Some(p))
                    .collect()
            } else {
                BTreeSet::new()
            };
            let following::Changes { start, stop } =
                self.following
                    .diff(&self.node, &link.node, link.id, &link.incarnation, &desired);
            let Some((id, peer)) = self.cluster.links.link(&link.node) else {
                continue;
            };
            if id != link.id {
                continue;
            }
            if !start.is_empty() {
                log::debug!("following {} partitions of '{}'", start.len(), link.node);
                peer.do_send(SendFrame(PeerFrame::Follow { parts: start }));
            }
            if !stop.is_empty() {
                peer.do_send(SendFrame(PeerFrame::Unfollow { parts: stop }));
            }
        }
    }

    /// Watches at owners what this node's clients watch and it does not
    /// own; stops the watches nobody needs; marks the prefixes whose copy
    /// is complete ready.
    fn refresh_watches(&mut self) {
        let placement = self.cluster.placement();
        let interest = self.node.interest();
        let watched = interest.watched();
        if let Some(part) = self.copies.dropping() {
            let layout = self.node.layout();
            if watched
                .iter()
                .any(|w| layout.covering(w).iter().any(|p| p == part))
            {
                return; // Again once the drop is done.
            }
        }
        let changes = self
            .watches
            .refresh(&self.cluster, self.node.layout(), &placement, &watched);
        for (owner, prefix, parts) in changes.watch {
            if let Some(peer) = self.cluster.links.peer(&owner) {
                log::debug!(
                    "watching '{prefix}' at '{owner}' ({} partitions)",
                    parts.len()
                );
                peer.do_send(SendFrame(PeerFrame::Watch {
                    prefix: prefix.as_str().to_string(),
                    parts,
                }));
            }
        }
        for prefix in changes.complete {
            if !interest.is_ready(&prefix) {
                log::debug!("the copy of '{prefix}' is complete");
                interest.set_ready(&prefix);
            }
        }
        for (owner, prefix) in changes.unwatch {
            if let Some(peer) = self.cluster.links.peer(&owner) {
                peer.do_send(SendFrame(PeerFrame::Unwatch {
                    prefix: prefix.as_str().to_string(),
                }));
            }
        }
    }

    /// Serves `node`'s watch of `prefix` in partitions `parts` over link
    /// `link`: a session of this node subscribed to it, streamed as
    /// `Watched` frames (see `watch_stream`), in place of any served before.
    /// (A watcher asks again only for a fresh snapshot: after its stream
    /// ended, its partitions changed, or a new link; one asked again while
    /// an earlier stream's end was on its way must not be left without.)
    fn serve_watch(
        &mut self,
        (node, link): (String, u64),
        prefix: Path,
        mut parts: Vec<u16>,
        ctx: &mut Context<Self>,
    ) {
        parts.sort_unstable();
        parts.dedup();
        let partitions = self.node.layout().partitions();
        if parts.iter().any(|&p| usize::from(p) >= partitions as usize) {
            log::warn!("a watch from '{node}' of '{prefix}' names a partition this layout lacks");
            return;
        }
        let key = (node.clone(), prefix.clone());
        if let Some(old) = self.served.streams.remove(&key) {
            ctx.cancel_future(old.task);
        }
        let session = self.node.open_peer_session();
        session.actor.do_send(Subscribe {
            prefix: prefix.clone(),
            since: None,
            playback: None,
        });
        self.next_watch += 1;
        let id = self.next_watch;
        let work = WatchStream {
            node: self.node.clone(),
            cluster: self.cluster.clone(),
            to: node.clone(),
            link,
            prefix: prefix.as_str().to_string(),
            parts: parts.clone(),
            high_water: self.cluster.config.send_queue_bytes / 4,
        }
        .run(session.stream);
        let task = ctx.spawn(work.into_actor(self).map(move |_, this, _| {
            if this.served.streams.get(&key).is_some_and(|s| s.id == id) {
                this.served.streams.remove(&key);
            }
        }));
        self.served
            .streams
            .insert((node, prefix), Serve { link, task, id });
    }

    /// Queues what a watched owner sent over `link`, if this node asked it
    /// for `prefix` there (anything else is dropped), and keeps it in turn.
    fn watched_from(
        &mut self,
        (from, link): (String, u64),
        prefix: &str,
        (item, weight): (WatchedItem, usize),
        ctx: &mut Context<Self>,
    ) {
        let prefix = match Path::parse(prefix) {
            Ok(p) if self.watches.asked(&from, link, &p) => p,
            Ok(p) => {
                log::debug!("'{from}' sent '{p}', which this node did not ask it to watch");
                // Done with, as if kept: the owner may send that much more.
                self.report_merged(&from, link, weight);
                return;
            }
            Err(e) => {
                log::warn!("'{from}' sent a watch of a bad prefix: {e}");
                self.report_merged(&from, link, weight);
                return;
            }
        };
        let bound = self.cluster.config.send_queue_bytes;
        match self
            .watched
            .push(&from, (link, (prefix, item), weight), bound)
        {
            Pushed::Start => self.keep_watched(from, ctx),
            Pushed::Behind => {}
            Pushed::Overloaded(waiting) => {
                self.overloaded(&from, link, "watched values", (waiting, bound))
            }
        }
    }

    /// Tells `node` (over `link`, if it is still the link up) that frames
    /// it sent weighing `bytes` are merged (see `PeerFrame::Merged`).
    fn report_merged(&self, node: &str, link: u64, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if let Some((id, peer)) = self.cluster.links.link(node) {
            if id == link {
                peer.do_send(SendFrame(PeerFrame::Merged {
                    bytes: bytes as u64,
                }));
            }
        }
    }

    /// What waits to merge from `node` (`waiting` of `bound` bytes) passed
    /// the bound: the link is closed, saying why (what came faster than
    /// this node merges it comes again, paced, on the next link).
    fn overloaded(&mut self, node: &str, link: u64, what: &str, (waiting, bound): (usize, usize)) {
        let why = format!(
            "this node cannot merge the {what} from '{node}' as fast as they come \
             ({waiting} bytes waiting, bound {bound})"
        );
        log::warn!("{why}; the link is closed");
        self.cluster
            .links
            .stats
            .follower_overloads
            .fetch_add(1, Ordering::Relaxed);
        if let Some((id, p)) = self.cluster.links.link(node) {
            if id == link {
                p.do_send(Shut(why));
            }
        }
    }

    /// Keeps the next of what `from`'s watches sent: values are merged
    /// into this node's store (through its partitions, so its clients get
    /// them as changes), and a `WatchReady` counts only once what came
    /// before it is kept.
    fn keep_watched(&mut self, from: String, ctx: &mut Context<Self>) {
        while let Some((link, (prefix, item), weight)) = self.watched.next(&from) {
            match item {
                WatchedItem::Ready(parts) => {
                    self.watches.ready(&from, link, &prefix, &parts);
                    self.refresh_watches();
                }
                WatchedItem::Ended => self.watches.ended(&from, &prefix),
                WatchedItem::Events(events) => {
                    let node = self.node.clone();
                    let cluster = self.cluster.clone();
                    let who = from.clone();
                    let work = async move {
                        cluster.delay_merge().await;
                        let whose = format!("a watched event from '{who}'");
                        let merged = merge_all(&node, events, &whose).await;
                        cluster
                            .links
                            .stats
                            .events_merged
                            .fetch_add(merged.tried as u64, Ordering::Relaxed);
                    };
                    let share = self.merging.hold(weight);
                    ctx.spawn(work.into_actor(self).map(move |(), this, ctx| {
                        drop(share);
                        this.report_merged(&from, link, weight);
                        this.keep_watched(from, ctx)
                    }));
                    return;
                }
            }
        }
    }

    /// The next periodic sweep's time: the interval, ±20%.
    fn next_sweep(&self) -> Option<Instant> {
        let every = self.cluster.config.anti_entropy_interval;
        if every.is_zero() {
            return None;
        }
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        Some(Instant::now() + every.mul_f64(jitter))
    }

    /// Starts the anti-entropy sweeps that are due: with each linked
    /// co-owner, over the partitions both own, then over each prefix this
    /// node's clients watch at that owner (its copy of that subtree), one
    /// session after the other.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let placement = self.cluster.placement();
        let me = self.cluster.identity.node.clone();
        let partitions = self.node.layout().partitions() as usize;
        let now = Instant::now();
        for link in self.cluster.links.list() {
            if self.sweeping.contains(&link.node) {
                continue;
            }
            let due = match self.sweep_due.get(&link.node) {
                Some(due) => *due,
                None => match self.next_sweep() {
                    Some(next) => {
                        self.sweep_due.insert(link.node.clone(), next);
                        continue;
                    }
                    None => continue,
                },
            };
            if due > now {
                continue;
            }
            // The streams both ways catch up first: a sweep compares what
            // cursors could not give, not what a stream is about to bring
            // (for at most a minute: a stream kept behind by writes does
            // not hold the sweep off for good).
            // (What the peer merged and says on its next tick may be
            // left, and this tick's quiet frames and held relays are not
            // sent yet: a sweep may bring those relays itself.)
            let streaming = !self.serving.all_live(&link.node, MERGED_UNSAID_BYTES)
                || !self.following.all_live(&link.node);
            if streaming && now < due + SWEEP_WAITS_FOR_STREAMS {
                continue;
            }
            self.sweep_due.remove(&link.node);
            let mut jobs: Vec<(Vec<u16>, String)> = Vec::new();
            let parts = shared_parts(&placement, &me, &link.node, partitions);
            if !parts.is_empty() {
                jobs.push((parts, String::new()));
            }
            for (prefix, parts) in self.watches.ready_at(&link.node, link.id) {
                jobs.push((parts, prefix.as_str().to_string()));
            }
            if jobs.is_empty() {
                if let Some(next) = self.next_sweep() {
                    self.sweep_due.insert(link.node.clone(), next);
                }
                continue;
            }
            self.sweeping.insert(link.node.clone());
            let (node, cluster) = (self.node.clone(), self.cluster.clone());
            let (peer, id) = (link.node.clone(), link.id);
            let sessions = async move {
                let mut total: Option<DiffReport> = None;
                for (parts, prefix) in jobs {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    Differ::new(
                        node.clone(),
                        cluster.clone(),
                        (peer.clone(), id),
                        parts,
                        prefix,
                        Some(tx),
                    )
                    .start();
                    let Ok(report) = rx.await else {
                        return total;
                    };
                    let failed = report.failed.is_some();
                    match &mut total {
                        Some(t) => t.add(&report),
                        None => total = Some(report),
                    }
                    if failed {
                        break;
                    }
                }
                total
            };
            let peer = link.node.clone();
            ctx.spawn(
                sessions
                    .into_actor(self)
                    .map(move |report, _, ctx| ctx.notify(SweepDone { peer, report })),
            );
        }
    }

    /// Starts a pull of what came before a reset (see `following`): a diff
    /// session with a peer whose streams of some partitions were reset,
    /// which fetches what this node lacks of them. One at a time; one that
    /// failed is tried again two heartbeats later.
    fn pull_resets(&mut self, ctx: &mut Context<Self>) {
        if self.pulling.is_some() {
            return;
        }
        let now = Instant::now();
        let Some(peer) = self
            .following
            .peers_to_compare()
            .into_iter()
            .find(|p| self.pull_after.get(p).is_none_or(|t| *t <= now))
        else {
            return;
        };
        let Some((link, parts)) = self.following.take_to_compare(&peer) else {
            return;
        };
        let head = parts.iter().map(|c| c.head).max().unwrap_or(0);
        log::debug!(
            "pulling {} reset partitions from '{peer}' by their merkle trees",
            parts.len()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pulling = Some(peer.clone());
        Differ::new(
            self.node.clone(),
            self.cluster.clone(),
            (peer.clone(), link),
            parts.iter().map(|c| c.part).collect(),
            String::new(),
            Some(tx),
        )
        .pulling_after_reset(head)
        .start();
        let retry = self.cluster.config.heartbeat_interval * 2;
        ctx.spawn(
            async move { rx.await.ok() }
                .into_actor(self)
                .map(move |report, this, ctx| {
                    this.pulling = None;
                    let ok = report.as_ref().is_some_and(|r| r.failed.is_none());
                    log::debug!(
                        "pull from '{peer}' ended: {}",
                        match &report {
                            Some(r) => r.failed.as_deref().unwrap_or("ok"),
                            None => "the session was dropped",
                        }
                    );
                    if ok {
                        this.pull_after.remove(&peer);
                    } else {
                        this.pull_after.insert(peer.clone(), Instant::now() + retry);
                    }
                    if this.following.compared(&peer, link, &parts, ok) {
                        this.cluster.mark_caught_up(this.following.caught_up());
                    }
                    this.pull_resets(ctx);
                }),
        );
    }

    /// Answers a peer's diff question (read on a blocking thread).
    fn answer_diff(
        &mut self,
        (from, link): (String, u64),
        (session, part, q): (u64, u16, question::DiffQuestion),
        ctx: &mut Context<Self>,
    ) {
        let (node, cluster) = (self.node.clone(), self.cluster.clone());
        let read = move || {
            let answer = question::answer(&node, part, q);
            // Events answered are paced as those sent.
            if let Ok(question::DiffReply::Events { events, .. }) = &answer {
                let bytes = events
                    .iter()
                    .map(|e| e.path.len() + e.value.as_ref().map_or(0, |v| v.len()) + 64)
                    .sum();
                cluster.differs.pace(bytes);
            }
            answer
        };
        self.answer_later(
            (from, link),
            read,
            move |answer| PeerFrame::DiffAnswer { session, answer },
            ctx,
        );
    }

    /// Queues the events a peer's diff session found this node lacked;
    /// they are merged one frame at a time per peer (a session sends as
    /// fast as its link drains, and merging is slower: frames wait here,
    /// not as merges all in flight at once).
    fn diff_events(
        &mut self,
        (from, link): (String, u64),
        (events, weight): (Vec<super::wire::WireEvent>, usize),
        ctx: &mut Context<Self>,
    ) {
        let bound = self.cluster.config.send_queue_bytes;
        match self.diff_in.push(&from, (link, events, weight), bound) {
            Pushed::Start => self.merge_diff_events(from, ctx),
            Pushed::Behind => {}
            Pushed::Overloaded(waiting) => {
                self.overloaded(&from, link, "anti-entropy events", (waiting, bound))
            }
        }
    }

    /// Merges the next frame of diff events from `from`, if one waits.
    fn merge_diff_events(&mut self, from: String, ctx: &mut Context<Self>) {
        let Some((link, events, weight)) = self.diff_in.next(&from) else {
            return;
        };
        let node = self.node.clone();
        let cluster = self.cluster.clone();
        let who = from.clone();
        let work = async move {
            let whose = format!("an anti-entropy event from '{who}'");
            let merged = merge_all(&node, events, &whose).await;
            cluster
                .differs
                .stats
                .events_received
                .fetch_add(merged.changed as u64, Ordering::Relaxed);
        };
        let share = self.merging.hold(weight);
        ctx.spawn(work.into_actor(self).map(move |(), this, ctx| {
            drop(share);
            this.report_merged(&from, link, weight);
            this.merge_diff_events(from, ctx)
        }));
    }

    fn pump_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.pumping && self.serving.has_work() {
            self.pumping = true;
            ctx.notify(Pump);
        }
    }

    /// Merges the next batch of frames from `peer`, if one is waiting and
    /// none is merging.
    fn merge_next(&mut self, peer: String, ctx: &mut Context<Self>) {
        let Some(following::Batch {
            link,
            frames,
            steps,
            weight,
        }) = self.following.take_batch(&peer)
        else {
            return;
        };
        let node = self.node.clone();
        // Catch-up frames are acknowledged only for recent events: a writer
        // may be waiting for those, never for old ones.
        let recent_after =
            wall_micros().saturating_sub(2 * self.cluster.config.ack_timeout.as_micros() as u64);
        let from = peer.clone();
        let cluster = self.cluster.clone();
        let work = async move {
            cluster.delay_merge().await;
            let merged_count = &cluster.links.stats.events_merged;
            let skipped = &cluster.links.stats.events_refused;
            let mut events = Vec::new();
            for frame in frames {
                let PeerFrame::Events {
                    events: wire, live, ..
                } = frame
                else {
                    continue;
                };
                for (_, w) in wire {
                    match Event::try_from(w) {
                        Ok(event) => events.push((event, live)),
                        // One bad event must not stop the stream for good
                        // (it would come again on every reconnect): it is
                        // left out, and said so.
                        Err(why) => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                            log::warn!("replication from '{from}': an event left out: {why}");
                        }
                    }
                }
            }
            merged_count.fetch_add(events.len() as u64, Ordering::Relaxed);
            // An event a third node made is relayed here live for the case
            // its maker was lost before sending it here too; mostly it was
            // not, and it is held already: merging it would change nothing,
            // and would hold up the partitions (a tick's relays come at
            // once). A tick's relays are a few KiB, so looking here is
            // short; catching up (not live) is merged as it comes, the
            // partitions reading the store off their thread.
            let store = node.store();
            events.retain(|(event, live)| {
                !live
                    || event.version.node.as_str() == from
                    || !store
                        .contains(&event.path, &event.version, &event.digest())
                        .unwrap_or(false)
            });
            let merged = futures_util::future::join_all(
                events.iter().map(|(event, _)| node.merge(event.clone())),
            )
            .await;
            let mut acks = Vec::new();
            for ((event, live), result) in events.into_iter().zip(merged) {
                match result {
                    Ok(_) => {}
                    Err(
                        e
                        @ (NodeError::BadField(_) | NodeError::BadPath(_) | NodeError::BadTime(_)),
                    ) => {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        log::warn!("replication from '{from}': {} left out: {e}", event.path);
                        continue;
                    }
                    Err(e) => return Err(format!("merging {}: {e}", event.path)),
                }
                if event.version.node.as_str() == from
                    && (live || event.version.time > recent_after)
                {
                    acks.push((
                        event.path.as_str().to_string(),
                        event.version.time,
                        event.digest(),
                    ));
                }
            }
            Ok::<_, String>(acks)
        };
        let share = self.merging.hold(weight as usize);
        ctx.spawn(work.into_actor(self).map(move |result, this, ctx| {
            drop(share);
            match result {
                Ok(acks) => {
                    // (Marks only move when a stream turns live; the
                    // periodic stats publish them too.)
                    if this.following.merged(&peer, link, &steps) {
                        this.cluster.mark_caught_up(this.following.caught_up());
                    }
                    this.pull_resets(ctx);
                    this.stream_merged(&peer, link, weight, acks);
                }
                Err(why) => {
                    log::warn!("replication from '{peer}': {why}");
                    this.following.failed(&peer, link);
                    if let Some((id, p)) = this.cluster.links.link(&peer) {
                        if id == link {
                            p.do_send(Shut(format!("replication failed: {why}")));
                        }
                    }
                }
            }
            this.merge_next(peer, ctx);
        }));
    }

    /// A batch of `peer`'s stream over `link` weighing `weight` is merged:
    /// `acks` go at once, with what was merged since the last `Merged`;
    /// without acks, `Merged` waits until it reports
    /// [`MERGED_UNSAID_BYTES`] or the next tick ([`Replicator::say_merged`]),
    /// so a busy link does not carry a frame back for every batch.
    fn stream_merged(
        &mut self,
        peer: &str,
        link: u64,
        weight: u64,
        acks: Vec<super::wire::AckedEvent>,
    ) {
        let Some((id, p)) = self.cluster.links.link(peer) else {
            return;
        };
        if id != link {
            return;
        }
        let unsaid = self
            .merged_unsaid
            .entry(peer.to_string())
            .or_insert((link, 0));
        if unsaid.0 != link {
            *unsaid = (link, 0);
        }
        unsaid.1 += weight;
        let say_now = !acks.is_empty() || unsaid.1 >= MERGED_UNSAID_BYTES as u64;
        let mut frames = Vec::new();
        if !acks.is_empty() {
            frames.push(Bundled::Ack { events: acks });
        }
        if say_now && unsaid.1 > 0 {
            // The peer may send that much more.
            frames.push(Bundled::Merged {
                bytes: std::mem::take(&mut unsaid.1),
            });
        }
        if let Some(frame) = PeerFrame::bundled(frames) {
            p.do_send(SendFrame(frame));
        }
    }

    /// Reports what was merged of each peer's streams and not said yet.
    fn say_merged(&mut self) {
        for (peer, (link, bytes)) in std::mem::take(&mut self.merged_unsaid) {
            if bytes > 0 {
                self.report_merged(&peer, link, bytes as usize);
            }
        }
    }

    /// Coordinates a write forwarded by `from` and answers it.
    fn forwarded(
        &mut self,
        from: String,
        id: u64,
        write: super::wire::WireWrite,
        ctx: &mut Context<Self>,
    ) {
        let node = self.node.clone();
        let cluster = self.cluster.clone();
        cluster
            .links
            .stats
            .writes_coordinated_for_peers
            .fetch_add(1, Ordering::Relaxed);
        // What a peer's forwarded writes hold here while they wait for their
        // partition (its inbox may be full) is bounded, as is how long they
        // wait: past the time their writer waits for the answer, nobody
        // reads it, and a write not yet in its partition is better not
        // written at all than written for nobody.
        let of = self.cluster.config.replication;
        let unavailable = WireError::Unavailable {
            acked: 0,
            needed: write.w.needed(of),
            of,
        };
        let weight = write.value.as_ref().map_or(0, |v| v.len()) + write.path.len() + 64;
        let held = self.forwarded_bytes.entry(from.clone()).or_default();
        let Some(share) = held.hold_within(weight, FORWARDED_BYTES) else {
            self.cluster
                .links
                .stats
                .asks_busy
                .fetch_add(1, Ordering::Relaxed);
            reads::answer_in_turn(
                &self.cluster,
                &from,
                PeerFrame::Forwarded {
                    id,
                    answer: Err(unavailable),
                },
            );
            return;
        };
        let deadline = cluster.config.ack_timeout + cluster.config.heartbeat_interval * 2;
        let work = async move {
            let _share = share;
            let answer = match write.into_write() {
                Ok(write) => match tokio::time::timeout(deadline, node.write(write)).await {
                    Ok(written) => written
                        .map(|r| WireReport::from(&r))
                        .map_err(|e| WireError::from(&e)),
                    Err(_) => Err(unavailable),
                },
                Err(why) => Err(WireError::Invalid(why)),
            };
            // Over the link up now. If the write's own link went down
            // meanwhile, the writer has already answered its client (a
            // link going down fails the forwards it carried) and drops
            // this answer.
            reads::answer_in_turn(&cluster, &from, PeerFrame::Forwarded { id, answer });
        };
        ctx.spawn(work.into_actor(self));
    }

    /// A frame of a stream this node follows: merged in its turn. If what
    /// waits to merge from that peer passes the link's bound (live changes
    /// come faster than this node merges them), the link is closed: the
    /// streams resume from their cursors on the next one, paced by what
    /// this node merges.
    fn stream_frame(&mut self, node: String, link: u64, frame: PeerFrame, ctx: &mut Context<Self>) {
        if self.enqueue_stream_frame(&node, link, frame) {
            self.merge_next(node, ctx);
        }
    }

    /// Queues a frame of a stream this node follows; true if queued (to
    /// merge).
    fn enqueue_stream_frame(&mut self, node: &str, link: u64, frame: PeerFrame) -> bool {
        let bound = self.cluster.config.send_queue_bytes;
        let weight = frame.merge_weight();
        match self.following.enqueue(node, link, frame, bound as u64) {
            following::Enqueued::Queued => true,
            // Done with, as if merged: the owner may send that much more.
            // (Said with the next `Merged`, as for merged frames: a
            // bundle of such frames gets one back, not one each.)
            following::Enqueued::NotFollowed => {
                self.stream_merged(node, link, weight as u64, Vec::new());
                false
            }
            following::Enqueued::Overloaded(waiting) => {
                self.following.failed(node, link);
                self.overloaded(node, link, "changes", (waiting as usize, bound));
                false
            }
        }
    }

    /// Takes the frames of a `Bundle` in order, as if each had come alone,
    /// except that its stream frames are all queued before a merge starts
    /// (so they merge together, with what waited before them, in batches
    /// of up to `MAX_BATCH_EVENTS`).
    fn bundle(&mut self, node: String, link: u64, frames: Vec<Bundled>, ctx: &mut Context<Self>) {
        let mut queued = false;
        for frame in frames {
            match PeerFrame::from(frame) {
                frame @ (PeerFrame::Reset { .. } | PeerFrame::Events { .. }) => {
                    queued |= self.enqueue_stream_frame(&node, link, frame);
                }
                frame => self.handle(
                    FromPeer {
                        node: node.clone(),
                        link,
                        frame,
                    },
                    ctx,
                ),
            }
        }
        if queued {
            self.merge_next(node, ctx);
        }
    }

    /// Bytes of frames received from peers and not merged yet (waiting
    /// or merging now): streams followed, watched values and anti-entropy
    /// events.
    fn waiting_to_merge(&self) -> u64 {
        let others = self.watched.waiting() + self.diff_in.waiting() + self.merging.weight();
        self.following.queued() + others as u64
    }

    fn publish_stats(&self) {
        self.cluster.mark_caught_up(self.following.caught_up());
        let stats = &self.cluster.links.stats;
        stats
            .streams_served
            .store(self.serving.streams() as u64, Ordering::Relaxed);
        stats
            .streams_followed
            .store(self.following.streams() as u64, Ordering::Relaxed);
        stats
            .merge_queue_bytes
            .store(self.waiting_to_merge(), Ordering::Relaxed);
        stats
            .watches_asked
            .store(self.watches.count() as u64, Ordering::Relaxed);
        stats
            .watches_served
            .store(self.served.streams.len() as u64, Ordering::Relaxed);
        let lag = self.serving.lag_by_part(self.node.log_head());
        stats
            .lag_max
            .store(lag.values().copied().max().unwrap_or(0), Ordering::Relaxed);
        *stats
            .partition_lag
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lag.into_iter().collect();
    }

    /// Counts acknowledgements from `from`, for the partitions it owns (an
    /// acknowledgement of a node that placement does not make an owner
    /// counts for nothing).
    fn acked(&self, from: &str, events: Vec<super::wire::AckedEvent>) {
        let me = self.node.node_id().clone();
        let placement = self.cluster.placement();
        for (path, time, digest) in events {
            if let Ok(path) = Path::parse_key(&path) {
                if placement.owns(from, self.node.partition_of(&path) as u16) {
                    let version = Version::new(time, me.clone());
                    self.node.ack((&path, &version, digest), from);
                }
            }
        }
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(TAP_MAILBOX);
        let _ = self.cluster.replicator.set(ctx.address());
        self.node.tap().attach(ctx.address().recipient());
        // A client's snapshot waits this long at most for the copy of its
        // prefix (as a write waits for its owners).
        self.node
            .interest()
            .attach(ctx.address().recipient(), self.cluster.config.ack_timeout);
        let every = (self.cluster.config.heartbeat_interval / 2).max(Duration::from_millis(20));
        ctx.run_interval(every, |this, ctx| {
            if this.node.tap().take_lost() {
                this.serving.lost_commits();
            }
            this.refresh();
            this.refresh_watches();
            this.say_merged();
            this.pump_soon(ctx);
            this.publish_stats();
            this.sweep(ctx);
            this.serving
                .send_on_tick(&this.cluster.links.stats.events_sent);
            this.pull_resets(ctx);
        });
        ctx.run_interval(Duration::from_secs(1), |this, ctx| {
            if let Err(e) = this.following.save_dirty(&this.node) {
                log::error!("saving replication cursors: {e}");
            }
            this.check_copies(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.following.save_dirty(&self.node);
    }
}

impl Handler<Committed> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Self::Context) {
        if self.node.tap().take_lost() {
            self.serving.lost_commits();
            self.pump_soon(ctx);
        }
        self.serving
            .on_commit(&msg.entries, &self.cluster.links.stats.events_sent);
    }
}

impl Handler<InterestChanged> for Replicator {
    type Result = ();

    fn handle(&mut self, _: InterestChanged, _: &mut Self::Context) {
        self.refresh_watches();
    }
}

impl Handler<Pump> for Replicator {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Self::Context) {
        self.pumping = false;
        let sent = &self.cluster.links.stats.events_sent;
        // A stream waits while its link holds more than a quarter of
        // what the link may queue.
        let high_water = self.cluster.config.send_queue_bytes / 4;
        match self
            .serving
            .pump(&self.node, PAGES_PER_TURN, high_water, sent)
        {
            Ok(true) => self.pump_soon(ctx),
            Ok(false) if self.serving.has_work() => {
                // Every stream with pages waits for its link to drain.
                self.pumping = true;
                ctx.notify_later(Pump, LINK_WAIT);
            }
            Ok(false) => {}
            Err(e) => {
                // The stream stays queued: the next turn (at the next tick,
                // not at once, so a failing store is not read in a loop)
                // tries again.
                log::error!("replication: reading the log: {e}");
            }
        }
    }
}

impl Handler<LinkUp> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: LinkUp, _: &mut Self::Context) {
        self.refresh();
        // A link that comes back may have missed what its cursors cannot
        // give (a trimmed log, writes on both sides while apart): compare
        // trees soon, once the streams have had a moment to catch up.
        // One side of each pair starts it (a session repairs both ways).
        if self.cluster.identity.node < msg.node {
            let soon = Instant::now() + self.cluster.config.heartbeat_interval * 2;
            self.sweep_due.insert(msg.node, soon);
        }
    }
}

impl Handler<SweepDone> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: SweepDone, _: &mut Self::Context) {
        self.sweeping.remove(&msg.peer);
        if self.sweep_due.contains_key(&msg.peer) {
            return; // A link came back meanwhile: that sweep is set.
        }
        // A sweep that failed, or that exchanged events (writes may have
        // landed meanwhile), is followed by another soon, a few times in a
        // row; then the interval applies.
        let again = match &msg.report {
            None => true,
            Some(r) => r.failed.is_some() || r.received > 0 || r.sent > 0,
        };
        let streak = self.sweep_streak.entry(msg.peer.clone()).or_default();
        let soon = if again && *streak < FOLLOW_UP_SWEEPS {
            *streak += 1;
            Some(Instant::now() + self.cluster.config.heartbeat_interval * (2 << *streak))
        } else {
            *streak = 0;
            None
        };
        if let Some(next) = soon.or_else(|| self.next_sweep()) {
            self.sweep_due.insert(msg.peer, next);
        }
    }
}

impl Handler<Repair> for Replicator {
    type Result = ResponseFuture<Vec<DiffReport>>;

    fn handle(&mut self, msg: Repair, _: &mut Self::Context) -> Self::Result {
        let placement = self.cluster.placement();
        let me = self.cluster.identity.node.clone();
        // The partitions the prefix covers, by the linked owners to ask:
        // those this node owns, and the others only when its clients watch
        // the prefix (a copy of a part of a partition is not repaired into
        // a whole one).
        let watched = self
            .node
            .interest()
            .watched()
            .iter()
            .any(|w| w.covers(&msg.prefix));
        let mut by_peer: BTreeMap<(String, u64), Vec<u16>> = BTreeMap::new();
        for part in self.node.layout().covering(&msg.prefix).iter() {
            if !watched && !placement.owns(&me, part) {
                continue;
            }
            for owner in placement.owners(part).filter(|o| *o != me) {
                if let Some((link, _)) = self.cluster.links.link(owner) {
                    by_peer
                        .entry((owner.to_string(), link))
                        .or_default()
                        .push(part);
                }
            }
        }
        let mut waits = Vec::new();
        for (peer, parts) in by_peer {
            let (tx, rx) = tokio::sync::oneshot::channel();
            Differ::new(
                self.node.clone(),
                self.cluster.clone(),
                peer,
                parts,
                msg.prefix.as_str().to_string(),
                Some(tx),
            )
            .start();
            waits.push(rx);
        }
        Box::pin(async move {
            futures_util::future::join_all(waits)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
}

impl Handler<LinkDown> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: LinkDown, ctx: &mut Self::Context) {
        self.serving.drop_link(&msg.node, msg.link);
        self.cluster.differs.link_down(&msg.node, msg.link);
        let gone: Vec<_> = self
            .served
            .streams
            .iter()
            .filter(|((node, _), s)| *node == msg.node && s.link == msg.link)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(old) = self.served.streams.remove(&key) {
                ctx.cancel_future(old.task);
            }
        }
        if let Err(e) = self.following.drop_link(&self.node, &msg.node, msg.link) {
            log::error!("saving replication cursors: {e}");
        }
    }
}

impl Handler<FromPeer> for Replicator {
    type Result = ();

    fn handle(&mut self, msg: FromPeer, ctx: &mut Self::Context) {
        let FromPeer { node, link, frame } = msg;
        // What the frame weighs unmerged (reported once merged).
        let weight = frame.merge_weight();
        match frame {
            PeerFrame::Follow { parts } => {
                let Some((id, peer, queue)) = self.cluster.links.link_and_queue(&node) else {
                    return;
                };
                if id != link {
                    return;
                }
                self.serving
                    .follow(&self.node, &node, link, (peer.recipient(), queue), parts);
                self.pump_soon(ctx);
            }
            PeerFrame::Unfollow { parts } => self.serving.unfollow(&node, link, &parts),
            PeerFrame::Merged { bytes } => {
                if let Some((id, _, queue)) = self.cluster.links.link_and_queue(&node) {
                    if id == link {
                        queue.merged(bytes as usize);
                    }
                }
                self.pump_soon(ctx);
            }
            PeerFrame::Ack { events } => self.acked(&node, events),
            PeerFrame::Forward { id, write } => self.forwarded(node, id, write, ctx),
            PeerFrame::Read { id, path, at } => self.answer_read(&node, id, &path, at),
            PeerFrame::Import { id, events } => self.answer_import(node, id, events, ctx),
            PeerFrame::List {
                id,
                prefix,
                parts,
                after,
                limit,
                at,
                deleted,
            } => {
                let ask = ListAsk {
                    after,
                    limit: limit as usize,
                    at,
                    deleted,
                };
                self.answer_list((node, link), (id, prefix, parts), ask, ctx)
            }
            PeerFrame::History {
                id,
                path,
                from,
                to,
                limit,
                after,
            } => {
                let range = HistoryRange {
                    from,
                    to,
                    limit: limit as usize,
                };
                self.answer_history((node, link), (id, path), (range, after), ctx)
            }
            PeerFrame::Watch { prefix, parts } => match Path::parse(&prefix) {
                Ok(prefix) => self.serve_watch((node, link), prefix, parts, ctx),
                Err(e) => log::warn!("a watch from '{node}' of a bad prefix: {e}"),
            },
            PeerFrame::Unwatch { prefix } => {
                if let Ok(prefix) = Path::parse(&prefix) {
                    if let Some(old) = self.served.streams.remove(&(node, prefix)) {
                        ctx.cancel_future(old.task);
                    }
                }
            }
            PeerFrame::Watched { prefix, events } => {
                let item = WatchedItem::Events(events);
                self.watched_from((node, link), &prefix, (item, weight), ctx)
            }
            PeerFrame::WatchReady { prefix, parts } => {
                let item = WatchedItem::Ready(parts);
                self.watched_from((node, link), &prefix, (item, weight), ctx)
            }
            PeerFrame::WatchEnded { prefix } => {
                self.watched_from((node, link), &prefix, (WatchedItem::Ended, weight), ctx)
            }
            PeerFrame::DiffAsk {
                session,
                part,
                question,
            } => self.answer_diff((node, link), (session, part, question), ctx),
            PeerFrame::DiffAnswer { session, answer } => {
                self.cluster.differs.answered(&node, session, answer)
            }
            PeerFrame::DiffEvents { events, .. } => {
                self.diff_events((node, link), (events, weight), ctx)
            }
            frame @ (PeerFrame::Reset { .. } | PeerFrame::Events { .. }) => {
                self.stream_frame(node, link, frame, ctx)
            }
            PeerFrame::Bundle { frames } => self.bundle(node, link, frames, ctx),
            _ => {}
        }
    }
}
