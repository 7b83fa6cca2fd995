//! The frames of a peer link: one typed enum, MessagePack on binary
//! WebSocket frames (API.md: `GET /peer`).
//!
//! The protocol version is in the first frame each side sends ([`Hello`]);
//! a peer of another version is refused with a reason, never misread. A
//! frame that does not decode, or is over [`MAX_FRAME_BYTES`], closes the
//! link (see `peer`).

use serde::{Deserialize, Serialize};

use super::differ::question::{DiffQuestion, DiffReply};
use super::wire::{WireError, WireEvent, WireHistory, WirePage, WireReport, WireWrite};

/// The version of this protocol; both ends of a link must speak the same.
/// (2: `Watch` names the partitions it wants, and `WatchReady` marks the
/// end of a watch's snapshot; `DiffAsk`, `DiffAnswer` and `DiffEvents`
/// carry anti-entropy. No release spoke 2 without them. 3: a `Read` may
/// ask for the past. 4: `List` and `History` read a prefix's paths and a
/// path's history at an owner; `Import` hands an owner events to merge.
/// 5: a `Reset` is followed by the log after its head, no snapshot: the
/// follower compares merkle trees for what came before, and `Roots` asks
/// for trees folded through that head; `Hello` names a window, and a node
/// reports what it merged, `Merged`, so that what is in flight to it stays
/// within it. 6: `Bundle` carries several replication frames in one, as a
/// commit of many partitions makes them. 7: an `Ack` names each event's
/// digest too.)
pub const PROTOCOL_VERSION: u32 = 7;

/// The largest frame a link accepts (a batch of events with big values fits).
pub const MAX_FRAME_BYTES: usize = 32 << 20;

/// The largest value a node of a cluster takes (see `Node::max_value_bytes`;
/// the HTTP write limit's default). A frame that carries values holds up to
/// about 8 MiB of them (an import's events; streams, repairs and answers
/// hold less) and then one more event, so with values of at most half a
/// frame every frame stays under [`MAX_FRAME_BYTES`], and every value can be
/// streamed, relayed and repaired. A bigger one would close every link that
/// tried to carry it, again on every reconnect.
pub const MAX_VALUE_BYTES: usize = MAX_FRAME_BYTES / 2;

/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;

/// What a node says of itself when a link opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The cluster it belongs to (`--cluster-id`).
    pub cluster: String,
    /// Its node id.
    pub node: String,
    /// Where other nodes reach it (`host:port`).
    pub address: String,
    /// Its partition count.
    pub partitions: u32,
    /// Its shard depth.
    pub shard_depth: u32,
    /// Its membership bump (see `membership`).
    pub bump: u16,
    /// The id of its store's change log: a follower's cursor names it, and
    /// one of another incarnation is never resumed (see `replicator`).
    pub incarnation: String,
    /// The most it takes in flight unmerged (bytes, see
    /// [`PeerFrame::merge_weight`]): the other side keeps what it sends of
    /// replication, watches and anti-entropy within it, counting what the
    /// sender reported with `Merged`.
    pub window: u64,
    /// A fresh random challenge: the other side proves it knows the cluster
    /// secret by a MAC over it (see `handshake`).
    pub nonce: [u8; NONCE_BYTES],
}

/// One frame of a peer link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// The first frame each side sends.
    Hello(Hello),
    /// The second: the MAC of the other side's challenge under the cluster
    /// secret.
    Proof {
        /// BLAKE3 keyed hash (see `handshake::proof`).
        mac: [u8; 32],
    },
    /// The sender refuses the link, and says why; it closes the link next.
    Refused {
        /// Why, for the other side's log.
        reason: String,
    },
    /// Sent when a link is otherwise quiet, so each side knows the other
    /// is alive.
    Heartbeat {
        /// The sender's wall clock, µs.
        sent_at: u64,
    },
    /// Membership: a SWIM message (see `membership`).
    Gossip {
        /// foca's bytes.
        data: Vec<u8>,
    },
    /// Replication: stream these partitions' changes to the sender, each
    /// from its cursor (`None`: from where the receiver's merkle trees
    /// reach, see `Reset`).
    Follow {
        /// The partitions, and the seq in the receiver's log after which to
        /// start.
        parts: Vec<(u16, Option<u64>)>,
    },
    /// Replication: stop streaming these partitions to the sender.
    Unfollow {
        /// The partitions.
        parts: Vec<u16>,
    },
    /// Replication: the cursor asked for cannot be honoured (or none was
    /// given); the partition's log after `head` follows, and the follower
    /// gets what came before by comparing merkle trees with the sender (a
    /// diff session whose `Roots` ask for trees folded through `head`), so
    /// it costs the differences, not the data.
    Reset {
        /// The partition.
        part: u16,
        /// Where the log resumes.
        head: u64,
    },
    /// Replication: entries of a partition's change log, in seq order.
    Events {
        /// The partition.
        part: u16,
        /// The stream of the partition is complete up to this seq.
        through: u64,
        /// Live changes (not read back from the log): acknowledged always.
        live: bool,
        /// The entries (seq, event).
        events: Vec<(u64, WireEvent)>,
    },
    /// The sender merged frames of the receiver's (replication, watches,
    /// anti-entropy) weighing `bytes` (see [`PeerFrame::merge_weight`]):
    /// the receiver may have that much more in flight to it (a node paces
    /// what others send it by what it merges, not by what it reads off the
    /// link).
    Merged {
        /// The weight merged.
        bytes: u64,
    },
    /// Replication: the sender holds these events of the receiver's (path,
    /// version time, digest; the version's node is the receiver) durably.
    Ack {
        /// The events.
        events: Vec<super::wire::AckedEvent>,
    },
    /// Interest: stream the latest values under `prefix` in partitions
    /// `parts` to the sender (a snapshot, `WatchReady`, then every change),
    /// which keeps a copy for its clients. A new `Watch` of the same prefix
    /// replaces the last (a fresh snapshot of the new partitions).
    Watch {
        /// The prefix.
        prefix: String,
        /// The partitions wanted from this owner (the watcher asks each
        /// partition of one owner only).
        parts: Vec<u16>,
    },
    /// Interest: stop streaming `prefix` to the sender.
    Unwatch {
        /// The prefix.
        prefix: String,
    },
    /// Interest: values under a watched prefix.
    Watched {
        /// The prefix watched.
        prefix: String,
        /// The events.
        events: Vec<WireEvent>,
    },
    /// Interest: the snapshot of `prefix` is out, and the sender is caught
    /// up on the partitions watched: what came before is a complete copy,
    /// what follows is live.
    WatchReady {
        /// The prefix.
        prefix: String,
        /// The partitions of the `Watch` this answers.
        parts: Vec<u16>,
    },
    /// Interest: the stream of `prefix` ended (the watcher may ask again).
    WatchEnded {
        /// The prefix.
        prefix: String,
    },
    /// Anti-entropy: a question of the sender's diff session `session`
    /// about partition `part` (see `differ`).
    DiffAsk {
        /// Names the session.
        session: u64,
        /// The partition.
        part: u16,
        /// The question.
        question: DiffQuestion,
    },
    /// Anti-entropy: the answer to the receiver's last question of
    /// session `session`.
    DiffAnswer {
        /// Names the session.
        session: u64,
        /// The answer.
        answer: Result<DiffReply, WireError>,
    },
    /// Anti-entropy: events the sender holds and the receiver lacks,
    /// found by session `session`: merged by the LWW rule.
    DiffEvents {
        /// Names the session.
        session: u64,
        /// The events.
        events: Vec<WireEvent>,
    },
    /// A client's read of a path the sender neither owns nor watches.
    Read {
        /// Names the answer.
        id: u64,
        /// The path.
        path: String,
        /// Read the value the path had then instead of now.
        at: Option<crate::model::AsOf>,
    },
    /// The answer to a `Read`: the live value (at the time asked), if any.
    ReadAnswer {
        /// The `Read`'s id.
        id: u64,
        /// The value's event, or why there is none.
        answer: Result<Option<WireEvent>, WireError>,
    },
    /// A client's listing of the paths of `prefix` in partitions `parts`
    /// (sorted), which the receiver owns.
    List {
        /// Names the answer.
        id: u64,
        /// The prefix.
        prefix: String,
        /// The partitions it answers for.
        parts: Vec<u16>,
        /// Start strictly after this path.
        after: Option<String>,
        /// Most entries.
        limit: u32,
        /// List the paths as they stood then (µs) instead of now.
        at: Option<u64>,
        /// Every path with a latest event, deleted ones too (what a
        /// recursive rollback goes over), instead of the live ones.
        deleted: bool,
    },
    /// The answer to a `List`.
    ListAnswer {
        /// The `List`'s id.
        id: u64,
        /// The page, or why there is none.
        answer: Result<WirePage, WireError>,
    },
    /// A client's read of a path's history, which the receiver owns.
    History {
        /// Names the answer.
        id: u64,
        /// The path.
        path: String,
        /// Earliest time (µs), inclusive.
        from: u64,
        /// Latest time (µs), inclusive.
        to: u64,
        /// Most events.
        limit: u32,
        /// Only the events ordered after this one (its time, node and
        /// content digest): the last the asker has.
        after: Option<(u64, String, Vec<u8>)>,
    },
    /// The answer to a `History`.
    HistoryAnswer {
        /// The `History`'s id.
        id: u64,
        /// The events, or why there are none.
        answer: Result<WireHistory, WireError>,
    },
    /// Events of a client's import for the receiver, an owner of each
    /// one's partition, to merge by the LWW rule.
    Import {
        /// Names the answer.
        id: u64,
        /// The events.
        events: Vec<WireEvent>,
    },
    /// The answer to an `Import`: what the merges did.
    Imported {
        /// The `Import`'s id.
        id: u64,
        /// The counts, or why the events were not merged.
        answer: Result<crate::node::ImportReport, WireError>,
    },
    /// A client's write for the receiver to coordinate.
    Forward {
        /// Names the answer.
        id: u64,
        /// The write.
        write: WireWrite,
    },
    /// The answer to a `Forward`.
    Forwarded {
        /// The `Forward`'s id.
        id: u64,
        /// Its outcome.
        answer: Result<WireReport, WireError>,
    },
    /// Replication frames, taken in order as if each had come alone: one
    /// commit touches many partitions, and one frame for all of them costs
    /// the link, the sender and the receiver far less than one each.
    Bundle {
        /// The frames.
        frames: Vec<Bundled>,
    },
}

/// A frame a [`PeerFrame::Bundle`] carries: the replication frames of the
/// same names and fields (a type of its own, so a bundle never holds a
/// bundle and decoding never recurses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bundled {
    /// [`PeerFrame::Reset`].
    Reset {
        /// The partition.
        part: u16,
        /// Where the log resumes.
        head: u64,
    },
    /// [`PeerFrame::Events`].
    Events {
        /// The partition.
        part: u16,
        /// The stream of the partition is complete up to this seq.
        through: u64,
        /// Live changes.
        live: bool,
        /// The entries (seq, event).
        events: Vec<(u64, WireEvent)>,
    },
    /// [`PeerFrame::Ack`].
    Ack {
        /// The events.
        events: Vec<super::wire::AckedEvent>,
    },
    /// [`PeerFrame::Merged`].
    Merged {
        /// The weight merged.
        bytes: u64,
    },
}

impl From<Bundled> for PeerFrame {
    fn from(b: Bundled) -> PeerFrame {
        match b {
            Bundled::Reset { part, head } => PeerFrame::Reset { part, head },
            Bundled::Events {
                part,
                through,
                live,
                events,
            } => PeerFrame::Events {
                part,
                through,
                live,
                events,
            },
            Bundled::Ack { events } => PeerFrame::Ack { events },
            Bundled::Merged { bytes } => PeerFrame::Merged { bytes },
        }
    }
}

impl Bundled {
    /// [`PeerFrame::merge_weight`] of the frame.
    pub fn merge_weight(&self) -> usize {
        match self {
            Bundled::Events { events, .. } => stream_weight(events),
            Bundled::Reset { .. } => FRAME_OVERHEAD,
            Bundled::Ack { .. } | Bundled::Merged { .. } => 0,
        }
    }
}

/// What a frame, and each event in it, weighs beyond paths and values,
/// about: on the wire, and in what a sender counts as unmerged (see
/// [`PeerFrame::merge_weight`]).
pub const FRAME_OVERHEAD: usize = 64;

/// What an event of `path` and `value` weighs on the wire, about.
pub fn wire_weight(path: &str, value: Option<&[u8]>) -> usize {
    path.len() + value.map_or(0, <[u8]>::len) + FRAME_OVERHEAD
}

/// The merge weight of an event.
fn event_weight(event: &WireEvent) -> usize {
    wire_weight(&event.path, event.value.as_deref())
}

/// The merge weight of a frame of stream entries.
fn stream_weight(events: &[(u64, WireEvent)]) -> usize {
    events.iter().map(|(_, e)| event_weight(e)).sum::<usize>() + FRAME_OVERHEAD
}

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// Not a frame of this protocol.
    #[error("a frame that does not decode: {0}")]
    Garbage(String),
}

impl PeerFrame {
    /// `frames` as one frame: none, the frame itself, or a
    /// [`PeerFrame::Bundle`] of them.
    pub fn bundled(mut frames: Vec<Bundled>) -> Option<PeerFrame> {
        match frames.len() {
            0 => None,
            1 => frames.pop().map(PeerFrame::from),
            _ => Some(PeerFrame::Bundle { frames }),
        }
    }

    /// The frame as MessagePack.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        rmp_serde::to_vec(self).expect("a peer frame encodes")
    }

    /// A frame from its MessagePack bytes.
    pub fn decode(raw: &[u8]) -> Result<PeerFrame, FrameError> {
        if raw.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(raw.len()));
        }
        rmp_serde::from_slice(raw).map_err(|e| FrameError::Garbage(e.to_string()))
    }

    /// What the frame weighs while its receiver holds it unmerged (the
    /// events' paths and values, and a fixed cost per event and frame), for
    /// the frames a receiver merges and reports with `Merged`: both sides
    /// count it alike; 0 for the others.
    pub fn merge_weight(&self) -> usize {
        match self {
            PeerFrame::Events { events, .. } => stream_weight(events),
            PeerFrame::Watched { events, .. } | PeerFrame::DiffEvents { events, .. } => {
                events.iter().map(event_weight).sum::<usize>() + FRAME_OVERHEAD
            }
            PeerFrame::Reset { .. } => FRAME_OVERHEAD,
            PeerFrame::Bundle { frames } => frames.iter().map(Bundled::merge_weight).sum(),
            _ => 0,
        }
    }

    /// What kind of frame it is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerFrame::Hello(_) => "hello",
            PeerFrame::Proof { .. } => "proof",
            PeerFrame::Refused { .. } => "refused",
            PeerFrame::Heartbeat { .. } => "heartbeat",
            PeerFrame::Gossip { .. } => "gossip",
            PeerFrame::Follow { .. } => "follow",
            PeerFrame::Unfollow { .. } => "unfollow",
            PeerFrame::Reset { .. } => "reset",
            PeerFrame::Events { .. } => "events",
            PeerFrame::Merged { .. } => "merged",
            PeerFrame::Ack { .. } => "ack",
            PeerFrame::Watch { .. } => "watch",
            PeerFrame::Unwatch { .. } => "unwatch",
            PeerFrame::Watched { .. } => "watched",
            PeerFrame::WatchReady { .. } => "watch-ready",
            PeerFrame::DiffAsk { .. } => "diff-ask",
            PeerFrame::DiffAnswer { .. } => "diff-answer",
            PeerFrame::DiffEvents { .. } => "diff-events",
            PeerFrame::WatchEnded { .. } => "watch-ended",
            PeerFrame::Read { .. } => "read",
            PeerFrame::ReadAnswer { .. } => "read-answer",
            PeerFrame::List { .. } => "list",
            PeerFrame::ListAnswer { .. } => "list-answer",
            PeerFrame::History { .. } => "history",
            PeerFrame::HistoryAnswer { .. } => "history-answer",
            PeerFrame::Import { .. } => "import",
            PeerFrame::Imported { .. } => "imported",
            PeerFrame::Forward { .. } => "forward",
            PeerFrame::Forwarded { .. } => "forwarded",
            PeerFrame::Bundle { .. } => "bundle",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            cluster: "c".into(),
            node: "n1".into(),
            address: "127.0.0.1:1".into(),
            partitions: 64,
            shard_depth: 2,
            bump: 3,
            incarnation: "i1".into(),
            window: 1 << 20,
            nonce: [7; NONCE_BYTES],
        }
    }

    #[test]
    fn frames_round_trip() {
        for frame in [
            PeerFrame::Hello(hello()),
            PeerFrame::Proof { mac: [1; 32] },
            PeerFrame::Refused {
                reason: "no".into(),
            },
            PeerFrame::Heartbeat { sent_at: 42 },
            PeerFrame::Gossip { data: vec![1, 2] },
            PeerFrame::Follow {
                parts: vec![(1, None), (2, Some(9))],
            },
            PeerFrame::Merged { bytes: 4096 },
            PeerFrame::Ack {
                events: vec![("a/b".into(), 5, [7; 16])],
            },
            PeerFrame::Bundle {
                frames: vec![
                    Bundled::Reset { part: 2, head: 7 },
                    Bundled::Events {
                        part: 1,
                        through: 9,
                        live: true,
                        events: Vec::new(),
                    },
                    Bundled::Ack {
                        events: vec![("a/b".into(), 5, [7; 16])],
                    },
                    Bundled::Merged { bytes: 64 },
                ],
            },
            PeerFrame::Watch {
                prefix: "rooms".into(),
                parts: vec![3, 9],
            },
            PeerFrame::WatchReady {
                prefix: "rooms".into(),
                parts: vec![3, 9],
            },
            PeerFrame::DiffAsk {
                session: 4,
                part: 2,
                question: DiffQuestion::RangeSums {
                    prefix: "a".into(),
                    bounds: vec![None, Some("m".into()), None],
                },
            },
            PeerFrame::DiffAnswer {
                session: 4,
                answer: Ok(DiffReply::Node(
                    super::super::differ::question::WireFp {
                        hash: [9; 16],
                        count: 3,
                    },
                    super::super::differ::question::WireFp {
                        hash: [0; 16],
                        count: 0,
                    },
                )),
            },
            PeerFrame::Forwarded {
                id: 3,
                answer: Err(super::super::wire::WireError::Invalid("no".into())),
            },
            PeerFrame::List {
                id: 5,
                prefix: "rooms".into(),
                parts: vec![1, 7],
                after: Some("rooms/a".into()),
                limit: 10,
                at: Some(99),
                deleted: false,
            },
            PeerFrame::ListAnswer {
                id: 5,
                answer: Ok(WirePage {
                    entries: vec![super::super::wire::WireEntry {
                        path: "rooms/b".into(),
                        time: 3,
                        node: "n1".into(),
                        size: 2,
                        content_type: None,
                    }],
                    next: None,
                }),
            },
            PeerFrame::History {
                id: 6,
                path: "rooms/b".into(),
                from: 0,
                to: u64::MAX,
                limit: 8,
                after: Some((5, "n1".into(), vec![7; 16])),
            },
            PeerFrame::Imported {
                id: 7,
                answer: Ok(crate::node::ImportReport {
                    new: 1,
                    existing: 2,
                    too_late: 3,
                }),
            },
            PeerFrame::HistoryAnswer {
                id: 6,
                answer: Ok(WireHistory {
                    events: Vec::new(),
                    cut: true,
                }),
            },
        ] {
            assert_eq!(PeerFrame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn garbage_and_cut_frames_are_errors_not_panics() {
        let raw = PeerFrame::Hello(hello()).encode();
        for cut in 0..raw.len() {
            assert!(PeerFrame::decode(&raw[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            PeerFrame::decode(b"\xff\x00garbage"),
            Err(FrameError::Garbage(_))
        ));
        // A bundle of one frame is that frame; a bundle holds replication
        // frames only (a frame of another kind in one does not decode).
        assert_eq!(
            PeerFrame::bundled(vec![Bundled::Merged { bytes: 1 }]),
            Some(PeerFrame::Merged { bytes: 1 })
        );
        assert_eq!(PeerFrame::bundled(Vec::new()), None);
        let odd = rmp_serde::to_vec(&PeerFrame::Gossip { data: vec![1] }).unwrap();
        let mut raw = rmp_serde::to_vec(&PeerFrame::Bundle {
            frames: vec![Bundled::Merged { bytes: 1 }],
        })
        .unwrap();
        let one = rmp_serde::to_vec(&Bundled::Merged { bytes: 1 }).unwrap();
        let at = raw.len() - one.len();
        raw.truncate(at);
        // (The splice itself is sound: the same frame put back decodes.)
        let mut control = raw.clone();
        control.extend_from_slice(&one);
        assert!(PeerFrame::decode(&control).is_ok());
        raw.extend_from_slice(&odd);
        assert!(matches!(
            PeerFrame::decode(&raw),
            Err(FrameError::Garbage(_))
        ));
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        assert_eq!(
            PeerFrame::decode(&big),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
    }
}
