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

use super::fingerprint::{Fingerprint, WIRE_BYTES as ENCODED_BYTES};
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
    /// The names of the events of `prefix` and of every path below it, a
    /// page at a time: those after the name `after` (the last of the
    /// previous page; paths in the side's own order, a path's names in
    /// order), and the last name answered when more may follow. What a walk
    /// asks where the other side holds nothing: one list instead of a
    /// question per node.
    fn names_under(
        &self,
        part: u16,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> Result<NamesPage, StoreError>;
    /// The sum of the children of `prefix` and how many they are, in each
    /// range between consecutive `bounds` (`None`: unbounded; each range
    /// includes its lower bound and excludes its upper).
    fn range_sums(
        &self,
        part: u16,
        prefix: &str,
        bounds: &[Option<String>],
    ) -> Result<Vec<(Fingerprint, usize)>, StoreError> {
        let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
        for pair in bounds.windows(2) {
            let children = self.children(part, prefix, bounds_of(pair), usize::MAX)?;
            out.push((sum(&children), children.len()));
        }
        Ok(out)
    }
}

/// A page of the names of a subtree's events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamesPage {
    /// The names.
    pub names: Vec<Vec<u8>>,
    /// The last name answered, when more may follow.
    pub next: Option<Vec<u8>>,
}

/// The path of child `seg` of `prefix`.
pub fn child_of(prefix: &str, seg: &str) -> String {
    if prefix.is_empty() {
        seg.to_string()
    } else {
        format!("{prefix}/{seg}")
    }
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
    /// What it looks for.
    pub want: Want,
}

impl Walk {
    /// Only the left side's events are looked for.
    fn left_only(&self) -> bool {
        self.want == Want::LeftOnly
    }

    /// Only the right side's events are looked for.
    fn right_only(&self) -> bool {
        self.want == Want::RightOnly
    }
}

/// What a walk looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Want {
    /// What either side lacks.
    #[default]
    Both,
    /// Only what the right side lacks (a hand-over: the left gives what it
    /// holds, and wants nothing back). Subtrees empty on the left are not
    /// walked, however much the right holds there.
    LeftOnly,
    /// Only what the left side lacks (a follower pulling what it missed
    /// before its stream's reset: the peer pulls what it lacks on its own).
    /// Subtrees empty on the right are not walked.
    RightOnly,
}

/// Compares partition `part` under `prefix` on two sides.
pub fn diff(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
) -> Result<Walk, StoreError> {
    diff_wanting(left, right, part, prefix, Want::Both)
}

/// Compares partition `part` under `prefix` on two sides, looking for what
/// `want` says (with [`Want::LeftOnly`], `only_right` stays empty).
pub fn diff_wanting(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    want: Want,
) -> Result<Walk, StoreError> {
    walk_from(left, right, (part, prefix), want, None)
}

/// Takes what a walk finds as it goes, a page at a time (so a walk that
/// finds a million events never holds them all).
pub trait Found {
    /// Names of events only the left side holds.
    fn left(&mut self, names: Vec<Vec<u8>>) -> Result<(), StoreError>;
    /// Names of events only the right side holds.
    fn right(&mut self, names: Vec<Vec<u8>>) -> Result<(), StoreError>;
}

/// Names a walk hands to its [`Found`] at once, about.
pub const FOUND_PAGE: usize = 4096;

/// [`diff_wanting`], handing what it finds to `found` in pages of about
/// [`FOUND_PAGE`] names as it goes (the answer's lists stay empty).
pub fn diff_into(
    left: &dyn Side,
    right: &dyn Side,
    (part, prefix): (u16, &str),
    want: Want,
    found: &mut dyn Found,
) -> Result<Walk, StoreError> {
    walk_from(left, right, (part, prefix), want, Some(found))
}

fn walk_from(
    left: &dyn Side,
    right: &dyn Side,
    (part, prefix): (u16, &str),
    want: Want,
    found: Option<&mut dyn Found>,
) -> Result<Walk, StoreError> {
    let mut walk = Walker {
        walk: Walk {
            want,
            ..Walk::default()
        },
        found,
    };
    let (l, r) = (left.node(part, prefix)?, right.node(part, prefix)?);
    walk.questions += 1;
    walk.bytes += 2 * ENCODED_BYTES;
    walk_node(left, right, part, prefix, (l, r), &mut walk)?;
    walk.flush(0)?;
    Ok(walk.walk)
}

/// A walk under way: what it found so far, and where it hands it.
struct Walker<'a> {
    walk: Walk,
    found: Option<&'a mut dyn Found>,
}

impl Walker<'_> {
    fn add_left(&mut self, names: impl IntoIterator<Item = Vec<u8>>) -> Result<(), StoreError> {
        self.walk.only_left.extend(names);
        self.flush(FOUND_PAGE)
    }

    fn add_right(&mut self, names: impl IntoIterator<Item = Vec<u8>>) -> Result<(), StoreError> {
        self.walk.only_right.extend(names);
        self.flush(FOUND_PAGE)
    }

    /// Hands what was found to the `Found`, if any, once a list holds at
    /// least `at_least` names.
    fn flush(&mut self, at_least: usize) -> Result<(), StoreError> {
        let Some(found) = self.found.as_mut() else {
            return Ok(());
        };
        if !self.walk.only_left.is_empty() && self.walk.only_left.len() >= at_least {
            found.left(std::mem::take(&mut self.walk.only_left))?;
        }
        if !self.walk.only_right.is_empty() && self.walk.only_right.len() >= at_least {
            found.right(std::mem::take(&mut self.walk.only_right))?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Walker<'_> {
    type Target = Walk;

    fn deref(&self) -> &Walk {
        &self.walk
    }
}

impl std::ops::DerefMut for Walker<'_> {
    fn deref_mut(&mut self) -> &mut Walk {
        &mut self.walk
    }
}

fn walk_node(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    (l, r): (Node, Node),
    walk: &mut Walker<'_>,
) -> Result<(), StoreError> {
    if same(&l.subtree, &r.subtree)
        || (walk.left_only() && l.subtree.count == 0)
        || (walk.right_only() && r.subtree.count == 0)
    {
        return Ok(());
    }
    // One side holds nothing here: everything the other holds is missing,
    // listed in pages instead of walked node by node (a new owner, or a
    // copy handed to one, is compared in a few questions).
    if r.subtree.count == 0 {
        let mut after = None;
        loop {
            let page = left.names_under(part, prefix, after.as_deref())?;
            walk.add_left(page.names)?;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }
    if l.subtree.count == 0 {
        let mut after = None;
        loop {
            let page = right.names_under(part, prefix, after.as_deref())?;
            walk.questions += 1;
            walk.bytes += page.names.iter().map(Vec::len).sum::<usize>();
            walk.add_right(page.names)?;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }
    // (A hand-over has nothing to give where the left holds no event, a
    // pull nothing to take where the right holds none.)
    let nothing_to_find =
        (walk.left_only() && l.own.count == 0) || (walk.right_only() && r.own.count == 0);
    if !same(&l.own, &r.own) && !nothing_to_find {
        let (le, re) = (left.events(part, prefix)?, right.events(part, prefix)?);
        walk.questions += 1;
        walk.bytes += re.iter().map(Vec::len).sum::<usize>();
        let (ls, rs): (BTreeSet<_>, BTreeSet<_>) =
            (le.into_iter().collect(), re.into_iter().collect());
        if !walk.right_only() {
            walk.add_left(ls.difference(&rs).cloned())?;
        }
        if !walk.left_only() {
            walk.add_right(rs.difference(&ls).cloned())?;
        }
    }
    let mut children_l = l.subtree;
    children_l.sub(&l.own);
    let mut children_r = r.subtree;
    children_r.sub(&r.own);
    if !same(&children_l, &children_r) {
        walk_range(left, right, part, prefix, (None, None), walk)?;
    }
    Ok(())
}

/// True if two fingerprints are equal as a link carries them (mod 2^128,
/// see `Fingerprint::truncated`): sums and differences of truncated values
/// carry into the high bits on one side and not the other, so every
/// comparison of the walk is made on the low bits only.
fn same(a: &Fingerprint, b: &Fingerprint) -> bool {
    a.truncated() == b.truncated()
}

/// Sums the fingerprints of `items`.
fn sum(items: &[(String, Fingerprint)]) -> Fingerprint {
    let mut fp = Fingerprint::EMPTY;
    for (_, f) in items {
        fp.add(f);
    }
    fp
}

/// The range between two bounds (the lower included, the upper excluded).
pub fn bounds_of(pair: &[Option<String>]) -> (Bound<&str>, Bound<&str>) {
    (
        pair[0].as_deref().map_or(Bound::Unbounded, Bound::Included),
        pair.get(1)
            .and_then(|b| b.as_deref())
            .map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// Compares the children of `prefix` with a segment in `[lo, hi)`
/// (`None`: unbounded).
fn walk_range(
    left: &dyn Side,
    right: &dyn Side,
    part: u16,
    prefix: &str,
    (lo, hi): (Option<&str>, Option<&str>),
    walk: &mut Walker<'_>,
) -> Result<(), StoreError> {
    let bounds = [lo.map(str::to_string), hi.map(str::to_string)];
    let range = bounds_of(&bounds);
    // The left side reads its range whole (a local read).
    let mine = left.children(part, prefix, range, usize::MAX)?;
    if mine.is_empty() && walk.left_only() {
        return Ok(());
    }
    if mine.len() <= SMALL_RANGE {
        // Few here: the other side's children of the range, item by item.
        let theirs = right.children(part, prefix, range, usize::MAX)?;
        walk.questions += 1;
        walk.bytes += items_bytes(&theirs);
        return walk_items(left, right, part, prefix, &mine, &theirs, walk);
    }
    // Many here: the other side's sums of ranges cut evenly at this side's
    // children, and only the ranges that differ are looked into.
    let step = mine.len().div_ceil(FANOUT);
    let mut cuts: Vec<Option<String>> = vec![bounds[0].clone()];
    cuts.extend(
        mine.iter()
            .skip(step)
            .step_by(step)
            .map(|(s, _)| Some(s.clone())),
    );
    cuts.push(bounds[1].clone());
    let theirs = right.range_sums(part, prefix, &cuts)?;
    walk.questions += 1;
    walk.bytes +=
        theirs.len() * (ENCODED_BYTES + 4) + cuts.iter().flatten().map(String::len).sum::<usize>();
    for (pair, (their_sum, their_count)) in cuts.windows(2).zip(theirs) {
        let (a, b) = (pair[0].as_deref(), pair[1].as_deref());
        let within = |s: &str| a.is_none_or(|a| s >= a) && b.is_none_or(|b| s < b);
        let m: Vec<_> = mine.iter().filter(|(s, _)| within(s)).cloned().collect();
        if same(&sum(&m), &their_sum)
            || (m.is_empty() && walk.left_only())
            || (their_count == 0 && walk.right_only())
        {
            continue;
        }
        if their_count <= SMALL_RANGE {
            let t = right.children(part, prefix, bounds_of(pair), usize::MAX)?;
            walk.questions += 1;
            walk.bytes += items_bytes(&t);
            walk_items(left, right, part, prefix, &m, &t, walk)?;
        } else {
            walk_range(left, right, part, prefix, (a, b), walk)?;
        }
    }
    Ok(())
}

/// What a list of children weighs on a link.
fn items_bytes(items: &[(String, Fingerprint)]) -> usize {
    items.iter().map(|(s, _)| s.len() + ENCODED_BYTES).sum()
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
    walk: &mut Walker<'_>,
) -> Result<(), StoreError> {
    let child = |seg: &str| child_of(prefix, seg);
    let (mut i, mut j) = (0, 0);
    while i < mine.len() || j < theirs.len() {
        let order = match (mine.get(i), theirs.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        // A child only one side lists holds nothing on the other: that side
        // is not asked for its node (a peer's would cost a round trip each),
        // and the walk lists what the one side holds under it.
        let (seg, nodes) = match order {
            std::cmp::Ordering::Equal => {
                let same = same(&mine[i].1, &theirs[j].1);
                i += 1;
                j += 1;
                if same {
                    continue;
                }
                let path = child(&mine[i - 1].0);
                let nodes = (left.node(part, &path)?, right.node(part, &path)?);
                walk.questions += 1;
                walk.bytes += 2 * ENCODED_BYTES;
                (&mine[i - 1].0, nodes)
            }
            std::cmp::Ordering::Less => {
                i += 1;
                if walk.right_only() {
                    continue;
                }
                let path = child(&mine[i - 1].0);
                (&mine[i - 1].0, (left.node(part, &path)?, Node::default()))
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                if walk.left_only() {
                    continue;
                }
                let their_node = Node {
                    subtree: theirs[j - 1].1,
                    own: Fingerprint::EMPTY,
                };
                (&theirs[j - 1].0, (Node::default(), their_node))
            }
        };
        let path = child(seg);
        walk_node(left, right, part, &path, nodes, walk)?;
    }
    Ok(())
}
