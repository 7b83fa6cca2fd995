//! The streams a node serves: for each follower (a co-owner), each
//! partition it follows, from its cursor in this node's log (or, when it
//! has none this log can honour, from the head after a `Reset`: the
//! follower compares merkle trees for what came before), then live from
//! the tap.
//!
//! A stream catching up reads the store in pages, a few per turn, so one
//! follower far behind never stalls the others or the live streams. It
//! turns live when a page reaches the log head read at that turn: every
//! commit at or below that head is in the store, and every one after it
//! arrives from the tap later (a commit is in the store before it is on
//! the tap), so nothing falls between the two and nothing is sent twice.
//!
//! A live stream carries every event this node took that the follower did
//! not make: its own at once, and those a third node stamped (*relayed*: the
//! follower gets them from their maker too; the relay is the repair of a
//! maker lost between its sends) on the next tick, or sooner with the next
//! event of this node's own in that partition or past [`RELAY_BYTES`]. So a
//! follower merges a write relayed to it with others, not once more per write.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Recipient;

use crate::cluster::frame::{wire_weight, Bundled, PeerFrame, FRAME_OVERHEAD};
use crate::cluster::peer::SendPaced;
use crate::cluster::sendq::SendGauge;
use crate::cluster::wire::WireEvent;
use crate::error::NodeError;
use crate::model::Event;
use crate::Node;

/// Entries per page read from the store.
const PAGE_ENTRIES: usize = 256;

/// Value bytes after which a frame of events is sent and another begun.
pub(super) const FRAME_BYTES: usize = 1 << 20;

/// Bytes of relayed events a follower's streams hold back before they are
/// sent without waiting for the tick.
const RELAY_BYTES: usize = 4 << 10;

/// Where one partition's stream to one follower stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stream {
    /// Reading the log from the store, after `sent`.
    CatchUp { sent: u64 },
    /// Sending each commit from the tap; everything up to `sent` is sent
    /// (but the follower's own events; how far that reaches may wait in
    /// `Follower::quiet`), and what comes after it may wait in
    /// `Follower::relayed`.
    Live { sent: u64 },
}

struct Follower {
    link: u64,
    /// The link's `Peer`, which sends the frames.
    peer: Recipient<SendPaced>,
    /// What waits in the link's send queue.
    queue: SendGauge,
    parts: HashMap<u16, Stream>,
    /// Live streams whose last commits were all the follower's own events:
    /// how far they are sent, not told yet (see [`Serving::send_on_tick`]).
    quiet: BTreeMap<u16, u64>,
    /// Live streams whose last commits held events relayed (and maybe the
    /// follower's own), none of this node's: held back (see the module's
    /// doc).
    relayed: BTreeMap<u16, Held>,
}

/// A live stream's relayed events, held back.
#[derive(Default)]
struct Held {
    /// How far the stream reaches with them.
    through: u64,
    events: Vec<(u64, WireEvent)>,
    /// Their bytes on the wire, about.
    bytes: usize,
}

/// The streams served, by follower node id.
pub(super) struct Serving {
    /// This node's id: the events it made go to a live stream at once.
    node_id: String,
    followers: HashMap<String, Follower>,
    /// Streams with pages to read, in turn.
    work: VecDeque<(String, u16)>,
}

impl Follower {
    /// Holds `events` (of one commit) back in partition `part`'s stream,
    /// which then reaches `through`.
    fn hold(&mut self, part: u16, through: u64, events: Vec<(u64, WireEvent)>) {
        let bytes = weight_of(&events);
        let held = self.relayed.entry(part).or_default();
        held.through = through;
        held.bytes += bytes;
        held.events.extend(events);
    }

    /// The bytes of the events held back, about.
    fn relayed_bytes(&self) -> usize {
        self.relayed.values().map(|h| h.bytes).sum()
    }

    /// Hands `frame` (about `weight` bytes) to the link, counted in its
    /// gauge until queued, and as unmerged until the follower says it
    /// merged it.
    fn send(&mut self, frame: PeerFrame, weight: usize) {
        self.queue.sent_unmerged(frame.merge_weight());
        self.queue.hand(weight);
        self.peer.do_send(SendPaced { frame, weight });
    }
}

/// Sends `part`'s entries to `f` in frames of bounded size.
fn send_events(
    f: &mut Follower,
    part: u16,
    through: u64,
    live: bool,
    events: Vec<(u64, WireEvent)>,
    sent: &AtomicU64,
) {
    let mut frames = Vec::new();
    events_frames(&mut frames, (part, through, live), events, sent);
    for (frame, weight) in frames {
        f.send(frame.into(), weight);
    }
}

/// One commit's entries of one partition for one follower.
#[derive(Default)]
struct PartCommit {
    /// The commit's last entry in the partition.
    through: u64,
    /// The events to send (all but the follower's own).
    events: Vec<(u64, WireEvent)>,
    /// True if one of them is this node's own.
    own: bool,
}

/// The bytes of `events` on the wire, about.
fn weight_of(events: &[(u64, WireEvent)]) -> usize {
    events
        .iter()
        .map(|(_, e)| wire_weight(&e.path, e.value.as_deref()))
        .sum()
}

/// Moves what `f`'s live streams held back into `frames`; each stream is
/// then sent that far.
fn take_relayed(f: &mut Follower, frames: &mut Vec<(Bundled, usize)>, counter: &AtomicU64) {
    for (part, held) in std::mem::take(&mut f.relayed) {
        if let Some(Stream::Live { sent }) = f.parts.get_mut(&part) {
            *sent = held.through;
            events_frames(frames, (part, held.through, true), held.events, counter);
        }
    }
}

/// Adds `part`'s entries to `frames` as `Events` frames of bounded size,
/// each with its weight on the link.
fn events_frames(
    frames: &mut Vec<(Bundled, usize)>,
    (part, through, live): (u16, u64, bool),
    events: Vec<(u64, WireEvent)>,
    sent: &AtomicU64,
) {
    sent.fetch_add(events.len() as u64, Ordering::Relaxed);
    let mut frame = Vec::new();
    let mut bytes = 0;
    let total = events.len();
    for (i, (seq, event)) in events.into_iter().enumerate() {
        bytes += wire_weight(&event.path, event.value.as_deref());
        frame.push((seq, event));
        if bytes >= FRAME_BYTES && i + 1 < total {
            let upto = frame.last().map_or(through, |(s, _)| *s);
            let events = std::mem::take(&mut frame);
            frames.push((
                Bundled::Events {
                    part,
                    through: upto,
                    live,
                    events,
                },
                bytes,
            ));
            bytes = 0;
        }
    }
    frames.push((
        Bundled::Events {
            part,
            through,
            live,
            events: frame,
        },
        bytes + FRAME_OVERHEAD,
    ));
}

/// `frames` (each with its weight on the link) in bundles of at most
/// about [`FRAME_BYTES`], in order; a frame alone goes as it is.
fn bundles(frames: Vec<(Bundled, usize)>) -> Vec<(PeerFrame, usize)> {
    let mut out = Vec::new();
    let mut bundle = Vec::new();
    let mut bytes = 0;
    let flush = |out: &mut Vec<_>, bundle: &mut Vec<Bundled>, bytes: &mut usize| {
        if let Some(frame) = PeerFrame::bundled(std::mem::take(bundle)) {
            out.push((frame, std::mem::take(bytes)));
        }
    };
    for (frame, weight) in frames {
        if !bundle.is_empty() && bytes + weight > FRAME_BYTES {
            flush(&mut out, &mut bundle, &mut bytes);
        }
        bundle.push(frame);
        bytes += weight;
    }
    flush(&mut out, &mut bundle, &mut bytes);
    out
}

impl Serving {
    /// The streams node `node_id` serves: none yet.
    pub fn new(node_id: &str) -> Serving {
        Serving {
            node_id: node_id.to_string(),
            followers: HashMap::new(),
            work: VecDeque::new(),
        }
    }

    /// `node` follows `parts` (each from its cursor, or from a reset) over
    /// link `link`.
    pub fn follow(
        &mut self,
        local: &Node,
        node: &str,
        link: u64,
        (peer, queue): (Recipient<SendPaced>, SendGauge),
        parts: Vec<(u16, Option<u64>)>,
    ) {
        let follower = self.follower(node, link, peer, queue);
        let mut queued = Vec::with_capacity(parts.len());
        // (What was held back goes again: the stream starts from `after`.)
        for (part, after) in parts {
            if u32::from(part) >= local.layout().partitions() {
                continue;
            }
            let stream = match after {
                Some(sent) => Stream::CatchUp { sent },
                None => reset(local, follower, part),
            };
            follower.parts.insert(part, stream);
            follower.quiet.remove(&part);
            follower.relayed.remove(&part);
            queued.push((node.to_string(), part));
        }
        self.work.extend(queued);
    }

    fn follower(
        &mut self,
        node: &str,
        link: u64,
        peer: Recipient<SendPaced>,
        queue: SendGauge,
    ) -> &mut Follower {
        let follower = self
            .followers
            .entry(node.to_string())
            .or_insert_with(|| Follower {
                link,
                peer: peer.clone(),
                queue: queue.clone(),
                parts: HashMap::new(),
                quiet: BTreeMap::new(),
                relayed: BTreeMap::new(),
            });
        if follower.link != link {
            // A new link: what the old one streamed is the follower's to ask again.
            *follower = Follower {
                link,
                peer,
                queue,
                parts: HashMap::new(),
                quiet: BTreeMap::new(),
                relayed: BTreeMap::new(),
            };
        }
        follower
    }

    /// True if every stream served to `node` is live (none catching up)
    /// and `node` merged all it was sent but what its `Merged` may leave
    /// for the next tick (at most `unsaid` bytes). (Relayed events held
    /// back for the tick do not count: the follower has them from their
    /// maker, or a sweep finds them.)
    pub fn all_live(&self, node: &str, unsaid: usize) -> bool {
        self.followers.get(node).is_none_or(|f| {
            f.queue.unmerged() <= unsaid
                && f.parts.values().all(|s| matches!(s, Stream::Live { .. }))
        })
    }

    /// `node` no longer follows `parts`.
    pub fn unfollow(&mut self, node: &str, link: u64, parts: &[u16]) {
        if let Some(f) = self.followers.get_mut(node).filter(|f| f.link == link) {
            for part in parts {
                f.parts.remove(part);
                f.quiet.remove(part);
                f.relayed.remove(part);
            }
        }
    }

    /// Link `link` to `node` is gone: its streams end.
    pub fn drop_link(&mut self, node: &str, link: u64) {
        if self.followers.get(node).is_some_and(|f| f.link == link) {
            self.followers.remove(node);
        }
    }

    /// Streams served now.
    pub fn streams(&self) -> usize {
        self.followers.values().map(|f| f.parts.len()).sum()
    }

    /// How far behind each served partition is, for the partitions some
    /// stream is behind in: the most entries of this node's log (up to
    /// `head`) a stream of it has not been sent yet. A stream catching up
    /// counts every entry after what it was sent (other partitions' too: an
    /// upper bound); a live stream is
    /// sent each commit as it is made (or on the next tick: how far a
    /// commit of only the follower's events reaches, and the events a third
    /// node made), and is not behind
    /// (its `sent` is the partition's last entry, which an idle partition
    /// leaves far below `head`).
    pub fn lag_by_part(&self, head: u64) -> BTreeMap<u16, u64> {
        let mut lag = BTreeMap::new();
        for f in self.followers.values() {
            for (part, stream) in &f.parts {
                let behind = match stream {
                    Stream::CatchUp { sent } => head.saturating_sub(*sent),
                    Stream::Live { .. } => 0,
                };
                if behind > 0 {
                    let most = lag.entry(*part).or_insert(0);
                    *most = behind.max(*most);
                }
            }
        }
        lag
    }

    /// A commit was not handed over by the tap: every live stream reads
    /// the store again from where it is.
    pub fn lost_commits(&mut self) {
        for (node, f) in &mut self.followers {
            for (part, stream) in &mut f.parts {
                if let Stream::Live { sent } = *stream {
                    *stream = Stream::CatchUp { sent };
                    self.work.push_back((node.clone(), *part));
                }
            }
            // (The pages read from `sent` say how far they reach, and
            // hold what was held back.)
            f.quiet.clear();
            f.relayed.clear();
        }
    }

    /// Sends one commit's events to the live streams that want them (a
    /// follower is not sent the events it made itself: a partition whose
    /// entries in the commit are all the follower's is told how far it is
    /// sent later, by [`Serving::send_on_tick`], not by a frame each time;
    /// events a third node made wait for the tick too, unless this node's
    /// own follow them).
    pub fn on_commit(&mut self, entries: &[(u64, u16, Arc<Event>)], counter: &AtomicU64) {
        for (node, f) in self.followers.iter_mut() {
            let mut out: BTreeMap<u16, PartCommit> = BTreeMap::new();
            for (seq, part, event) in entries {
                let Some(Stream::Live { sent }) = f.parts.get(part) else {
                    continue;
                };
                if *seq <= *sent {
                    continue;
                }
                let slot = out.entry(*part).or_default();
                slot.through = *seq;
                let maker = event.version.node.as_str();
                if maker != node.as_str() {
                    slot.own |= maker == self.node_id.as_str();
                    slot.events.push((*seq, WireEvent::from(&**event)));
                }
            }
            // One commit's frames go in one bundle.
            let mut frames = Vec::new();
            for (part, slot) in out {
                let Some(Stream::Live { sent }) = f.parts.get_mut(&part) else {
                    continue;
                };
                if slot.own {
                    *sent = slot.through;
                    // Now, after what was held back.
                    let events = match f.relayed.remove(&part) {
                        Some(mut held) => {
                            held.events.extend(slot.events);
                            held.events
                        }
                        None => slot.events,
                    };
                    f.quiet.remove(&part);
                    events_frames(&mut frames, (part, slot.through, true), events, counter);
                } else if f.relayed.contains_key(&part) || !slot.events.is_empty() {
                    // (A held stream reaches past the follower's own
                    // events too; it is not quiet.)
                    f.quiet.remove(&part);
                    f.hold(part, slot.through, slot.events);
                } else {
                    *sent = slot.through;
                    f.quiet.insert(part, slot.through);
                }
            }
            if f.relayed_bytes() > RELAY_BYTES {
                take_relayed(f, &mut frames, counter);
            }
            for (frame, weight) in bundles(frames) {
                f.send(frame, weight);
            }
        }
    }

    /// Sends each follower what its live streams held back (relayed
    /// events), and how far they are sent where only its own events were
    /// (so its saved cursors keep up, and a link that comes back resumes
    /// near the head): one bundle per follower. Called periodically; until
    /// then a cursor trails by entries that are the follower's own, which a
    /// resumed stream leaves out again, or held back, which it sends.
    pub fn send_on_tick(&mut self, counter: &AtomicU64) {
        for f in self.followers.values_mut() {
            if f.quiet.is_empty() && f.relayed.is_empty() {
                continue;
            }
            let mut frames = Vec::new();
            take_relayed(f, &mut frames, counter);
            let quiet = std::mem::take(&mut f.quiet);
            frames.extend(
                quiet
                    .into_iter()
                    // (One catching up again reads the store from `sent`.)
                    .filter(|(part, _)| matches!(f.parts.get(part), Some(Stream::Live { .. })))
                    .map(|(part, through)| {
                        let frame = Bundled::Events {
                            part,
                            through,
                            live: true,
                            events: Vec::new(),
                        };
                        (frame, FRAME_OVERHEAD)
                    }),
            );
            for (frame, weight) in bundles(frames) {
                f.send(frame, weight);
            }
        }
    }

    /// True if streams have pages to read.
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Reads and sends up to `turns` pages, one per stream in turn, of
    /// streams whose link's send queue holds at most `high_water` bytes,
    /// and whose follower has at most that much in flight unmerged (a
    /// follower that merges slower than its link delivers paces its
    /// catching up).
    /// True if a page was sent (false: every stream with work waits for
    /// its link).
    pub fn pump(
        &mut self,
        local: &Node,
        turns: usize,
        high_water: usize,
        counter: &AtomicU64,
    ) -> Result<bool, NodeError> {
        let mut sent = false;
        let mut waiting = 0;
        for _ in 0..turns {
            if waiting >= self.work.len() {
                break;
            }
            let Some((node, part)) = self.work.pop_front() else {
                break;
            };
            let Some(f) = self.followers.get_mut(&node) else {
                continue;
            };
            let Some(stream) = f.parts.get(&part).cloned() else {
                continue;
            };
            // The gauge counts what `Follower::send` handed over already,
            // and what the follower has not said it merged.
            let Some(budget) = f.queue.room(high_water) else {
                self.work.push_back((node, part));
                waiting += 1;
                continue;
            };
            sent = true;
            let next = match self.step(local, &node, part, stream, budget, counter) {
                Ok(next) => next,
                Err(e) => {
                    self.work.push_back((node, part));
                    return Err(e);
                }
            };
            let Some(f) = self.followers.get_mut(&node) else {
                continue;
            };
            let more = !matches!(next, Stream::Live { .. });
            f.parts.insert(part, next);
            if more {
                self.work.push_back((node, part));
            }
        }
        Ok(sent)
    }

    /// One page of a stream that is not live, of about `budget` bytes
    /// at most (one entry at least): where it stands next.
    fn step(
        &mut self,
        local: &Node,
        node: &str,
        part: u16,
        stream: Stream,
        budget: usize,
        counter: &AtomicU64,
    ) -> Result<Stream, NodeError> {
        let Some(f) = self.followers.get_mut(node) else {
            return Ok(stream);
        };
        match stream {
            Stream::Live { sent } => Ok(Stream::Live { sent }),
            Stream::CatchUp { sent } => {
                let head = local.log_head();
                if sent > head {
                    // The follower is ahead of this log: it cannot be a
                    // position here.
                    return Ok(reset(local, f, part));
                }
                let mut page = local.partition_log_until(part, sent, head, PAGE_ENTRIES)?;
                if page.trimmed {
                    return Ok(reset(local, f, part));
                }
                let keep = within(&page.entries, budget);
                if keep < page.entries.len() {
                    // The rest of the page waits for the next step.
                    page.through = page.entries[keep - 1].seq.unwrap_or(sent).max(sent);
                    page.entries.truncate(keep);
                }
                let events = page
                    .entries
                    .iter()
                    .filter(|s| s.event.version.node.as_str() != node)
                    .map(|s| (s.seq.unwrap_or(0), WireEvent::from(&s.event)))
                    .collect::<Vec<_>>();
                if page.through > sent || !events.is_empty() {
                    send_events(f, part, page.through, false, events, counter);
                }
                if page.through < head {
                    return Ok(Stream::CatchUp { sent: page.through });
                }
                // Caught up: said with a live frame, so the follower knows
                // it holds the partition now.
                send_events(f, part, head, true, Vec::new(), counter);
                Ok(Stream::Live { sent: head })
            }
        }
    }
}

/// The weight of a stored entry on the wire, about.
fn weight(s: &crate::store::Stored) -> usize {
    wire_weight(s.event.path.as_str(), s.event.value.as_deref())
}

/// How many of `page`'s first entries fit in `budget` bytes (one at
/// least).
fn within(page: &[crate::store::Stored], budget: usize) -> usize {
    let mut total = 0;
    for (i, s) in page.iter().enumerate() {
        total += weight(s);
        if i > 0 && total > budget {
            return i;
        }
    }
    page.len()
}

/// Starts a stream over: tells the follower the log after `from` follows
/// (what came before, it gets by comparing trees). `from` is as far as the
/// merkle trees reach now (so the follower's comparison need not wait for
/// them, and the latest writes come by the stream, acknowledged at once),
/// or the head if the log no longer reaches back there.
fn reset(local: &Node, f: &mut Follower, part: u16) -> Stream {
    let head = local.log_head();
    let from = match local.merkle_folded() {
        Some(folded) => match local.partition_log_until(part, folded.min(head), head, 1) {
            Ok(page) if !page.trimmed => folded.min(head),
            _ => head,
        },
        // The folder has not made a pass since the node started.
        None => head,
    };
    f.send(PeerFrame::Reset { part, head: from }, FRAME_OVERHEAD);
    Stream::CatchUp { sent: from }
}

#[cfg(test)]
mod tests {
    use actix::{Actor, Addr, Context, Handler, Message, MessageResult, System};
    use bytes::Bytes;

    use super::*;
    use crate::model::{NodeId, Path, Version};

    /// Keeps the frames a follower's link is handed.
    #[derive(Default)]
    struct Link(Vec<PeerFrame>);

    impl Actor for Link {
        type Context = Context<Self>;
    }

    impl Handler<SendPaced> for Link {
        type Result = ();

        fn handle(&mut self, msg: SendPaced, _: &mut Self::Context) {
            self.0.push(msg.frame);
        }
    }

    /// The frames handed so far (after every one sent before it).
    struct Taken;

    impl Message for Taken {
        type Result = Vec<PeerFrame>;
    }

    impl Handler<Taken> for Link {
        type Result = MessageResult<Taken>;

        fn handle(&mut self, _: Taken, _: &mut Self::Context) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    /// Each `Events` frame handed (bundled or not): partition, how far
    /// it reaches, and the seqs of its events.
    async fn taken(link: &Addr<Link>) -> Vec<(u16, u64, Vec<u64>)> {
        let mut out = Vec::new();
        for frame in link.send(Taken).await.unwrap() {
            let inner = match frame {
                PeerFrame::Bundle { frames } => frames,
                PeerFrame::Events {
                    part,
                    through,
                    live,
                    events,
                } => vec![Bundled::Events {
                    part,
                    through,
                    live,
                    events,
                }],
                other => panic!("{other:?}"),
            };
            for b in inner {
                let Bundled::Events {
                    part,
                    through,
                    events,
                    ..
                } = b
                else {
                    panic!("{b:?}");
                };
                out.push((part, through, events.iter().map(|(s, _)| *s).collect()));
            }
        }
        out
    }

    /// An entry of the log: `seq` in partition `part`, made by `maker`.
    fn entry(seq: u64, part: u16, maker: &str) -> (u64, u16, Arc<Event>) {
        let event = Event {
            path: Path::parse_key(&format!("p{part}/k{seq}")).unwrap(),
            version: Version::new(seq, NodeId::new(maker).unwrap()),
            value: Some(Bytes::from_static(b"v")),
            content_type: None,
            expires_at: None,
            author: None,
        };
        (seq, part, Arc::new(event))
    }

    /// Serving at node b, to follower c, partitions 0 and 1 live.
    fn serving_to_c(link: &Addr<Link>) -> Serving {
        let mut serving = Serving::new("b");
        let parts = [(0, Stream::Live { sent: 0 }), (1, Stream::Live { sent: 0 })];
        serving.followers.insert(
            "c".to_string(),
            Follower {
                link: 1,
                peer: link.clone().recipient(),
                queue: SendGauge::default(),
                parts: parts.into_iter().collect(),
                quiet: BTreeMap::new(),
                relayed: BTreeMap::new(),
            },
        );
        serving
    }

    fn sent(serving: &Serving, part: u16) -> u64 {
        match serving.followers["c"].parts[&part] {
            Stream::Live { sent } | Stream::CatchUp { sent } => sent,
        }
    }

    #[test]
    fn relayed_events_wait_for_the_tick_or_go_first_with_the_nodes_own() {
        System::new().block_on(relayed_events_wait());
    }

    async fn relayed_events_wait() {
        let link = Link::default().start();
        let mut serving = serving_to_c(&link);
        let counter = AtomicU64::new(0);
        // a's events, relayed by b: held, and the stream not moved.
        serving.on_commit(&[entry(1, 0, "a"), entry(2, 0, "a")], &counter);
        // c's own: the held stream reaches past them, still held.
        serving.on_commit(&[entry(3, 0, "c")], &counter);
        assert_eq!(taken(&link).await, vec![]);
        assert_eq!(sent(&serving, 0), 0);
        // b's own: at once, after what was held, in one frame.
        serving.on_commit(&[entry(4, 0, "b")], &counter);
        assert_eq!(taken(&link).await, vec![(0, 4, vec![1, 2, 4])]);
        assert_eq!(sent(&serving, 0), 4);
        assert_eq!(serving.followers["c"].relayed_bytes(), 0);
        // Relayed in one partition, only c's own in the other: both go on
        // the tick, in one bundle.
        serving.on_commit(&[entry(5, 0, "a"), entry(6, 1, "c")], &counter);
        assert_eq!(taken(&link).await, vec![]);
        serving.send_on_tick(&counter);
        assert_eq!(taken(&link).await, vec![(0, 5, vec![5]), (1, 6, vec![])]);
        assert_eq!((sent(&serving, 0), sent(&serving, 1)), (5, 6));
        // Past the bound, at once.
        let many: Vec<_> = (7..7 + RELAY_BYTES as u64 / 40)
            .map(|s| entry(s, 1, "a"))
            .collect();
        serving.on_commit(&many, &counter);
        let frames = taken(&link).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].2.len(), many.len());
        assert_eq!(serving.followers["c"].relayed_bytes(), 0);
        // What a stream held goes again from the store when it catches up
        // (its position never passed it).
        serving.on_commit(&[entry(1000, 0, "a")], &counter);
        serving.lost_commits();
        assert_eq!(
            serving.followers["c"].parts[&0],
            Stream::CatchUp { sent: 5 }
        );
        serving.send_on_tick(&counter);
        assert_eq!(taken(&link).await, vec![]);
    }

    fn events(part: u16, weight: usize) -> (Bundled, usize) {
        let frame = Bundled::Events {
            part,
            through: 1,
            live: true,
            events: Vec::new(),
        };
        (frame, weight)
    }

    #[test]
    fn a_commits_frames_go_in_bundles_of_bounded_size_in_order() {
        // One frame: as it is.
        let one = bundles(vec![events(1, 100)]);
        assert_eq!(one.len(), 1);
        assert!(matches!(one[0], (PeerFrame::Events { part: 1, .. }, 100)));
        // Many small ones: one bundle, in order, weighing their sum.
        let many = bundles((0..50).map(|p| events(p, 100)).collect());
        assert_eq!(many.len(), 1);
        let (PeerFrame::Bundle { frames }, 5000) = &many[0] else {
            panic!("one bundle of 5000 bytes: {:?}", many[0].1);
        };
        let parts: Vec<u16> = frames
            .iter()
            .map(|f| match f {
                Bundled::Events { part, .. } => *part,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(parts, (0..50).collect::<Vec<u16>>());
        // Big ones: a bundle is cut before it passes the frame size, and a
        // frame bigger than that goes alone.
        let half = FRAME_BYTES / 2;
        let cut = bundles(vec![
            events(1, half),
            events(2, half),
            events(3, 10),
            events(4, FRAME_BYTES * 2),
            events(5, 10),
        ]);
        let shapes: Vec<(usize, usize)> = cut
            .iter()
            .map(|(f, w)| match f {
                PeerFrame::Bundle { frames } => (frames.len(), *w),
                _ => (1, *w),
            })
            .collect();
        assert_eq!(
            shapes,
            vec![(2, 2 * half), (1, 10), (1, FRAME_BYTES * 2), (1, 10)]
        );
        assert!(bundles(Vec::new()).is_empty());
    }
}
