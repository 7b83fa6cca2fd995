//! The streams a node follows: for each co-owner, the partitions they
//! share, each with a cursor in that peer's log (`<incarnation>:<seq>`,
//! like a client's), kept in the store so a restarted node resumes where it
//! stopped instead of starting over.
//!
//! Frames from one peer are merged in arrival order, a batch at a time:
//! whatever arrived while one batch merged is the next batch (so merges
//! group into commits under load). A cursor moves only after everything
//! before it is merged, durably as configured.
//!
//! A stream the peer cannot resume from a cursor (none saved, another
//! incarnation of its log, trimmed) starts with `Reset`: the log after the
//! reset's head follows, and what came before is compared with the peer's
//! merkle trees (a diff session the replicator runs, [`Following::take_to_compare`]);
//! the cursor stays where it was until that session ends well
//! ([`Following::compared`]), so a node stopped in between compares again.

use std::collections::{BTreeSet, HashMap};

use crate::cluster::frame::PeerFrame;
use crate::error::NodeError;
use crate::Node;

/// The store's key for the cursor of `part` in `peer`'s log.
fn cursor_key(peer: &str, part: u16) -> String {
    format!("follow/{peer}/{part}")
}

/// Where the cursors of streams followed are saved: the node's metadata.
pub(super) trait Cursors {
    /// What is saved under `key`, if anything.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError>;
    /// Saves `value` under `key`.
    fn write(&self, key: &str, value: &[u8]) -> Result<(), NodeError>;
}

impl Cursors for Node {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError> {
        self.meta(key)
    }
    fn write(&self, key: &str, value: &[u8]) -> Result<(), NodeError> {
        self.set_meta(key, value)
    }
}

#[derive(Debug, Default)]
struct Cursor {
    /// Which following of the partition this is: a step of an earlier one
    /// (a stream stopped and started again) moves nothing.
    generation: u64,
    /// Everything up to here in the peer's log is merged (`None`: nothing
    /// known; the peer starts with a reset).
    seq: Option<u64>,
    /// The stream was reset: the cursor waits for the trees to be compared.
    resetting: Option<Resetting>,
    /// Moved since it was last saved.
    dirty: bool,
    /// The stream caught up with the peer's log once (it is live).
    live: bool,
}

/// A stream reset and not yet compared with the peer's trees.
#[derive(Debug, Clone, Copy)]
struct Resetting {
    /// The log follows from here; the trees hold what came before.
    head: u64,
    /// Where the stream got meanwhile (merged), and whether it turned live.
    through: u64,
    live: bool,
    /// A diff session compares it now.
    comparing: bool,
}

/// Most events merged in one batch (the rest waits for the next).
const MAX_BATCH_EVENTS: usize = 4096;

/// What a frame does to cursors once merged.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Reset { part: u16, head: u64 },
    Through { part: u16, seq: u64, live: bool },
}

impl Step {
    fn part(&self) -> u16 {
        match *self {
            Step::Reset { part, .. } | Step::Through { part, .. } => part,
        }
    }

    /// What `frame` does to cursors, if anything.
    fn of(frame: &PeerFrame) -> Option<Step> {
        match frame {
            PeerFrame::Reset { part, head } => Some(Step::Reset {
                part: *part,
                head: *head,
            }),
            PeerFrame::Events {
                part,
                through,
                live,
                ..
            } => Some(Step::Through {
                part: *part,
                seq: *through,
                live: *live,
            }),
            _ => None,
        }
    }
}

/// A partition reset, to compare with the peer's trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compare {
    /// The partition.
    pub part: u16,
    /// Which following of it.
    pub generation: u64,
    /// The reset's head: the peer's trees must hold its log through it.
    pub head: u64,
}

/// Partitions to start following (each from its cursor, if any) and to
/// stop following.
pub(super) struct Changes {
    pub start: Vec<(u16, Option<u64>)>,
    pub stop: Vec<u16>,
}

struct Followed {
    link: u64,
    incarnation: String,
    parts: HashMap<u16, Cursor>,
    queue: std::collections::VecDeque<PeerFrame>,
    /// What the queue weighs (see `PeerFrame::merge_weight`).
    queued: u64,
    busy: bool,
    /// A batch failed: nothing more is taken from this link (it is being
    /// closed), so no cursor moves past what was not merged.
    broken: bool,
    /// Partitions stopped while reset and not yet compared with the peer's
    /// trees: followed again over this link, they still are (the frames of
    /// the stream stopped, still on their way, may reach past the reset's
    /// head, and only a comparison brings what came before it).
    stopped_resetting: HashMap<u16, Resetting>,
}

/// Frames to merge, and what they do to cursors (with the generation of
/// the cursor each step is for).
pub(super) struct Batch {
    pub link: u64,
    pub frames: Vec<PeerFrame>,
    pub steps: Vec<(Step, u64)>,
    /// What the frames weigh (reported to the peer once merged).
    pub weight: u64,
}

/// What became of a frame offered to a stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Enqueued {
    /// Queued to be merged in its turn.
    Queued,
    /// Not a link followed (or one being closed): dropped.
    NotFollowed,
    /// Queued, and what waits to be merged from that peer now weighs more
    /// than the bound: the follower cannot keep up.
    Overloaded(u64),
}

/// Events a frame carries.
fn events_in(frame: &PeerFrame) -> usize {
    match frame {
        PeerFrame::Events { events, .. } => events.len(),
        _ => 0,
    }
}

/// The streams followed, by peer node id.
#[derive(Default)]
pub(super) struct Following {
    peers: HashMap<String, Followed>,
    generations: u64,
}

impl Following {
    /// Brings the partitions followed from `peer` (over link `link`, whose
    /// log is `incarnation`) to `desired`: answers those to start, each
    /// from its saved cursor (when it is of that incarnation), and those to
    /// stop. What it answers is what it did: a partition whose saved cursor
    /// cannot be read is not started (the next call tries again), and a
    /// cursor that cannot be saved is logged, its partition stopped all the
    /// same (it is read again from an older cursor, or reset, later).
    pub fn diff(
        &mut self,
        local: &impl Cursors,
        peer: &str,
        link: u64,
        incarnation: &str,
        desired: &BTreeSet<u16>,
    ) -> Changes {
        if self.peers.get(peer).is_some_and(|f| f.link != link) {
            if let Err(e) = self.drop_peer(local, peer) {
                log::error!("replication from '{peer}': saving the cursors of a link gone: {e}");
            }
        }
        let followed = self
            .peers
            .entry(peer.to_string())
            .or_insert_with(|| Followed {
                link,
                incarnation: incarnation.to_string(),
                parts: HashMap::new(),
                queue: Default::default(),
                queued: 0,
                busy: false,
                broken: false,
                stopped_resetting: HashMap::new(),
            });
        let mut start = Vec::new();
        for &part in desired {
            if followed.parts.contains_key(&part) {
                continue;
            }
            let saved = match local.read(&cursor_key(peer, part)) {
                Ok(saved) => saved,
                Err(e) => {
                    log::error!("replication from '{peer}': reading the cursor of {part}: {e}");
                    continue;
                }
            };
            let saved = saved
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|text| {
                    let (inc, seq) = text.rsplit_once(':')?;
                    (inc == incarnation).then(|| seq.parse::<u64>().ok())?
                });
            self.generations += 1;
            // (Not live: the new stream turns live itself.)
            let resetting = followed.stopped_resetting.remove(&part).map(|r| Resetting {
                comparing: false,
                live: false,
                ..r
            });
            followed.parts.insert(
                part,
                Cursor {
                    generation: self.generations,
                    seq: saved,
                    resetting,
                    ..Cursor::default()
                },
            );
            start.push((part, saved));
        }
        let stop: Vec<u16> = followed
            .parts
            .keys()
            .filter(|p| !desired.contains(p))
            .copied()
            .collect();
        for part in &stop {
            if let Some(cursor) = followed.parts.remove(part) {
                if let Some(r) = cursor.resetting {
                    followed.stopped_resetting.insert(*part, r);
                }
                if let Err(e) = save(local, peer, &followed.incarnation, *part, &cursor) {
                    log::error!("replication from '{peer}': saving the cursor of {part}: {e}");
                }
            }
        }
        Changes { start, stop }
    }

    /// Partitions whose stream from some co-owner has caught up: this node
    /// holds what that owner held when the stream turned live.
    pub fn caught_up(&self) -> std::collections::HashSet<u16> {
        self.peers
            .values()
            .flat_map(|f| f.parts.iter())
            .filter(|(_, c)| c.live)
            .map(|(part, _)| *part)
            .collect()
    }

    /// True if every stream followed from `peer` has caught up (is live,
    /// no reset waiting for its comparison).
    pub fn all_live(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_none_or(|f| f.parts.values().all(|c| c.live && c.resetting.is_none()))
    }

    /// Partitions followed now.
    pub fn streams(&self) -> usize {
        self.peers.values().map(|f| f.parts.len()).sum()
    }

    /// The link to `peer` is gone: saves its cursors and forgets it.
    pub fn drop_link(
        &mut self,
        local: &impl Cursors,
        peer: &str,
        link: u64,
    ) -> Result<(), NodeError> {
        if self.peers.get(peer).is_some_and(|f| f.link == link) {
            self.drop_peer(local, peer)?;
        }
        Ok(())
    }

    fn drop_peer(&mut self, local: &impl Cursors, peer: &str) -> Result<(), NodeError> {
        if let Some(f) = self.peers.remove(peer) {
            for (part, cursor) in &f.parts {
                save(local, peer, &f.incarnation, *part, cursor)?;
            }
        }
        Ok(())
    }

    /// Queues a frame of `peer`'s stream (over `link`), unless that is not
    /// the link followed; says when what waits from that peer weighs more
    /// than `bound` bytes. (The peer keeps what it sends ahead of this
    /// node's merges within the window this node asked for, a quarter of
    /// the bound, while catching up, a page over at most; live changes
    /// coming faster than they merge pass it.)
    pub fn enqueue(&mut self, peer: &str, link: u64, frame: PeerFrame, bound: u64) -> Enqueued {
        match self
            .peers
            .get_mut(peer)
            .filter(|f| f.link == link && !f.broken)
        {
            Some(f) => {
                f.queued += frame.merge_weight() as u64;
                f.queue.push_back(frame);
                // (A frame alone is taken whatever it weighs: one value
                // may be larger than the bound.)
                if f.queued > bound && f.queue.len() > 1 {
                    Enqueued::Overloaded(f.queued)
                } else {
                    Enqueued::Queued
                }
            }
            None => Enqueued::NotFollowed,
        }
    }

    /// What waits to be merged, from every peer (bytes, see
    /// `PeerFrame::merge_weight`).
    pub fn queued(&self) -> u64 {
        self.peers.values().map(|f| f.queued).sum()
    }

    /// The frames to merge next from `peer` (at most about
    /// [`MAX_BATCH_EVENTS`] events), unless a batch is merging.
    pub fn take_batch(&mut self, peer: &str) -> Option<Batch> {
        let f = self.peers.get_mut(peer)?;
        if f.busy || f.broken || f.queue.is_empty() {
            return None;
        }
        f.busy = true;
        let mut frames = Vec::new();
        let mut events = 0;
        let mut weight = 0u64;
        while let Some(frame) = f.queue.front() {
            let n = events_in(frame);
            if !frames.is_empty() && events + n > MAX_BATCH_EVENTS {
                break;
            }
            events += n;
            weight += frame.merge_weight() as u64;
            frames.extend(f.queue.pop_front());
        }
        f.queued = f.queued.saturating_sub(weight);
        let steps = frames
            .iter()
            .filter_map(Step::of)
            .filter_map(|step| {
                let generation = f.parts.get(&step.part())?.generation;
                Some((step, generation))
            })
            .collect();
        Some(Batch {
            link: f.link,
            frames,
            steps,
            weight,
        })
    }

    /// A batch from `peer` over `link` is merged: its steps move cursors.
    /// True if a stream of it turned live (caught up).
    pub fn merged(&mut self, peer: &str, link: u64, steps: &[(Step, u64)]) -> bool {
        let mut turned_live = false;
        let Some(f) = self.peers.get_mut(peer).filter(|f| f.link == link) else {
            return turned_live;
        };
        f.busy = false;
        for (step, generation) in steps {
            if f.parts
                .get(&step.part())
                .is_none_or(|c| c.generation != *generation)
            {
                continue;
            }
            match *step {
                Step::Reset { part, head } => {
                    if let Some(c) = f.parts.get_mut(&part) {
                        // Not caught up until the trees are compared (a
                        // session already comparing may have looked before
                        // this head: it counts for nothing).
                        c.resetting = Some(Resetting {
                            head,
                            through: head,
                            live: false,
                            comparing: false,
                        });
                        c.live = false;
                    }
                }
                Step::Through { part, seq, live } => {
                    if let Some(c) = f.parts.get_mut(&part) {
                        if let Some(r) = &mut c.resetting {
                            r.through = r.through.max(seq);
                            r.live |= live;
                            continue;
                        }
                        if c.seq.is_none() {
                            // A stream followed from nothing begins with a
                            // reset: this is a frame of one before it (the
                            // partition was stopped and followed again on
                            // this link), which moves nothing.
                            continue;
                        }
                        // A live frame comes only after the stream caught up.
                        turned_live |= live && !c.live;
                        c.live |= live;
                        if c.seq.is_none_or(|s| s < seq) {
                            c.seq = Some(seq);
                            c.dirty = true;
                        }
                    }
                }
            }
        }
        turned_live
    }

    /// The partitions of `peer` reset and not being compared, each with the
    /// generation of its following and the reset's head, now marked as
    /// being compared (the link's number too).
    pub fn take_to_compare(&mut self, peer: &str) -> Option<(u64, Vec<Compare>)> {
        let f = self.peers.get_mut(peer).filter(|f| !f.broken)?;
        let mut parts = Vec::new();
        for (part, c) in &mut f.parts {
            if let Some(r) = c.resetting.as_mut().filter(|r| !r.comparing) {
                r.comparing = true;
                parts.push(Compare {
                    part: *part,
                    generation: c.generation,
                    head: r.head,
                });
            }
        }
        parts.sort_by_key(|c| c.part);
        (!parts.is_empty()).then_some((f.link, parts))
    }

    /// Peers with partitions reset and not being compared.
    pub fn peers_to_compare(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, f)| {
                !f.broken
                    && f.parts
                        .values()
                        .any(|c| c.resetting.is_some_and(|r| !r.comparing))
            })
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// A diff session with `peer` over `link` compared `parts` (`ok`: it
    /// ended well, so this node holds every event the peer's trees held
    /// through each reset's head): their cursors move to where the stream
    /// got. True if a stream turned live (caught up). A session that
    /// failed leaves them to be compared again.
    pub fn compared(&mut self, peer: &str, link: u64, parts: &[Compare], ok: bool) -> bool {
        let mut turned_live = false;
        let Some(f) = self.peers.get_mut(peer).filter(|f| f.link == link) else {
            return turned_live;
        };
        for done in parts {
            let Some(c) = f
                .parts
                .get_mut(&done.part)
                .filter(|c| c.generation == done.generation)
            else {
                continue;
            };
            let Some(r) = c.resetting.filter(|r| r.comparing && r.head == done.head) else {
                continue;
            };
            if !ok {
                c.resetting = Some(Resetting {
                    comparing: false,
                    ..r
                });
                continue;
            }
            c.resetting = None;
            c.seq = Some(r.through);
            c.dirty = true;
            turned_live |= r.live && !c.live;
            c.live = r.live;
        }
        turned_live
    }

    /// A batch failed: the link is to be closed (the stream resumes from
    /// the saved cursors on the next one).
    pub fn failed(&mut self, peer: &str, link: u64) {
        if let Some(f) = self.peers.get_mut(peer).filter(|f| f.link == link) {
            f.busy = false;
            f.broken = true;
            f.queue.clear();
            f.queued = 0;
        }
    }

    /// Saves the cursors that moved.
    pub fn save_dirty(&mut self, local: &impl Cursors) -> Result<(), NodeError> {
        for (peer, f) in &mut self.peers {
            for (part, cursor) in &mut f.parts {
                if cursor.dirty {
                    save(local, peer, &f.incarnation, *part, cursor)?;
                    cursor.dirty = false;
                }
            }
        }
        Ok(())
    }
}

/// Forgets every saved cursor of partition `part`, in any peer's log: its
/// copy here is dropped, so a later following is reset.
pub(super) fn forget_cursors(local: &Node, part: u16) -> Result<(), NodeError> {
    let store = local.store();
    let suffix = format!("/{part}");
    for name in store.meta_names("follow/")? {
        if name.ends_with(&suffix) {
            store.remove_meta(&name)?;
        }
    }
    Ok(())
}

fn save(
    local: &impl Cursors,
    peer: &str,
    incarnation: &str,
    part: u16,
    cursor: &Cursor,
) -> Result<(), NodeError> {
    if let Some(seq) = cursor.seq {
        local.write(
            &cursor_key(peer, part),
            format!("{incarnation}:{seq}").as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Following `peer` over link 1, partitions 0 and 1 with cursor 10.
    fn following() -> Following {
        let mut f = Following::default();
        let mut parts = HashMap::new();
        for part in [0u16, 1] {
            f.generations += 1;
            parts.insert(
                part,
                Cursor {
                    generation: f.generations,
                    seq: Some(10),
                    ..Cursor::default()
                },
            );
        }
        f.peers.insert(
            "p".into(),
            Followed {
                link: 1,
                incarnation: "i".into(),
                parts,
                queue: Default::default(),
                queued: 0,
                busy: false,
                broken: false,
                stopped_resetting: HashMap::new(),
            },
        );
        f
    }

    fn events(part: u16, through: u64) -> PeerFrame {
        PeerFrame::Events {
            part,
            through,
            live: true,
            events: Vec::new(),
        }
    }

    /// A frame of `n` events of partition 0, each with a value of
    /// `value_bytes` bytes (none if 0).
    fn frame_of(n: usize, value_bytes: usize) -> PeerFrame {
        let event = crate::cluster::wire::WireEvent {
            path: "a".into(),
            time: 1,
            node: "p".into(),
            value: (value_bytes > 0).then(|| bytes::Bytes::from(vec![0u8; value_bytes])),
            content_type: None,
            expires_at: None,
            author: None,
        };
        PeerFrame::Events {
            part: 0,
            through: 20,
            live: true,
            events: vec![(11, event); n],
        }
    }

    fn seq(f: &Following, part: u16) -> Option<u64> {
        f.peers["p"].parts[&part].seq
    }

    #[test]
    fn cursors_move_only_when_merged_and_a_reset_waits_for_the_trees() {
        let mut f = following();
        assert_eq!(f.enqueue("p", 1, events(0, 12), u64::MAX), Enqueued::Queued);
        assert_eq!(
            f.enqueue("p", 2, events(0, 99), u64::MAX),
            Enqueued::NotFollowed,
            "another link's frame"
        );
        let batch = f.take_batch("p").unwrap();
        assert!(f.take_batch("p").is_none(), "one batch at a time");
        assert_eq!(seq(&f, 0), Some(10), "not merged yet");
        f.merged("p", 1, &batch.steps);
        assert_eq!(seq(&f, 0), Some(12));
        assert!(f.caught_up().contains(&0));
        // A reset: the log after its head comes (and turns live), but the
        // cursor waits until the trees are compared.
        f.enqueue("p", 1, PeerFrame::Reset { part: 1, head: 50 }, u64::MAX);
        f.enqueue("p", 1, events(1, 60), u64::MAX);
        let batch = f.take_batch("p").unwrap();
        assert_eq!(batch.steps.len(), 2);
        assert!(!f.merged("p", 1, &batch.steps), "not caught up");
        assert_eq!(seq(&f, 1), Some(10));
        assert!(!f.caught_up().contains(&1));
        assert_eq!(f.peers_to_compare(), vec!["p".to_string()]);
        let (link, parts) = f.take_to_compare("p").unwrap();
        assert_eq!(link, 1);
        assert_eq!(
            parts.iter().map(|c| (c.part, c.head)).collect::<Vec<_>>(),
            vec![(1, 50)]
        );
        assert!(f.take_to_compare("p").is_none(), "being compared");
        assert!(f.peers_to_compare().is_empty());
        // A session that failed leaves it to be compared again.
        assert!(!f.compared("p", 1, &parts, false));
        assert_eq!(seq(&f, 1), Some(10));
        let (_, parts) = f.take_to_compare("p").unwrap();
        // One that ended well moves the cursor to where the stream got.
        assert!(f.compared("p", 1, &parts, true), "turned live");
        assert_eq!(seq(&f, 1), Some(60));
        assert!(f.caught_up().contains(&1));
        // A session that compared before a later reset counts for nothing.
        f.enqueue("p", 1, PeerFrame::Reset { part: 0, head: 70 }, u64::MAX);
        let batch = f.take_batch("p").unwrap();
        f.merged("p", 1, &batch.steps);
        let (_, first) = f.take_to_compare("p").unwrap();
        f.enqueue("p", 1, PeerFrame::Reset { part: 0, head: 80 }, u64::MAX);
        let batch = f.take_batch("p").unwrap();
        f.merged("p", 1, &batch.steps);
        f.compared("p", 1, &first, true);
        assert_eq!(seq(&f, 0), Some(12));
        let (_, second) = f.take_to_compare("p").unwrap();
        assert_eq!(second[0].head, 80);
        f.compared("p", 1, &second, true);
        assert_eq!(seq(&f, 0), Some(80));
    }

    #[test]
    fn a_failed_batch_stops_the_link_and_steps_of_an_old_following_move_nothing() {
        let mut f = following();
        f.enqueue("p", 1, events(0, 20), u64::MAX);
        let batch = f.take_batch("p").unwrap();
        assert_eq!(batch.frames.len(), 1);
        f.failed("p", 1);
        // Frames still arriving on the failing link are not taken, so no
        // cursor moves past what failed.
        assert_eq!(
            f.enqueue("p", 1, events(0, 30), u64::MAX),
            Enqueued::NotFollowed
        );
        assert!(f.take_batch("p").is_none());
        assert_eq!(seq(&f, 0), Some(10));

        let mut f = following();
        f.enqueue("p", 1, PeerFrame::Reset { part: 0, head: 99 }, u64::MAX);
        let stale = f.take_batch("p").unwrap();
        // Partition 0 is stopped and followed again meanwhile.
        f.generations += 1;
        let generation = f.generations;
        f.peers.get_mut("p").unwrap().parts.insert(
            0,
            Cursor {
                generation,
                seq: Some(10),
                ..Cursor::default()
            },
        );
        f.merged("p", 1, &stale.steps);
        f.enqueue("p", 1, events(0, 15), u64::MAX);
        let batch = f.take_batch("p").unwrap();
        f.merged("p", 1, &batch.steps);
        assert_eq!(seq(&f, 0), Some(15), "the old stream's reset is ignored");
    }

    #[test]
    fn what_waits_to_merge_is_weighed_and_bounded() {
        let mut f = following();
        let frame = |n: usize| frame_of(n, 1000);
        let one = frame(1).merge_weight() as u64;
        assert!(one > 1000);
        assert_eq!(f.enqueue("p", 1, frame(1), 3 * one), Enqueued::Queued);
        assert_eq!(f.enqueue("p", 1, frame(1), 3 * one), Enqueued::Queued);
        assert_eq!(f.queued(), 2 * one);
        // A batch takes both: what waits is what it weighs less.
        let batch = f.take_batch("p").unwrap();
        assert_eq!(batch.weight, 2 * one);
        assert_eq!(f.queued(), 0);
        // A frame alone is taken whatever it weighs; past the bound with
        // more waiting: said, with what waits.
        let big = frame(4).merge_weight() as u64;
        assert_eq!(f.enqueue("p", 1, frame(4), 3 * one), Enqueued::Queued);
        assert_eq!(
            f.enqueue("p", 1, frame(1), 3 * one),
            Enqueued::Overloaded(big + one)
        );
        f.failed("p", 1);
        assert_eq!(f.queued(), 0, "a failed link holds nothing");
    }

    #[test]
    fn a_batch_holds_a_bounded_number_of_events() {
        let mut f = following();
        let big = |n: usize| frame_of(n, 0);
        f.enqueue("p", 1, big(3000), u64::MAX);
        f.enqueue("p", 1, big(3000), u64::MAX);
        assert_eq!(f.take_batch("p").unwrap().frames.len(), 1);
        f.merged("p", 1, &[]);
        assert_eq!(f.take_batch("p").unwrap().frames.len(), 1);
    }

    /// Saved cursors in memory, whose reads and writes can fail.
    #[derive(Default)]
    struct Saved {
        map: std::cell::RefCell<HashMap<String, Vec<u8>>>,
        /// Fails reads of this key.
        fail_read: std::cell::RefCell<Option<String>>,
        fail_writes: std::cell::Cell<bool>,
    }

    impl Cursors for Saved {
        fn read(&self, key: &str) -> Result<Option<Vec<u8>>, NodeError> {
            if self.fail_read.borrow().as_deref() == Some(key) {
                return Err(NodeError::Store(crate::store::StoreError::Failed(
                    "injected".into(),
                )));
            }
            Ok(self.map.borrow().get(key).cloned())
        }
        fn write(&self, key: &str, value: &[u8]) -> Result<(), NodeError> {
            if self.fail_writes.get() {
                return Err(NodeError::Store(crate::store::StoreError::Failed(
                    "injected".into(),
                )));
            }
            self.map.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
    }

    #[test]
    fn a_cursor_that_cannot_be_read_or_saved_never_leaves_a_partition_followed_in_name_only() {
        let saved = Saved::default();
        saved
            .map
            .borrow_mut()
            .insert(cursor_key("p", 1), b"i:7".to_vec());
        let mut f = Following::default();
        let want: BTreeSet<u16> = [0, 1].into();
        // Partition 1's cursor cannot be read: 0 starts, 1 does not count
        // as followed, and the next call starts it.
        *saved.fail_read.borrow_mut() = Some(cursor_key("p", 1));
        let changes = f.diff(&saved, "p", 1, "i", &want);
        assert_eq!(changes.start, vec![(0, None)]);
        *saved.fail_read.borrow_mut() = None;
        let changes = f.diff(&saved, "p", 1, "i", &want);
        assert_eq!(changes.start, vec![(1, Some(7))]);
        assert!(f.diff(&saved, "p", 1, "i", &want).start.is_empty());
        // Saves fail: the partitions stop all the same (the peer is told).
        saved.fail_writes.set(true);
        let mut changes = f.diff(&saved, "p", 1, "i", &BTreeSet::new());
        changes.stop.sort_unstable();
        assert_eq!(changes.stop, vec![0, 1]);
        // A new link of the peer: the old one's cursors could not be saved,
        // and every partition starts again on the new link.
        saved.fail_writes.set(false);
        let changes = f.diff(&saved, "p", 1, "i", &want);
        assert_eq!(changes.start.len(), 2);
        saved.fail_writes.set(true);
        let changes = f.diff(&saved, "p", 2, "i", &want);
        assert_eq!(changes.start.len(), 2);
        assert_eq!(f.peers["p"].link, 2);
    }

    #[test]
    fn frames_of_a_stream_stopped_move_nothing_when_its_partition_is_followed_again() {
        let saved = Saved::default();
        let mut f = Following::default();
        let want: BTreeSet<u16> = [0].into();
        assert_eq!(f.diff(&saved, "p", 1, "i", &want).start, vec![(0, None)]);
        // Reset at 50, the stream live through 70; more of it waits.
        f.enqueue("p", 1, PeerFrame::Reset { part: 0, head: 50 }, u64::MAX);
        f.enqueue("p", 1, events(0, 70), u64::MAX);
        let batch = f.take_batch("p").unwrap();
        f.merged("p", 1, &batch.steps);
        f.enqueue("p", 1, events(0, 80), u64::MAX);
        assert!(!f.caught_up().contains(&0), "not compared yet");
        // Placement flaps: 0 is stopped, then followed again on this link.
        assert_eq!(f.diff(&saved, "p", 1, "i", &BTreeSet::new()).stop, vec![0]);
        assert_eq!(f.diff(&saved, "p", 1, "i", &want).start, vec![(0, None)]);
        // The old stream's frame is merged: the cursor stays reset, waiting
        // for the trees (what came before 50 is still to be pulled).
        let batch = f.take_batch("p").unwrap();
        f.merged("p", 1, &batch.steps);
        assert_eq!(seq(&f, 0), None);
        assert!(!f.caught_up().contains(&0));
        let (_, parts) = f.take_to_compare("p").unwrap();
        assert_eq!(parts[0].head, 50);
        f.compared("p", 1, &parts, true);
        assert_eq!(seq(&f, 0), Some(80));
        // A partition followed from nothing, not reset before: frames of an
        // older stream move nothing until its reset.
        let mut g = Following::default();
        g.diff(&saved, "q", 1, "i", &want);
        g.enqueue("q", 1, events(0, 90), u64::MAX);
        let batch = g.take_batch("q").unwrap();
        g.merged("q", 1, &batch.steps);
        assert_eq!(g.peers["q"].parts[&0].seq, None);
        assert!(!g.caught_up().contains(&0));
    }
}
