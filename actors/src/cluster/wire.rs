//! What crosses a peer link besides the link's own frames: events, forwarded
//! writes and their answers, in forms that serialize plainly (MessagePack)
//! and are checked again when they arrive — a peer is trusted with the
//! secret, not with well-formed input.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::partition::{Precondition, Write, WriteReport, WriteStatus};
use crate::error::NodeError;
use crate::model::{Event, NodeId, Path, Version};
use crate::node::{ListEntry, ListPage};
use crate::store::StoreError;

/// An event on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Its path.
    pub path: String,
    /// Its version's time (µs).
    pub time: u64,
    /// Its version's node.
    pub node: String,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Its media type.
    pub content_type: Option<String>,
    /// Its expiry (µs).
    pub expires_at: Option<u64>,
    /// Who wrote it.
    pub author: Option<String>,
}

impl From<&Event> for WireEvent {
    fn from(e: &Event) -> WireEvent {
        WireEvent {
            path: e.path.as_str().to_string(),
            time: e.version.time,
            node: e.version.node.as_str().to_string(),
            value: e.value.clone(),
            content_type: e.content_type.as_deref().map(str::to_string),
            expires_at: e.expires_at,
            author: e.author.as_deref().map(str::to_string),
        }
    }
}

/// What [`merge_all`] did with a peer's events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Events that decoded and were handed to the partitions.
    pub tried: usize,
    /// Events that changed something here (not already held, not refused).
    pub changed: usize,
    /// Events that could not be merged for a reason other than their own
    /// (a storage error): not held here.
    pub failed: usize,
    /// The events merged that [`AckFor`] names.
    pub acks: Vec<AckedEvent>,
}

/// An event an owner acknowledges, as an `Ack` frame names it: its path,
/// the time of its version (the node is the one acknowledged) and its
/// digest (two writes with one explicit time differ by it).
pub type AckedEvent = (String, u64, crate::model::Digest);

/// Which merged events to acknowledge: those stamped by `node` after
/// `after` (µs), recent enough that a writer may wait for them.
pub struct AckFor<'a> {
    /// The node whose events are acknowledged (the sender).
    pub node: &'a str,
    /// The least time acknowledged.
    pub after: u64,
}

/// Merges `events` a peer sent into `node` by the LWW rule, all at once. An
/// event that does not decode or merge is left out and logged as one of
/// `whose` (for the log: "a watched event from 'b'", say).
pub async fn merge_all(node: &crate::Node, events: Vec<WireEvent>, whose: &str) -> Merged {
    merge_all_acking(node, events, whose, None).await
}

/// [`merge_all`], answering which events `ack` names were merged (held
/// here as durably as configured: an owner acknowledges them).
pub async fn merge_all_acking(
    node: &crate::Node,
    events: Vec<WireEvent>,
    whose: &str,
    ack: Option<AckFor<'_>>,
) -> Merged {
    let mut merges = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    for wire in events {
        match Event::try_from(wire) {
            Ok(event) => {
                let acked = ack.as_ref().is_some_and(|a| {
                    event.version.node.as_str() == a.node && event.version.time > a.after
                });
                keys.push(acked.then(|| {
                    (
                        event.path.as_str().to_string(),
                        event.version.time,
                        event.digest(),
                    )
                }));
                merges.push(node.merge(event));
            }
            Err(why) => log::warn!("{whose} left out: {why}"),
        }
    }
    let mut merged = Merged {
        tried: merges.len(),
        changed: 0,
        failed: 0,
        acks: Vec::new(),
    };
    let results = futures_util::future::join_all(merges).await;
    for (result, key) in results.into_iter().zip(keys) {
        match result {
            Ok(r) => {
                if r.status != WriteStatus::Existing {
                    merged.changed += 1;
                }
                merged.acks.extend(key);
            }
            Err(e @ (NodeError::BadField(_) | NodeError::BadPath(_) | NodeError::BadTime(_))) => {
                log::warn!("merging {whose}: refused: {e}")
            }
            Err(e) => {
                merged.failed += 1;
                log::warn!("merging {whose}: {e}");
            }
        }
    }
    merged
}

impl TryFrom<WireEvent> for Event {
    type Error = String;

    fn try_from(w: WireEvent) -> Result<Event, String> {
        Ok(Event {
            path: Path::parse_key(&w.path).map_err(|e| format!("event path: {e}"))?,
            version: Version::new(w.time, version_node(&w.node)?),
            value: w.value,
            content_type: w.content_type.map(Arc::from),
            expires_at: w.expires_at,
            author: w.author.map(Arc::from),
        })
    }
}

/// A path of a listing on the wire (a [`ListEntry`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Its path.
    pub path: String,
    /// Its version's time (µs).
    pub time: u64,
    /// Its version's node.
    pub node: String,
    /// Its value's size in bytes.
    pub size: u64,
    /// Its value's media type.
    pub content_type: Option<String>,
}

/// A page of a listing on the wire (a [`ListPage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePage {
    /// Its entries, in path order.
    pub entries: Vec<WireEntry>,
    /// Where the next page starts.
    pub next: Option<String>,
}

impl From<&ListPage> for WirePage {
    fn from(page: &ListPage) -> WirePage {
        WirePage {
            entries: page
                .entries
                .iter()
                .map(|e| WireEntry {
                    path: e.path.as_str().to_string(),
                    time: e.version.time,
                    node: e.version.node.as_str().to_string(),
                    size: e.size as u64,
                    content_type: e.content_type.clone(),
                })
                .collect(),
            next: page.next.clone(),
        }
    }
}

impl TryFrom<WirePage> for ListPage {
    type Error = String;

    fn try_from(w: WirePage) -> Result<ListPage, String> {
        let mut entries = Vec::with_capacity(w.entries.len());
        for e in w.entries {
            entries.push(ListEntry {
                path: Path::parse_key(&e.path).map_err(|why| format!("entry path: {why}"))?,
                version: Version::new(e.time, version_node(&e.node)?),
                size: usize::try_from(e.size).map_err(|_| "entry size".to_string())?,
                content_type: e.content_type,
            });
        }
        Ok(ListPage {
            entries,
            next: w.next,
        })
    }
}

/// A step of a path's history on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHistory {
    /// Its events, oldest first.
    pub events: Vec<WireEvent>,
    /// The step stopped at its byte bound before its limit: more may
    /// follow.
    pub cut: bool,
}

fn version_node(node: &str) -> Result<NodeId, String> {
    NodeId::new(node).map_err(|e| format!("version node: {e}"))
}

/// How many owners a write waits for (API.md: `?w=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteQuorum {
    /// The coordinating owner alone.
    One,
    /// A majority of the `replication` owners (the default).
    #[default]
    Quorum,
    /// All `replication` owners.
    All,
}

impl WriteQuorum {
    /// Owners that must hold a write, of `of` in all.
    pub fn needed(self, of: usize) -> usize {
        match self {
            WriteQuorum::One => 1,
            WriteQuorum::Quorum => of / 2 + 1,
            WriteQuorum::All => of,
        }
        .max(1)
    }
}

impl std::str::FromStr for WriteQuorum {
    type Err = String;

    fn from_str(s: &str) -> Result<WriteQuorum, String> {
        match s {
            "1" => Ok(WriteQuorum::One),
            "quorum" => Ok(WriteQuorum::Quorum),
            "all" => Ok(WriteQuorum::All),
            other => Err(format!("w must be 1, quorum or all, not '{other}'")),
        }
    }
}

/// A condition on the current value, on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WirePrecondition {
    /// `If-Match: "<version>"` (time, node).
    IfMatch(u64, String),
    /// `If-None-Match: *`.
    IfAbsent,
    /// `If-Match: *`.
    IfPresent,
}

/// A client's write forwarded to an owner, which coordinates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWrite {
    /// The path.
    pub path: String,
    /// The value; `None` deletes.
    pub value: Option<Bytes>,
    /// Its media type.
    pub content_type: Option<String>,
    /// An explicit event time (µs).
    pub time: Option<u64>,
    /// Seconds it lives.
    pub ttl_secs: Option<u64>,
    /// Who writes.
    pub author: Option<String>,
    /// Its condition.
    pub precondition: Option<WirePrecondition>,
    /// Owners that must hold it.
    pub w: WriteQuorum,
}

impl WireWrite {
    /// The wire form of `write` (which has a path).
    pub fn new(write: &Write) -> WireWrite {
        WireWrite {
            path: write
                .path
                .as_ref()
                .map_or_else(String::new, |p| p.as_str().to_string()),
            value: write.value.clone(),
            content_type: write.content_type.as_deref().map(str::to_string),
            time: write.time,
            ttl_secs: write.ttl_secs,
            author: write.author.as_deref().map(str::to_string),
            precondition: match &write.precondition {
                Precondition::None => None,
                Precondition::IfMatch(v) => Some(WirePrecondition::IfMatch(
                    v.time,
                    v.node.as_str().to_string(),
                )),
                Precondition::IfAbsent => Some(WirePrecondition::IfAbsent),
                Precondition::IfPresent => Some(WirePrecondition::IfPresent),
            },
            w: write.w,
        }
    }

    /// The write it carries, checked.
    pub fn into_write(self) -> Result<Write, String> {
        Ok(Write {
            path: Some(Path::parse_key(&self.path).map_err(|e| format!("write path: {e}"))?),
            value: self.value,
            content_type: self.content_type.map(Arc::from),
            time: self.time,
            ttl_secs: self.ttl_secs,
            author: self.author.map(Arc::from),
            precondition: match self.precondition {
                None => Precondition::None,
                Some(WirePrecondition::IfMatch(time, node)) => {
                    Precondition::IfMatch(Version::new(time, version_node(&node)?))
                }
                Some(WirePrecondition::IfAbsent) => Precondition::IfAbsent,
                Some(WirePrecondition::IfPresent) => Precondition::IfPresent,
            },
            w: self.w,
            wait: None,
            forwarded: true,
        })
    }
}

/// A write report on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReport {
    /// 0 new, 1 existing, 2 too late.
    pub status: u8,
    /// The path had no live value before.
    pub created: bool,
    /// The version written (time, node).
    pub version: (u64, String),
    /// The version replaced.
    pub previous: Option<(u64, String)>,
    /// The version that stands.
    pub current: Option<(u64, String)>,
    /// Its seq at the coordinator.
    pub seq: Option<u64>,
    /// Subscribers at the coordinator it reached.
    pub subscribers: usize,
    /// Nodes it was sent to.
    pub peers: usize,
    /// Owners that hold it.
    pub acked: usize,
    /// Owners in all.
    pub of: usize,
}

fn wire_version(v: &Version) -> (u64, String) {
    (v.time, v.node.as_str().to_string())
}

fn from_wire_version((time, node): (u64, String)) -> Result<Version, String> {
    Ok(Version::new(time, version_node(&node)?))
}

impl From<&WriteReport> for WireReport {
    fn from(r: &WriteReport) -> WireReport {
        WireReport {
            status: match r.status {
                WriteStatus::New => 0,
                WriteStatus::Existing => 1,
                WriteStatus::TooLate => 2,
            },
            created: r.created,
            version: wire_version(&r.version),
            previous: r.previous.as_ref().map(wire_version),
            current: r.current.as_ref().map(wire_version),
            seq: r.seq,
            subscribers: r.subscribers,
            peers: r.peers,
            acked: r.acked,
            of: r.of,
        }
    }
}

impl WireReport {
    /// The report of a write to `path`.
    pub fn into_report(self, path: Path) -> Result<WriteReport, String> {
        Ok(WriteReport {
            status: match self.status {
                0 => WriteStatus::New,
                1 => WriteStatus::Existing,
                2 => WriteStatus::TooLate,
                other => return Err(format!("write status {other}")),
            },
            created: self.created,
            path,
            version: from_wire_version(self.version)?,
            digest: None,
            previous: self.previous.map(from_wire_version).transpose()?,
            current: self.current.map(from_wire_version).transpose()?,
            seq: self.seq,
            subscribers: self.subscribers,
            peers: self.peers,
            acked: self.acked,
            of: self.of,
        })
    }
}

/// Why a forwarded write failed, on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// Its precondition did not hold (the version that stands).
    Precondition(Option<(u64, String)>),
    /// Too few owners acked.
    Unavailable {
        /// Owners that acked.
        acked: usize,
        /// Owners needed.
        needed: usize,
        /// Owners in all.
        of: usize,
    },
    /// Its explicit time is not valid there (a client error).
    BadTime(String),
    /// The write is not valid (a client error).
    Invalid(String),
    /// The owner is stopping.
    ShuttingDown,
    /// The node asked is an owner that has not caught up yet: ask another.
    NotReady,
    /// No owner could take it there (the reason).
    NoOwner(String),
    /// The history asked for was compacted (the path, the oldest time
    /// known).
    Compacted(String, u64),
    /// The owner failed it.
    Failed(String),
}

impl From<&NodeError> for WireError {
    fn from(e: &NodeError) -> WireError {
        match e {
            NodeError::PreconditionFailed { current } => {
                WireError::Precondition(current.as_ref().map(wire_version))
            }
            NodeError::Unavailable { acked, needed, of } => WireError::Unavailable {
                acked: *acked,
                needed: *needed,
                of: *of,
            },
            NodeError::BadTime(why) => WireError::BadTime(why.clone()),
            NodeError::BadPath(_)
            | NodeError::BadField(_)
            | NodeError::BadCursor
            | NodeError::Invalid(_) => WireError::Invalid(e.to_string()),
            NodeError::ShuttingDown => WireError::ShuttingDown,
            // (No owner here to take it: the asker answers 503.)
            NodeError::NoOwner(why) => WireError::NoOwner(why.clone()),
            NodeError::Compacted { path, oldest } => WireError::Compacted(path.clone(), *oldest),
            other => WireError::Failed(other.to_string()),
        }
    }
}

impl From<WireError> for NodeError {
    fn from(e: WireError) -> NodeError {
        match e {
            WireError::Precondition(current) => NodeError::PreconditionFailed {
                current: current.and_then(|v| from_wire_version(v).ok()),
            },
            WireError::Unavailable { acked, needed, of } => {
                NodeError::Unavailable { acked, needed, of }
            }
            WireError::BadTime(why) => NodeError::BadTime(why),
            WireError::Invalid(why) => NodeError::Invalid(why),
            WireError::ShuttingDown => NodeError::ShuttingDown,
            WireError::NotReady => NodeError::NoOwner("the path (its owner is catching up)".into()),
            WireError::NoOwner(why) => NodeError::NoOwner(why),
            WireError::Compacted(path, oldest) => NodeError::Compacted { path, oldest },
            WireError::Failed(why) => {
                NodeError::Store(StoreError::Failed(format!("at the owner: {why}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_writes_round_trip_and_bad_ones_are_refused() {
        let event = Event {
            path: Path::parse_key("rooms/1/a").unwrap(),
            version: Version::new(42, NodeId::new("n1").unwrap()),
            value: Some(Bytes::from_static(b"v")),
            content_type: Some(Arc::from("text/plain")),
            expires_at: Some(7),
            author: Some(Arc::from("me")),
        };
        let wire = WireEvent::from(&event);
        let bytes = rmp_serde::to_vec(&wire).unwrap();
        let back: WireEvent = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(Event::try_from(back).unwrap(), event);
        let bad = WireEvent {
            path: "a//b".into(),
            ..wire.clone()
        };
        assert!(Event::try_from(bad).is_err());
        let bad = WireEvent {
            node: String::new(),
            ..wire
        };
        assert!(Event::try_from(bad).is_err());

        let mut write = Write::set(Path::parse_key("a/b").unwrap(), "x");
        write.precondition = Precondition::IfMatch(Version::new(9, NodeId::new("n2").unwrap()));
        write.w = WriteQuorum::All;
        let back = WireWrite::new(&write).into_write().unwrap();
        assert_eq!(back.path, write.path);
        assert_eq!(back.precondition, write.precondition);
        assert_eq!(back.w, WriteQuorum::All);
        assert!(back.forwarded);
    }

    #[test]
    fn quorum_counts() {
        assert_eq!(WriteQuorum::Quorum.needed(3), 2);
        assert_eq!(WriteQuorum::Quorum.needed(2), 2);
        assert_eq!(WriteQuorum::Quorum.needed(1), 1);
        assert_eq!(WriteQuorum::All.needed(3), 3);
        assert_eq!(WriteQuorum::One.needed(3), 1);
        assert_eq!("quorum".parse(), Ok(WriteQuorum::Quorum));
        assert!("2".parse::<WriteQuorum>().is_err());
    }
}
