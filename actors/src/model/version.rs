//! Versions: `(time, node)` pairs from a hybrid logical clock.
//!
//! `time` is microseconds since the Unix epoch as seen by the [`Clock`], which
//! never goes backwards and jumps past every time it observes; `node` is the
//! origin node's id. Versions order by time, then node id.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest time a version may carry: 2^53 - 1, so JSON numbers stay exact.
pub const MAX_TIME_MICROS: u64 = (1 << 53) - 1;
/// Longest node id accepted.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Why a node id, version or time is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Node ids are 1–64 characters of `[A-Za-z0-9_-]`.
    #[error("node id must be 1-64 characters of [A-Za-z0-9_-]")]
    BadNodeId,
    /// Not of the form `<time>.<node>`.
    #[error("version must look like \"<time>.<node>\"")]
    BadVersion,
    /// Not a decimal number of microseconds, or above the limit.
    #[error("time must be a whole number of microseconds up to {MAX_TIME_MICROS}")]
    BadTime,
}

/// The id of a node: `[A-Za-z0-9_-]{1,64}`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates and wraps a node id.
    pub fn new(id: &str) -> Result<NodeId, VersionError> {
        let ok = !id.is_empty()
            && id.len() <= MAX_NODE_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(NodeId(Arc::from(id)))
        } else {
            Err(VersionError::BadNodeId)
        }
    }

    /// A fresh random id (`n` + 12 hex digits) for a node created without one.
    pub fn random() -> NodeId {
        NodeId(Arc::from(format!("n{:012x}", rand::random::<u64>() >> 16)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &*self.0)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NodeId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A version: ordered by `time`, then `node`. Rendered `"<time>.<node>"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// Microseconds from the origin node's hybrid logical clock.
    pub time: u64,
    /// The node that made the event.
    pub node: NodeId,
}

impl Version {
    /// A version from its parts.
    pub fn new(time: u64, node: NodeId) -> Version {
        Version { time, node }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.time, self.node)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.time, self.node)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    /// Parses `<time>.<node>`, also quoted (`"…"`, `W/"…"`) as in an ETag header.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = unquote(s.trim());
        let (time, node) = s.split_once('.').ok_or(VersionError::BadVersion)?;
        // The time half is plain digits: quotes and spaces were for the whole tag.
        let time = parse_digits(time).map_err(|_| VersionError::BadVersion)?;
        let node = NodeId::new(node).map_err(|_| VersionError::BadVersion)?;
        Ok(Version { time, node })
    }
}

/// Strips ETag quoting: `W/"x"` and `"x"` become `x`; anything else (also
/// `W/x`, a weak prefix with no quotes) is returned as it is.
pub fn unquote(s: &str) -> &str {
    let tag = s.strip_prefix("W/").unwrap_or(s);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(s)
}

/// Parses a time in microseconds (plain or ETag-quoted), up to [`MAX_TIME_MICROS`].
pub fn parse_time(s: &str) -> Result<u64, VersionError> {
    parse_digits(unquote(s.trim()))
}

/// A time as plain decimal digits, up to [`MAX_TIME_MICROS`].
fn parse_digits(s: &str) -> Result<u64, VersionError> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VersionError::BadTime);
    }
    let t: u64 = s.parse().map_err(|_| VersionError::BadTime)?;
    if t > MAX_TIME_MICROS {
        return Err(VersionError::BadTime);
    }
    Ok(t)
}

/// The wall clock in microseconds since the Unix epoch.
pub fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Hybrid logical clock: `now()` is strictly increasing, at least the wall
/// clock, and past every time passed to `observe()`. Shared by all partitions.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

impl Clock {
    /// A clock that will never issue a time at or below `floor` (restored from
    /// the store so that versions grow across restarts).
    pub fn starting_after(floor: u64) -> Clock {
        Clock {
            last: AtomicU64::new(floor),
        }
    }

    /// A new time, greater than every time issued or observed before.
    pub fn now(&self) -> u64 {
        let wall = wall_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past `time` (an explicit or remote time).
    pub fn observe(&self, time: u64) {
        self.last.fetch_max(time, Ordering::AcqRel);
    }

    /// The largest time issued or observed so far.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_time_then_node() {
        let a = NodeId::new("a").unwrap();
        let b = NodeId::new("b").unwrap();
        assert!(Version::new(1, b.clone()) < Version::new(2, a.clone()));
        assert!(Version::new(2, a) < Version::new(2, b));
    }

    #[test]
    fn version_round_trips_through_text_and_etag() {
        let v: Version = "1700000000000001.node-1".parse().unwrap();
        assert_eq!(v.time, 1700000000000001);
        assert_eq!(v.to_string(), "1700000000000001.node-1");
        assert_eq!(
            "\"5.x\"".parse::<Version>().unwrap(),
            Version::new(5, NodeId::new("x").unwrap())
        );
        assert_eq!("W/\"5.x\"".parse::<Version>().unwrap().time, 5);
        for bad in [
            "", "5", ".x", "5.", "x.5", "5.a.b", "-1.a", "5.a b", "W/5.x", "5 .x", "\"5\".x",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_bounded() {
        assert_eq!(parse_time("\"42\""), Ok(42));
        assert!(parse_time("9007199254740992").is_err());
        assert!(parse_time("W/42").is_err(), "a weak prefix needs quotes");
        assert_eq!(parse_time("W/\"42\""), Ok(42));
        assert!(parse_time("+5").is_err());
        assert!(parse_time("99999999999999999999").is_err());
    }

    #[test]
    fn clock_is_monotonic_and_jumps_past_observed_times() {
        let clock = Clock::starting_after(u64::from(u32::MAX) << 21);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        clock.observe(b + 1_000_000_000);
        assert!(clock.now() > b + 1_000_000_000);
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("node_1-A").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a.b").is_err());
        assert!(NodeId::new(&"x".repeat(65)).is_err());
        assert!(NodeId::new(NodeId::random().as_str()).is_ok());
    }
}
