//! Events and the last-writer-wins rule that merges them.
//!
//! An [`Event`] is one write of one path: a value (or a tombstone), its content
//! type, optional expiry and author, and its [`Version`]. Events of a path form
//! an LWW register: the greatest `(version, digest)` is the value, every distinct
//! event is kept in history. [`decide`] is the whole merge rule; it is pure, so
//! it is idempotent and commutative and replicas converge whatever the order.

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::path::Path;
use super::version::{wall_micros, Version};

/// Content digest of an event (first 16 bytes of BLAKE3): orders events that
/// carry the same version but different content, the same way on every node.
pub type Digest = [u8; 16];

/// One write of one path. Immutable once built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The path written.
    pub path: Path,
    /// Its version.
    pub version: Version,
    /// The bytes, or `None` for a delete (tombstone).
    pub value: Option<Bytes>,
    /// The media type given by the writer, if any.
    pub content_type: Option<Arc<str>>,
    /// Expiry time in µs since the epoch (same clock as versions), if any.
    pub expires_at: Option<u64>,
    /// Who wrote it (the token's subject), when known.
    pub author: Option<Arc<str>>,
}

impl Event {
    /// True for a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.value.is_none()
    }

    /// True if the event holds a value that has not expired at `now` (µs).
    pub fn is_live_at(&self, now: u64) -> bool {
        self.value.is_some() && self.expires_at.is_none_or(|t| t > now)
    }

    /// [`Event::is_live_at`] now; the clock is read only for a value with
    /// an expiry.
    pub fn is_live_now(&self) -> bool {
        self.value.is_some() && self.expires_at.is_none_or(|t| t > wall_micros())
    }

    /// The digest of everything but the path and version.
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        match &self.value {
            Some(v) => {
                h.update(&[1]);
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v);
            }
            None => {
                h.update(&[0]);
            }
        }
        let ct = self.content_type.as_deref().unwrap_or("");
        h.update(&(ct.len() as u64).to_le_bytes());
        h.update(ct.as_bytes());
        h.update(&self.expires_at.unwrap_or(0).to_le_bytes());
        let author = self.author.as_deref().unwrap_or("");
        h.update(author.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }
}

/// What applying an event did to its path's register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event is the new value; `previous` was the value before (if any).
    New {
        /// The version it replaced.
        previous: Option<Version>,
    },
    /// That exact event was already applied (an idempotent retry).
    Existing,
    /// A newer event stands; this one is kept in history only.
    TooLate {
        /// The version that stands.
        current: Version,
    },
}

/// The LWW rule: where `incoming` stands against the register's current event.
/// `known` says whether the incoming event is already in history (an older
/// event re-sent is `Existing`, not `TooLate`).
pub fn decide(
    current: Option<(&Version, &Digest)>,
    incoming: (&Version, &Digest),
    known: impl FnOnce() -> bool,
) -> Applied {
    match current {
        None => Applied::New { previous: None },
        Some(cur) => match incoming.cmp(&cur) {
            Ordering::Greater => Applied::New {
                previous: Some(cur.0.clone()),
            },
            Ordering::Equal => Applied::Existing,
            Ordering::Less if known() => Applied::Existing,
            Ordering::Less => Applied::TooLate {
                current: cur.0.clone(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::model::version::NodeId;

    /// An in-memory register per path, applying events with [`decide`]: the
    /// reference the store's partition logic follows.
    #[derive(Default, PartialEq, Debug)]
    struct Registers {
        latest: BTreeMap<String, (Version, Digest)>,
        history: BTreeSet<(String, Version, Digest)>,
    }

    impl Registers {
        fn apply(&mut self, e: &Event) -> Applied {
            let d = e.digest();
            let key = e.path.as_str().to_string();
            let hist = (key.clone(), e.version.clone(), d);
            let cur = self.latest.get(&key).map(|(v, d)| (v, d));
            let outcome = decide(cur, (&e.version, &d), || self.history.contains(&hist));
            match &outcome {
                Applied::New { .. } => {
                    self.latest.insert(key, (e.version.clone(), d));
                    self.history.insert(hist);
                }
                Applied::TooLate { .. } => {
                    self.history.insert(hist);
                }
                Applied::Existing => {}
            }
            outcome
        }
    }

    fn event(path: &str, time: u64, node: &str, value: Option<&str>) -> Event {
        Event {
            path: Path::parse(path).unwrap(),
            version: Version::new(time, NodeId::new(node).unwrap()),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            content_type: None,
            expires_at: None,
            author: None,
        }
    }

    #[test]
    fn apply_outcomes() {
        let mut r = Registers::default();
        let a = event("p", 10, "n", Some("a"));
        let b = event("p", 20, "n", Some("b"));
        assert_eq!(r.apply(&a), Applied::New { previous: None });
        assert_eq!(
            r.apply(&b),
            Applied::New {
                previous: Some(a.version.clone())
            }
        );
        assert_eq!(r.apply(&b), Applied::Existing);
        assert_eq!(
            r.apply(&a),
            Applied::Existing,
            "an old event re-sent is known"
        );
        let old = event("p", 5, "n", Some("old"));
        assert_eq!(
            r.apply(&old),
            Applied::TooLate {
                current: b.version.clone()
            }
        );
    }

    #[test]
    fn same_version_different_content_is_ordered_by_digest() {
        let x = event("p", 10, "n", Some("x"));
        let y = event("p", 10, "n", Some("y"));
        let (lo, hi) = if x.digest() < y.digest() {
            (x, y)
        } else {
            (y, x)
        };
        let mut r1 = Registers::default();
        r1.apply(&lo);
        assert!(matches!(r1.apply(&hi), Applied::New { .. }));
        let mut r2 = Registers::default();
        r2.apply(&hi);
        assert!(matches!(r2.apply(&lo), Applied::TooLate { .. }));
        assert_eq!(r1, r2);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            prop::sample::select(vec!["a", "a/b", "c"]),
            0u64..6,
            prop::sample::select(vec!["n1", "n2"]),
            prop::option::weighted(0.8, prop::sample::select(vec!["u", "v", "w"])),
        )
            .prop_map(|(p, t, n, v)| event(p, t, n, v))
    }

    proptest! {
        #[test]
        fn any_permutation_with_duplicates_converges(
            events in prop::collection::vec(arb_event(), 1..24),
            seed in any::<u64>(),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut reference = Registers::default();
            for e in &events {
                reference.apply(e);
            }
            let mut shuffled = events.clone();
            for i in &dups {
                shuffled.push(i.get(&events).clone());
            }
            let mut rng = seed;
            for i in (1..shuffled.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut other = Registers::default();
            for e in &shuffled {
                other.apply(e);
            }
            prop_assert_eq!(reference, other);
        }
    }
}
