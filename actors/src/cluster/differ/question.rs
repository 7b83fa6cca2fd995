//! What a diff session asks the other side, and what it answers: the
//! questions of a merkle walk (`merkle::diff::Side`) and the fetch of the
//! events found missing, answered from the answering node's own trees and
//! store.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::cluster::wire::{WireError, WireEvent};
use crate::merkle::diff::bounds_of;
use crate::merkle::{Fingerprint, NamesPage, Node as TreeNode, Tree};
use crate::model::Path;
use crate::Node;

/// Children answered per question at most (a wide prefix is read in pages,
/// so no answer outgrows a frame).
pub const CHILDREN_PAGE: usize = 4096;

/// Names of one path's events an answer lists at most (a path with a long
/// history is read in pages).
pub const EVENT_NAMES_PAGE: usize = 8192;

/// Paths whose event names one page of a subtree lists at most.
pub const SUBTREE_PATHS: usize = 1024;

/// Names after which a page of a subtree ends (at a path's end).
pub const SUBTREE_NAMES: usize = 8192;

/// How long an answer waits for the trees to be folded through what a
/// question asks (well within a session's wait for an answer).
const FOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Events fetched per question at most.
pub const FETCH_PAGE: usize = 256;

/// Value bytes an answer to a fetch carries at most (one event at least):
/// an answer stays well under a frame's limit whatever the values weigh.
pub const FETCH_BYTES: usize = 4 << 20;
const _: () = assert!(
    FETCH_BYTES + crate::cluster::MAX_VALUE_BYTES + (1 << 20) <= crate::cluster::MAX_FRAME_BYTES
);

/// A fingerprint on the wire: its sum mod 2^128 (see
/// `Fingerprint::truncated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFp {
    /// The low 128 bits of the sum of the events' hashes.
    pub hash: [u8; 16],
    /// How many events.
    pub count: u64,
}

impl From<&Fingerprint> for WireFp {
    fn from(fp: &Fingerprint) -> WireFp {
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&fp.hash()[..16]);
        WireFp {
            hash,
            count: fp.count,
        }
    }
}

impl From<WireFp> for Fingerprint {
    fn from(w: WireFp) -> Fingerprint {
        let mut raw = [0u8; 40];
        raw[..16].copy_from_slice(&w.hash);
        raw[32..].copy_from_slice(&w.count.to_le_bytes());
        Fingerprint::decode(&raw).unwrap_or_default()
    }
}

/// A question of a diff session about one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffQuestion {
    /// The roots of these partitions (which sessions are worth running),
    /// once the answerer's trees hold every entry of its log through
    /// `through` (a follower compares what came before a reset's head).
    Roots {
        /// The partitions.
        parts: Vec<u16>,
        /// The log seq the trees must be folded through (0: any).
        through: u64,
    },
    /// The node of a prefix.
    Node {
        /// The prefix.
        prefix: String,
    },
    /// Children of a prefix with a segment at or after `from` (after it,
    /// when `after`) and before `to`, at most `limit` (and
    /// [`CHILDREN_PAGE`]).
    Children {
        /// The prefix.
        prefix: String,
        /// The lower bound.
        from: Option<String>,
        /// `from` itself excluded.
        after: bool,
        /// The upper bound (excluded).
        to: Option<String>,
        /// Most children wanted.
        limit: u32,
    },
    /// Sums and counts of the children in the ranges between bounds.
    RangeSums {
        /// The prefix.
        prefix: String,
        /// The bounds (`None`: unbounded).
        bounds: Vec<Option<String>>,
    },
    /// The names of the events of a path, after the name `after` (the
    /// last of the previous page), at most [`EVENT_NAMES_PAGE`].
    Events {
        /// The path.
        path: String,
        /// The last name of the previous page.
        after: Option<Vec<u8>>,
    },
    /// The names of every event at or below `prefix`, after the name
    /// `after`, a page at a time (the asker holds nothing there).
    Subtree {
        /// The prefix.
        prefix: String,
        /// The last name of the previous page.
        after: Option<Vec<u8>>,
    },
    /// The events with these names (`path \0 order`).
    Fetch {
        /// The names, at most [`FETCH_PAGE`].
        names: Vec<Vec<u8>>,
    },
}

/// An answer to a [`DiffQuestion`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiffReply {
    /// The roots, in the order asked.
    Roots(Vec<WireFp>),
    /// A node: subtree, own events.
    Node(WireFp, WireFp),
    /// Children: segment, subtree.
    Children(Vec<(String, WireFp)>),
    /// Per range: sum, count of children.
    RangeSums(Vec<(WireFp, u64)>),
    /// Event names.
    Names(Vec<Vec<u8>>),
    /// A page of a subtree's event names, and the last name answered when
    /// more may follow.
    Subtree {
        /// The names.
        names: Vec<Vec<u8>>,
        /// Where the next page starts (after it).
        next: Option<Vec<u8>>,
    },
    /// The events of the first `answered` names asked (those this node
    /// holds), cut at [`FETCH_BYTES`]: ask again for the rest.
    Events {
        /// The events.
        events: Vec<WireEvent>,
        /// How many of the names asked this answers.
        answered: u32,
    },
}

/// Answers `question` about partition `part` from `node`'s trees and store.
pub fn answer(node: &Node, part: u16, question: DiffQuestion) -> Result<DiffReply, WireError> {
    let failed = |e: crate::store::StoreError| WireError::Failed(e.to_string());
    if usize::from(part) >= node.partitions() {
        return Err(WireError::Invalid(format!("no partition {part}")));
    }
    let store = node.store();
    let tree = Tree::new(store.as_ref());
    match question {
        DiffQuestion::Roots { parts, through } => {
            if !node.merkle_folded_through(&parts, through, FOLD_WAIT) {
                return Err(WireError::Failed(format!(
                    "this node's merkle trees are not folded through seq {through} yet"
                )));
            }
            let mut roots = Vec::with_capacity(parts.len());
            for p in parts {
                if usize::from(p) >= node.partitions() {
                    return Err(WireError::Invalid(format!("no partition {p}")));
                }
                roots.push(WireFp::from(&tree.node(p, "").map_err(failed)?.subtree));
            }
            Ok(DiffReply::Roots(roots))
        }
        DiffQuestion::Node { prefix } => {
            let TreeNode { subtree, own } = tree.node(part, &prefix).map_err(failed)?;
            Ok(DiffReply::Node(WireFp::from(&subtree), WireFp::from(&own)))
        }
        DiffQuestion::Children {
            prefix,
            from,
            after,
            to,
            limit,
        } => {
            let lower = match (&from, after) {
                (None, _) => Bound::Unbounded,
                (Some(f), false) => Bound::Included(f.as_str()),
                (Some(f), true) => Bound::Excluded(f.as_str()),
            };
            let upper = to.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let limit = (limit as usize).min(CHILDREN_PAGE);
            let children = tree
                .children(part, &prefix, lower, upper, limit)
                .map_err(failed)?;
            Ok(DiffReply::Children(
                children
                    .iter()
                    .map(|(s, fp)| (s.clone(), WireFp::from(fp)))
                    .collect(),
            ))
        }
        DiffQuestion::RangeSums { prefix, bounds } => {
            let mut sums = Vec::with_capacity(bounds.len().saturating_sub(1));
            for pair in bounds.windows(2) {
                let (lower, upper) = bounds_of(pair);
                let (mut sum, mut count) = (Fingerprint::EMPTY, 0u64);
                // In pages: a range may hold a million children.
                let mut last: Option<String> = None;
                loop {
                    let from = last.as_deref().map_or(lower, Bound::Excluded);
                    let page = tree
                        .children(part, &prefix, from, upper, CHILDREN_PAGE)
                        .map_err(failed)?;
                    for (_, fp) in &page {
                        sum.add(fp);
                    }
                    count += page.len() as u64;
                    if page.len() < CHILDREN_PAGE {
                        break;
                    }
                    last = page.last().map(|(seg, _)| seg.clone());
                }
                sums.push((WireFp::from(&sum), count));
            }
            Ok(DiffReply::RangeSums(sums))
        }
        DiffQuestion::Events { path, after } => {
            let path = Path::parse_key(&path).map_err(|e| WireError::Invalid(e.to_string()))?;
            let order = match &after {
                None => None,
                Some(name) => Some(
                    crate::store::split_event_name(name)
                        .filter(|(p, _)| *p == path.as_str())
                        .ok_or_else(|| {
                            WireError::Invalid("a name of another path to start after".into())
                        })?
                        .1,
                ),
            };
            Ok(DiffReply::Names(
                node.event_names_after(&path, order, EVENT_NAMES_PAGE)
                    .map_err(|e| WireError::from(&e))?,
            ))
        }
        DiffQuestion::Subtree { prefix, after } => {
            let page =
                subtree_names(node, part, &prefix, after.as_deref()).map_err(|e| match e {
                    crate::error::NodeError::BadPath(why) => WireError::Invalid(why.to_string()),
                    e => WireError::from(&e),
                })?;
            Ok(DiffReply::Subtree {
                names: page.names,
                next: page.next,
            })
        }
        DiffQuestion::Fetch { names } => {
            if names.len() > FETCH_PAGE {
                return Err(WireError::Invalid(format!(
                    "at most {FETCH_PAGE} events per fetch"
                )));
            }
            // Each event read by its name, one at a time: the answer stops
            // between names once it holds FETCH_BYTES of values, at most
            // one event more, so it fits a frame (several versions of one
            // path may be asked together).
            let store = node.store();
            let mut events = Vec::new();
            let mut bytes = 0;
            let mut answered = 0usize;
            for name in &names {
                if bytes >= FETCH_BYTES {
                    break;
                }
                if let Some(s) = store
                    .named(name)
                    .map_err(|e| WireError::from(&crate::error::NodeError::from(e)))?
                {
                    bytes += s.event.value.as_ref().map_or(0, |v| v.len()) + 64;
                    events.push(WireEvent::from(&s.event));
                }
                answered += 1;
            }
            let answered = answered as u32;
            Ok(DiffReply::Events { events, answered })
        }
    }
}

/// The names of the events of `prefix` and every path below it in
/// partition `part` of `node`, after the name `after` (the last of the
/// previous page): at most [`SUBTREE_NAMES`] names (a path's names are
/// read a page at a time, so one with a long history is cut too) and
/// [`SUBTREE_PATHS`] paths.
pub fn subtree_names(
    node: &Node,
    part: u16,
    prefix: &str,
    after: Option<&[u8]>,
) -> Result<NamesPage, crate::error::NodeError> {
    use crate::error::NodeError;
    let prefix = if prefix.is_empty() {
        Path::root()
    } else {
        Path::parse_key(prefix).map_err(NodeError::BadPath)?
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    let cut = |names: Vec<Vec<u8>>| NamesPage {
        next: names.last().cloned(),
        names,
    };
    // The rest of the path the last page ended in, then the paths after it.
    let mut from_path = None;
    if let Some(name) = after {
        let (path, order) = crate::store::split_event_name(name)
            .ok_or_else(|| NodeError::Invalid("an event name without its order".into()))?;
        let parsed = Path::parse_key(path).map_err(NodeError::BadPath)?;
        if !take_names(node, &parsed, Some(order), &mut names)? {
            return Ok(cut(names));
        }
        from_path = Some(path.to_string());
    }
    let paths =
        node.store()
            .scan_latest_in(&prefix, Some(&[part]), from_path.as_deref(), SUBTREE_PATHS)?;
    for s in &paths {
        if !take_names(node, &s.event.path, None, &mut names)? {
            return Ok(cut(names));
        }
    }
    if paths.len() == SUBTREE_PATHS {
        return Ok(cut(names));
    }
    Ok(NamesPage { names, next: None })
}

/// Adds the names of `path`'s events after the order key `after` to
/// `names`, until it holds [`SUBTREE_NAMES`]: true if the path's names are
/// all in.
fn take_names(
    node: &Node,
    path: &Path,
    after: Option<&[u8]>,
    names: &mut Vec<Vec<u8>>,
) -> Result<bool, crate::error::NodeError> {
    let mut after = after.map(<[u8]>::to_vec);
    loop {
        let room = SUBTREE_NAMES
            .saturating_sub(names.len())
            .min(EVENT_NAMES_PAGE);
        if room == 0 {
            return Ok(false);
        }
        let page = node.event_names_after(path, after.as_deref(), room)?;
        let done = page.len() < room;
        after = page
            .last()
            .and_then(|n| crate::store::split_event_name(n))
            .map(|(_, order)| order.to_vec());
        names.extend(page);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::partition::Write;

    #[test]
    fn a_fetch_answer_is_cut_inside_one_paths_versions_and_fits_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::new(dir.path());
        config.node_id = Some("n1".into());
        let node = Node::open(config).unwrap();
        let path = Path::parse_key("big/x").unwrap();
        let value = vec![7u8; FETCH_BYTES / 2];
        let names: Vec<Vec<u8>> = actix::System::new().block_on(async {
            for time in [1_000u64, 2_000, 3_000] {
                let mut w = Write::set(path.clone(), value.clone());
                w.time = Some(time);
                node.write(w).await.unwrap();
            }
            node.history_of(&path, crate::node::HistoryRange::default())
                .unwrap()
                .iter()
                .map(|s| crate::store::event_name(&path, &s.event.version, &s.digest))
                .collect()
        });
        assert_eq!(names.len(), 3);
        let part = node.partition_of(&path) as u16;
        let fetch = |names: &[Vec<u8>]| match answer(
            &node,
            part,
            DiffQuestion::Fetch {
                names: names.to_vec(),
            },
        ) {
            Ok(DiffReply::Events { events, answered }) => (events, answered as usize),
            other => panic!("{other:?}"),
        };
        // Three versions of one path, FETCH_BYTES / 2 each: the answer stops
        // once it holds FETCH_BYTES, inside the path's group.
        let (events, answered) = fetch(&names);
        assert_eq!((events.len(), answered), (2, 2));
        let (rest, answered) = fetch(&names[2..]);
        assert_eq!((rest.len(), answered), (1, 1));
        node.shutdown();
    }
}
