//! What a client asks of a partition: a [`Write`] (a value or a delete, with
//! an optional precondition and explicit time), and the [`WriteReport`]
//! that answers it.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{Event, Path, Version};

/// The two ways into a partition.
#[derive(Clone, Debug)]
pub enum Input {
    /// A client's write: *stamped* here, with a version from this node's
    /// clock (or the client's explicit time) and this node's id, its
    /// precondition decided against the current value.
    Write(Write),
    /// A foreign event (from a peer, an import): it has its version
    /// already, and is *merged* by the LWW rule — a newer one becomes the
    /// value, an older one joins history, one already held is `existing`.
    Merge(Event),
}

impl Input {
    /// The path it writes (`None`: a write without one, refused).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::Write(w) => w.path.as_ref(),
            Input::Merge(e) => Some(&e.path),
        }
    }
}

/// A condition a write must meet against the path's current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Always write.
    #[default]
    None,
    /// Write only if this is the current live version (`If-Match`).
    IfMatch(Version),
    /// Write only if the path has no live value (`If-None-Match: *`).
    IfAbsent,
    /// Write only if the path has a live value (`If-Match: *`).
    IfPresent,
}

/// A write request: a value (or a delete) for one path.
#[derive(Clone, Debug, Default)]
pub struct Write {
    /// The path (not the root).
    pub path: Option<Path>,
    /// The value; `None` deletes.
    pub value: Option<Bytes>,
    /// Media type to store with the value.
    pub content_type: Option<Arc<str>>,
    /// Explicit event time (µs); the node's clock is used when `None`.
    pub time: Option<u64>,
    /// Seconds the value lives.
    pub ttl_secs: Option<u64>,
    /// Who writes (token subject).
    pub author: Option<Arc<str>>,
    /// Condition on the current value.
    pub precondition: Precondition,
    /// Acknowledgements from other owners to wait for once committed here
    /// (`None`: answer after the local commit).
    pub wait: Option<crate::engine::acks::WaitFor>,
    /// Owners that must hold it before it is answered (in a cluster).
    pub w: crate::cluster::wire::WriteQuorum,
    /// Forwarded by another node: coordinate it here, never forward again.
    pub forwarded: bool,
}

impl Write {
    /// A write of `value` at `path`.
    pub fn set(path: Path, value: impl Into<Bytes>) -> Write {
        Write {
            path: Some(path),
            value: Some(value.into()),
            ..Write::default()
        }
    }

    /// A delete of `path`.
    pub fn delete(path: Path) -> Write {
        Write {
            path: Some(path),
            ..Write::default()
        }
    }
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    /// It became the value.
    New,
    /// That exact event was already applied.
    Existing,
    /// A newer value stands; it was kept in history.
    TooLate,
}

/// What happened to a write, and how it propagated.
#[derive(Clone, Debug)]
pub struct WriteReport {
    /// The outcome.
    pub status: WriteStatus,
    /// True when the path had no live value before.
    pub created: bool,
    /// The path.
    pub path: Path,
    /// The write's version.
    pub version: Version,
    /// Its event's digest, when this node decided it (a report a peer sent
    /// does not carry it): with the version, what owners acknowledge.
    pub digest: Option<crate::model::Digest>,
    /// The version it replaced (for `New`).
    pub previous: Option<Version>,
    /// The version that stands (for `TooLate`).
    pub current: Option<Version>,
    /// Its seq in this node's change log (for `New` and `TooLate`: every
    /// event written has one; `None` for `Existing`).
    pub seq: Option<u64>,
    /// Local subscribers it was handed to.
    pub subscribers: usize,
    /// Other nodes it was sent to (owners and watchers).
    pub peers: usize,
    /// Owners that hold it durably: this node, and the others that acked
    /// (see [`WaitFor`](crate::engine::acks::WaitFor)).
    pub acked: usize,
    /// Owners in all.
    pub of: usize,
}
