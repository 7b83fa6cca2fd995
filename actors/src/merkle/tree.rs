//! The tree of one partition: a node per path prefix that holds events in
//! the partition, following the path hierarchy, each with the fingerprint
//! of every event at or below it (`subtree`) and of the events of the path
//! itself (`own`). So any prefix has a hash in one read (`/digest`), a
//! replica that watches a prefix compares just that subtree, and two trees
//! are compared by descending only where fingerprints differ (see `diff`).
//!
//! Kept in the store's merkle key space of the partition (`M part …`, see
//! `store::keys`), under its own layout:
//!
//! | key | value |
//! |---|---|
//! | `c` | the seq of the partition's log folded through (u64, big endian) |
//! | `d` id(u64, BE) | events one compaction step dropped, to take out of the tree: per event, its name's length (u32, LE) and its name |
//! | `n` depth(u16, BE) prefix | the node: `subtree` then `own` fingerprints |
//!
//! The root is depth 0, prefix `""`; the node of `a/b` is depth 2. Keys of
//! one depth sort by prefix, so the children of `a` are the depth-2 keys
//! from `a/` to `a0` (`0` follows `/`): a range, never a scan of the rest.
//! A fold adds a batch of events to every node on their paths and moves
//! the cursor in one atomic write, so a crash never leaves a tree that
//! disagrees with its cursor.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::fingerprint::{Fingerprint, ENCODED_BYTES};
use crate::store::{KeyOps, KeyValues, StoreError};

/// Where the nodes of trees are kept, one key space per partition: the
/// store's (see `store::Store::merkle_get`), or memory in tests.
pub trait NodeStore: Send + Sync {
    /// The value at `key` in partition `part`'s space.
    fn get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries with `from <= key < to`, in key order.
    fn range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError>;
    /// Sets (`Some`) or removes (`None`) keys: all of them or, after a
    /// crash, none.
    fn apply(&self, part: u16, ops: KeyOps) -> Result<(), StoreError>;
}

/// Key of the fold cursor.
pub const CURSOR: &[u8] = b"c";
/// Namespace of nodes.
const NODE: u8 = b'n';
/// Namespace of dropped events to take out of the tree.
pub const DROPPED: u8 = b'd';

/// `d id`: the key of a list of events one compaction step dropped,
/// queued for the folder (one key per step: inserting a sled key costs
/// far more than making it longer).
pub fn dropped_key(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(DROPPED);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The id of a `d` key.
pub fn dropped_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.strip_prefix(&[DROPPED])?.try_into().ok()?,
    ))
}

/// Appends `name` to a list of dropped events.
pub fn push_dropped(list: &mut Vec<u8>, name: &[u8]) {
    list.extend_from_slice(&(name.len() as u32).to_le_bytes());
    list.extend_from_slice(name);
}

/// The names of a list of dropped events.
pub fn dropped_names(list: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let bad = || StoreError::Corrupt("a truncated list of dropped events".into());
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        out.push(tail.get(..len).ok_or_else(bad)?);
        rest = &tail[len..];
    }
    Ok(out)
}

/// A node of the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Every event at or below the prefix.
    pub subtree: Fingerprint,
    /// The events of the path itself.
    pub own: Fingerprint,
}

impl Node {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 * ENCODED_BYTES);
        out.extend_from_slice(&self.subtree.encode());
        out.extend_from_slice(&self.own.encode());
        out
    }

    fn decode(raw: &[u8]) -> Result<Node, StoreError> {
        let bad = || StoreError::Corrupt("a merkle node of the wrong size".into());
        if raw.len() != 2 * ENCODED_BYTES {
            return Err(bad());
        }
        Ok(Node {
            subtree: Fingerprint::decode(&raw[..ENCODED_BYTES]).ok_or_else(bad)?,
            own: Fingerprint::decode(&raw[ENCODED_BYTES..]).ok_or_else(bad)?,
        })
    }
}

/// The number of segments of `prefix` (`""` has none).
pub fn depth(prefix: &str) -> usize {
    if prefix.is_empty() {
        0
    } else {
        prefix.split('/').count()
    }
}

/// `n depth prefix`.
fn node_key(depth: usize, prefix: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + prefix.len());
    k.push(NODE);
    k.extend_from_slice(&(depth as u16).to_be_bytes());
    k.extend_from_slice(prefix.as_bytes());
    k
}

/// The prefixes of `path` from the root to the path itself.
fn ancestors(path: &str) -> impl Iterator<Item = (usize, &str)> {
    let ends = path
        .char_indices()
        .filter(|&(_, c)| c == '/')
        .map(|(i, _)| i)
        .chain(std::iter::once(path.len()));
    std::iter::once((0, "")).chain(
        ends.enumerate()
            .filter(move |_| !path.is_empty())
            .map(move |(i, end)| (i + 1, &path[..end])),
    )
}

/// The path of an event name (`path \0 order`).
pub fn path_of(name: &[u8]) -> Result<&str, StoreError> {
    let end = name
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| StoreError::Corrupt("an event name without its order".into()))?;
    std::str::from_utf8(&name[..end])
        .map_err(|_| StoreError::Corrupt("an event name that is not UTF-8".into()))
}

/// The trees of a node's partitions over where their nodes are kept.
pub struct Tree<'a, N: NodeStore + ?Sized> {
    nodes: &'a N,
}

impl<'a, N: NodeStore + ?Sized> Tree<'a, N> {
    /// The trees kept in `nodes`.
    pub fn new(nodes: &'a N) -> Tree<'a, N> {
        Tree { nodes }
    }

    /// The node of `prefix` in partition `part` (empty if no event is at
    /// or below it).
    pub fn node(&self, part: u16, prefix: &str) -> Result<Node, StoreError> {
        match self.nodes.get(part, &node_key(depth(prefix), prefix))? {
            Some(raw) => Node::decode(&raw),
            None => Ok(Node::default()),
        }
    }

    /// The children of `prefix` (their last segment and subtree
    /// fingerprint) with a last segment in `(from, to)` as the bounds say,
    /// in order, at most `limit`.
    pub fn children(
        &self,
        part: u16,
        prefix: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        let base = if prefix.is_empty() {
            node_key(1, "")
        } else {
            node_key(depth(prefix) + 1, &format!("{prefix}/"))
        };
        let with = |seg: &str| {
            let mut k = base.clone();
            k.extend_from_slice(seg.as_bytes());
            k
        };
        let start = match from {
            Bound::Included(s) => with(s),
            Bound::Excluded(s) => {
                let mut k = with(s);
                k.push(0);
                k
            }
            Bound::Unbounded => base.clone(),
        };
        let end = match to {
            Bound::Excluded(s) => with(s),
            Bound::Included(s) => {
                let mut k = with(s);
                k.push(0);
                k
            }
            Bound::Unbounded => {
                let mut k = base.clone();
                // Past every key that starts with the base.
                match k.last_mut() {
                    Some(b) if !prefix.is_empty() => *b += 1, // '/' → '0'
                    _ => {
                        // The root's children: the whole next depth.
                        k = node_key(2, "");
                    }
                }
                k
            }
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (key, raw) in self.nodes.range(part, &start, &end, limit)? {
            let seg = std::str::from_utf8(&key[base.len()..])
                .map_err(|_| StoreError::Corrupt("a merkle key that is not UTF-8".into()))?;
            // A deeper key cannot share this depth's range; a segment never
            // holds '/'.
            if seg.contains('/') {
                continue;
            }
            out.push((seg.to_string(), Node::decode(&raw)?.subtree));
        }
        Ok(out)
    }

    /// The seq of partition `part`'s log folded through, if the tree was
    /// ever folded.
    pub fn cursor(&self, part: u16) -> Result<Option<u64>, StoreError> {
        match self.nodes.get(part, CURSOR)? {
            None => Ok(None),
            Some(raw) => Ok(Some(u64::from_be_bytes(
                raw.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("a merkle cursor of the wrong size".into()))?,
            ))),
        }
    }

    /// Adds the events named `names` (`path \0 order`, each new to the
    /// tree) to partition `part`'s tree and sets its cursor to `cursor`, in
    /// one atomic write.
    pub fn add<E: AsRef<[u8]>>(
        &self,
        part: u16,
        names: &[E],
        cursor: u64,
    ) -> Result<(), StoreError> {
        let mut ops = self.change(part, names, Fingerprint::add)?;
        ops.push((CURSOR.to_vec(), Some(cursor.to_be_bytes().to_vec())));
        self.nodes.apply(part, ops)
    }

    /// Takes the events named `names` (each in the tree) out of partition
    /// `part`'s tree and removes the queue keys `done` that listed them, in
    /// one atomic write. A node left empty goes.
    pub fn remove<E: AsRef<[u8]>>(
        &self,
        part: u16,
        names: &[E],
        done: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut ops = self.change(part, names, Fingerprint::sub)?;
        ops.extend(done.into_iter().map(|k| (k, None)));
        self.nodes.apply(part, ops)
    }

    /// The writes that apply `op` (add or subtract) with each event of
    /// `names` to every node on its path.
    fn change<E: AsRef<[u8]>>(
        &self,
        part: u16,
        names: &[E],
        op: fn(&mut Fingerprint, &Fingerprint),
    ) -> Result<KeyOps, StoreError> {
        let mut deltas: BTreeMap<(usize, &str), Node> = BTreeMap::new();
        for name in names {
            let name = name.as_ref();
            let path = path_of(name)?;
            let fp = Fingerprint::of(name);
            for (d, prefix) in ancestors(path) {
                deltas.entry((d, prefix)).or_default().subtree.add(&fp);
            }
            deltas.entry((depth(path), path)).or_default().own.add(&fp);
        }
        let mut ops = Vec::with_capacity(deltas.len() + 1);
        for ((d, prefix), delta) in deltas {
            let key = node_key(d, prefix);
            let mut node = match self.nodes.get(part, &key)? {
                Some(raw) => Node::decode(&raw)?,
                None => Node::default(),
            };
            op(&mut node.subtree, &delta.subtree);
            op(&mut node.own, &delta.own);
            if node.subtree.is_empty() {
                ops.push((key, None));
            } else {
                ops.push((key, Some(node.encode())));
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_run_from_the_root_to_the_path() {
        let got: Vec<_> = ancestors("a/bc/d").collect();
        assert_eq!(got, vec![(0, ""), (1, "a"), (2, "a/bc"), (3, "a/bc/d")]);
        assert_eq!(ancestors("a").collect::<Vec<_>>(), vec![(0, ""), (1, "a")]);
        assert_eq!(depth(""), 0);
        assert_eq!(depth("a/b"), 2);
    }
}
