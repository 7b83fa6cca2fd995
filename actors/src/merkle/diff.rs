//! Comparing two trees of a partition: which events each side holds that
//! the other lacks, reading only where they differ.
//!
//! From a prefix down: equal subtree fingerprints end the walk there.
//! Otherwise the events of the path itself are compared when their
//! fingerprints differ, and the children are compared by ranges (range-
//! based set reconciliation over the children, whose items are (segment,
//! subtree fingerprint)): a range whose fingerprints agree is done; one
//! small enough on either side is compared child by child, and the
//! children that differ are walked; a larger one is cut in [`FANOUT`]
//! ranges at one side's children. So a wide prefix (a million children) is
//! not listed whole to find one difference: the cost grows with the number
//! of differences times the logarithm of the width and the depth.
//!
//! [`diff`] walks two sides it can read directly (both local, as in tests
//! and the benchmark); the `Differ` of a peer link asks the same questions
//! over the link. [`Walk`] counts the questions and the bytes their
//! answers would take on a link.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::fingerprint::{Fingerprint, ENCODED_BYTES};
use super::tree::Node;
use crate::store::StoreError;

/// Ranges a large range of children is cut into.
pub const FANOUT: usize = 16;

/// Children at most in a range compared child by child.
pub const SMALL_RANGE: usize = 16;

/// What a walk reads of one side.
pub trait Side {
    /// The node of `prefix`.
    fn node(&self, part: u16, prefix: &str) -> Result<Node, StoreError>;
    /// The children of `prefix` with a last segment in the range, in
    /// order, at most `limit`.
    fn children(
        &self,
        part: u16,
        prefix: &str,
        range: (Bound<&str>, Bound<&str>),
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError>;
    /// The names (`path \0 order`) of the events of `path` itself.
    fn events(&self, part: u16, path: &str) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// What a walk found, and what it cost.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Names of events only the left side holds.
    pub only_left: Vec<Vec<u8>>,
    /// Names of events only the right side holds.
    pub only_right: Vec<Vec<u8>>,
    /// Questions asked of the other side (each a round trip on a link,
    /// if asked one by one).
    pub questions: usize,
    /// Bytes of fingerprints, segments and names the answers carried.
    pub bytes: usize,
}

/// Compares partition `part` under `prefix` on two sides.
pub fn diff(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
) -> Result<Walk, StoreError> {
    let mut walk = Walk::default();
    let (l, r) = (left.node(part, prefix)?, right.node(part, prefix)?);
    walk.questions += 1;
    walk.bytes += 2 * ENCODED_BYTES;
    walk_node(left, right, part, prefix, (l, r), &mut walk)?;
    Ok(walk)
}

fn walk_node(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    (l, r): (Node, Node),
    walk: &mut Walk,
) -> Result<(), StoreError> {
    if l.subtree == r.subtree {
        return Ok(());
    }
    if l.own != r.own {
        let (le, re) = (left.events(part, prefix)?, right.events(part, prefix)?);
        walk.questions += 1;
        walk.bytes += re.iter().map(Vec::len).sum::<usize>();
        let (ls, rs): (BTreeSet<_>, BTreeSet<_>) =
            (le.into_iter().collect(), re.into_iter().collect());
        walk.only_left.extend(ls.difference(&rs).cloned());
        walk.only_right.extend(rs.difference(&ls).cloned());
    }
    let mut children_l = l.subtree;
    children_l.sub(&l.own);
    let mut children_r = r.subtree;
    children_r.sub(&r.own);
    if children_l != children_r {
        walk_range(left, right, part, prefix, (None, None), walk)?;
    }
    Ok(())
}

/// Sums the fingerprints of `items`.
fn sum(items: &[(String, Fingerprint)]) -> Fingerprint {
    let mut fp = Fingerprint::EMPTY;
    for (_, f) in items {
        fp.add(f);
    }
    fp
}

/// Compares the children of `prefix` with a segment in `[lo, hi)`
/// (`None`: unbounded).
fn walk_range(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    (lo, hi): (Option<&str>, Option<&str>),
    walk: &mut Walk,
) -> Result<(), StoreError> {
    let range = (
        lo.map_or(Bound::Unbounded, Bound::Included),
        hi.map_or(Bound::Unbounded, Bound::Excluded),
    );
    // The left side reads its range whole (a local read); the right side
    // answers a fingerprint, or its children when few.
    let mine = left.children(part, prefix, range, usize::MAX)?;
    let theirs_few = right.children(part, prefix, range, SMALL_RANGE + 1)?;
    walk.questions += 1;
    if theirs_few.len() <= SMALL_RANGE || mine.len() <= SMALL_RANGE {
        let theirs = if theirs_few.len() <= SMALL_RANGE {
            theirs_few
        } else {
            right.children(part, prefix, range, usize::MAX)?
        };
        walk.bytes += theirs
            .iter()
            .map(|(s, _)| s.len() + ENCODED_BYTES)
            .sum::<usize>();
        return walk_items(left, right, part, prefix, &mine, &theirs, walk);
    }
    let theirs = right.children(part, prefix, range, usize::MAX)?;
    walk.bytes += ENCODED_BYTES;
    if sum(&mine) == sum(&theirs) {
        return Ok(());
    }
    // Cut at the left side's children, evenly by count.
    let step = mine.len().div_ceil(FANOUT);
    let mut bounds: Vec<Option<&str>> = vec![lo];
    bounds.extend(
        mine.iter()
            .skip(step)
            .step_by(step)
            .map(|(s, _)| Some(s.as_str())),
    );
    bounds.push(hi);
    for pair in bounds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let within = |s: &str| a.is_none_or(|a| s >= a) && b.is_none_or(|b| s < b);
        let m: Vec<_> = mine.iter().filter(|(s, _)| within(s)).cloned().collect();
        let t: Vec<_> = theirs.iter().filter(|(s, _)| within(s)).cloned().collect();
        walk.bytes += ENCODED_BYTES + a.map_or(0, str::len);
        if sum(&m) != sum(&t) {
            walk_range(left, right, part, prefix, (a, b), walk)?;
        }
    }
    Ok(())
}

/// Compares two lists of children item by item, and walks those that
/// differ.
fn walk_items(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    mine: &[(String, Fingerprint)],
    theirs: &[(String, Fingerprint)],
    walk: &mut Walk,
) -> Result<(), StoreError> {
    let child = |seg: &str| {
        if prefix.is_empty() {
            seg.to_string()
        } else {
            format!("{prefix}/{seg}")
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < mine.len() || j < theirs.len() {
        let order = match (mine.get(i), theirs.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let seg = match order {
            std::cmp::Ordering::Equal => {
                let same = mine[i].1 == theirs[j].1;
                i += 1;
                j += 1;
                if same {
                    continue;
                }
                &mine[i - 1].0
            }
            std::cmp::Ordering::Less => {
                i += 1;
                &mine[i - 1].0
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                &theirs[j - 1].0
            }
        };
        let path = child(seg);
        let (l, r) = (left.node(part, &path)?, right.node(part, &path)?);
        walk.questions += 1;
        walk.bytes += 2 * ENCODED_BYTES;
        walk_node(left, right, part, &path, (l, r), walk)?;
    }
    Ok(())
}
