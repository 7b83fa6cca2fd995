//! The tree alone, in memory: folding in any batches gives the tree that
//! folding all at once gives, its root is the plain sum of the events, and
//! a diff of two trees finds exactly the events each side lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::store::{KeyOps, KeyValues, StoreError};

type Space = BTreeMap<Vec<u8>, Vec<u8>>;

/// A tree's nodes in memory, and the events of each path.
#[derive(Default)]
struct Mem {
    nodes: Mutex<BTreeMap<u16, Space>>,
    events: BTreeMap<String, BTreeSet<Vec<u8>>>,
}

impl NodeStore for Mem {
    fn get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .nodes
            .lock()
            .unwrap()
            .get(&part)
            .and_then(|s| s.get(key).cloned()))
    }

    fn range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        let nodes = self.nodes.lock().unwrap();
        Ok(nodes.get(&part).map_or_else(Vec::new, |s| {
            s.range(from.to_vec()..to.to_vec())
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    fn apply(&self, part: u16, ops: KeyOps) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().unwrap();
        let space = nodes.entry(part).or_default();
        for (k, v) in ops {
            match v {
                Some(v) => space.insert(k, v),
                None => space.remove(&k),
            };
        }
        Ok(())
    }
}

impl Side for Mem {
    fn node(&self, part: u16, prefix: &str) -> Result<Node, StoreError> {
        Tree::new(self).node(part, prefix)
    }

    fn children(
        &self,
        part: u16,
        prefix: &str,
        range: (Bound<&str>, Bound<&str>),
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        Tree::new(self).children(part, prefix, range.0, range.1, limit)
    }

    fn events(&self, _: u16, path: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .events
            .get(path)
            .map_or_else(Vec::new, |s| s.iter().cloned().collect()))
    }

    /// Every name under `prefix` in one page (`after` is not asked here).
    fn names_under(
        &self,
        _: u16,
        prefix: &str,
        _after: Option<&[u8]>,
    ) -> Result<NamesPage, StoreError> {
        let names = self
            .events
            .iter()
            .filter(|(path, _)| crate::model::path::covers(prefix, path))
            .flat_map(|(_, names)| names.iter().cloned())
            .collect();
        Ok(NamesPage { names, next: None })
    }
}

impl Mem {
    /// Folds `names` in batches of the given sizes (cycled).
    fn fold(&mut self, names: &[Vec<u8>], batches: &[usize]) {
        for name in names {
            let path = tree::path_of(name).unwrap().to_string();
            self.events.entry(path).or_default().insert(name.clone());
        }
        let mut at = 0;
        let mut cursor = 0;
        for size in batches.iter().cycle() {
            if at >= names.len() {
                break;
            }
            let end = (at + size.max(&1)).min(names.len());
            cursor += 1;
            Tree::new(self).add(0, &names[at..end], cursor).unwrap();
            at = end;
        }
    }
}

/// xorshift64*: names drawn from a seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An event name on a path of 1–4 segments from a few choices each
    /// (so paths share prefixes and wide prefixes occur), one of three
    /// writers, a random time and digest.
    fn name(&mut self) -> Vec<u8> {
        let depth = 1 + self.next() % 4;
        let mut path = String::new();
        for level in 0..depth {
            if level > 0 {
                path.push('/');
            }
            // The first level is wide (many children under the root).
            let choices = if level == 0 { 200 } else { 5 };
            path.push_str(&format!("s{}", self.next() % choices));
        }
        let mut name = path.into_bytes();
        name.push(0);
        name.extend_from_slice(&(self.next() % 1_000_000).to_be_bytes());
        name.extend_from_slice([b"a", b"b", b"c"][(self.next() % 3) as usize]);
        name.push(0);
        name.extend_from_slice(&self.next().to_le_bytes());
        name.extend_from_slice(&self.next().to_le_bytes());
        name
    }
}

fn names(draw: &mut Draw, n: usize) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    while out.len() < n {
        out.insert(draw.name());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_diff_finds_exactly_what_each_side_lacks_and_any_batches_fold_to_one_tree(
        seed in 1u64..u64::MAX,
        common in 0usize..5000,
        only_a in 0usize..2500,
        only_b in 0usize..2500,
        batches in proptest::collection::vec(1usize..500, 1..8),
    ) {
        let mut draw = Draw(seed);
        let all = names(&mut draw, common + only_a + only_b);
        let all: Vec<_> = all.into_iter().collect();
        // Shuffled apart: the first `common` are on both sides.
        let (shared, rest) = all.split_at(common);
        let (a_own, b_own) = rest.split_at(only_a);
        let a_names: Vec<_> = shared.iter().chain(a_own).cloned().collect();
        let mut b_names: Vec<_> = shared.iter().chain(b_own).cloned().collect();
        b_names.reverse();

        let mut a = Mem::default();
        a.fold(&a_names, &batches);
        let mut b = Mem::default();
        b.fold(&b_names, &[b_names.len().max(1)]);

        // Incremental = all at once, node by node.
        let mut a_once = Mem::default();
        a_once.fold(&a_names, &[a_names.len().max(1)]);
        let strip = |m: &Mem| -> Space {
            let mut s = m.nodes.lock().unwrap().get(&0).cloned().unwrap_or_default();
            s.remove(b"c".as_slice());
            s
        };
        prop_assert_eq!(strip(&a), strip(&a_once));
        // The root is the plain sum of the events.
        let mut plain = Fingerprint::EMPTY;
        for n in &a_names {
            plain.add(&Fingerprint::of(n));
        }
        prop_assert_eq!(Tree::new(&a).node(0, "").unwrap().subtree, plain);

        let walk = diff(&a, &b, 0, "").unwrap();
        let left: BTreeSet<_> = walk.only_left.iter().cloned().collect();
        let right: BTreeSet<_> = walk.only_right.iter().cloned().collect();
        prop_assert_eq!(left.len(), walk.only_left.len(), "no event reported twice");
        prop_assert_eq!(right.len(), walk.only_right.len(), "no event reported twice");
        prop_assert_eq!(&left, &a_own.iter().cloned().collect::<BTreeSet<_>>());
        prop_assert_eq!(&right, &b_own.iter().cloned().collect::<BTreeSet<_>>());

        // A hand-over finds the same events the left gives, and asks for
        // none back.
        let handed = diff_wanting(&a, &b, 0, "", Want::LeftOnly).unwrap();
        prop_assert!(handed.only_right.is_empty());
        let given: BTreeSet<_> = handed.only_left.iter().cloned().collect();
        prop_assert_eq!(given.len(), handed.only_left.len(), "no event reported twice");
        prop_assert_eq!(given, left);
        prop_assert!(handed.questions <= walk.questions);
        // A pull finds the same events the left lacks, and offers none.
        let pulled = diff_wanting(&a, &b, 0, "", Want::RightOnly).unwrap();
        prop_assert!(pulled.only_left.is_empty());
        let taken: BTreeSet<_> = pulled.only_right.iter().cloned().collect();
        prop_assert_eq!(taken.len(), pulled.only_right.len(), "no event reported twice");
        prop_assert_eq!(taken, right);
        prop_assert!(pulled.questions <= walk.questions);
    }
}

#[test]
fn a_hand_over_of_a_small_copy_does_not_walk_what_only_the_other_side_holds() {
    // The right holds 20k events; the left a copy of 30 of them and 2 of
    // its own.
    let mut draw = Draw(5);
    let all: Vec<_> = names(&mut draw, 20_002).into_iter().collect();
    let mut right = Mem::default();
    right.fold(&all[2..], &[4096]);
    let copy: Vec<_> = all[..32].to_vec();
    let mut left = Mem::default();
    left.fold(&copy, &[32]);
    let both = diff(&left, &right, 0, "").unwrap();
    let handed = diff_wanting(&left, &right, 0, "", Want::LeftOnly).unwrap();
    let mut given = handed.only_left.clone();
    given.sort();
    assert_eq!(given, all[..2].to_vec());
    assert!(handed.only_right.is_empty());
    assert_eq!(both.only_right.len(), 20_000 - 30);
    // Far fewer questions than a walk that lists what the right holds.
    assert!(
        handed.questions * 10 < both.questions,
        "{} against {}",
        handed.questions,
        both.questions
    );
}

#[test]
fn a_side_holding_nothing_is_answered_by_lists_not_by_a_walk() {
    let mut draw = Draw(9);
    let all: Vec<_> = names(&mut draw, 20_000).into_iter().collect();
    let mut full = Mem::default();
    full.fold(&all, &[4096]);
    let empty = Mem::default();
    // Empty on the left: the right's names are listed (one question here,
    // where `Mem` answers a subtree in one page), not walked node by node.
    let walk = diff(&empty, &full, 0, "").unwrap();
    assert!(walk.only_left.is_empty());
    assert_eq!(walk.only_right, all);
    assert_eq!(walk.questions, 2, "{:?}", walk.questions);
    // Empty on the right: the left lists its own, asking nothing more.
    let walk = diff(&full, &empty, 0, "").unwrap();
    assert_eq!(walk.only_left, all);
    assert_eq!(walk.questions, 1);
    // Empty below one child only: that subtree is listed, the rest walked.
    let cut: Vec<_> = all
        .iter()
        .filter(|n| !tree::path_of(n).unwrap().starts_with("s7"))
        .cloned()
        .collect();
    let mut most = Mem::default();
    most.fold(&cut, &[4096]);
    let walk = diff(&most, &full, 0, "").unwrap();
    let missing: Vec<_> = all.iter().filter(|n| !cut.contains(n)).cloned().collect();
    let mut found = walk.only_right.clone();
    found.sort();
    assert_eq!(found, missing);
    assert!(walk.questions < 40, "{}", walk.questions);
}

/// 20k events on side a, all but the first on side b.
fn one_missing() -> (Vec<Vec<u8>>, Mem, Mem) {
    let mut draw = Draw(7);
    let all: Vec<_> = names(&mut draw, 20_000).into_iter().collect();
    let mut a = Mem::default();
    a.fold(&all, &[4096]);
    let mut b = Mem::default();
    b.fold(&all[1..], &[4096]);
    (all, a, b)
}

#[test]
fn one_difference_among_many_is_found_without_reading_everything() {
    let (all, a, b) = one_missing();
    let walk = diff(&a, &b, 0, "").unwrap();
    assert_eq!(walk.only_left, vec![all[0].clone()]);
    assert!(walk.only_right.is_empty());
    // Far below listing 20k events (or the 200 children of the root).
    assert!(walk.bytes < 4_000, "{walk:?}");
    assert!(walk.questions < 30, "{walk:?}");
}

#[test]
fn equal_trees_cost_one_question() {
    let mut draw = Draw(11);
    let all: Vec<_> = names(&mut draw, 1000).into_iter().collect();
    let mut a = Mem::default();
    a.fold(&all, &[100]);
    let mut b = Mem::default();
    b.fold(&all, &[999]);
    let walk = diff(&a, &b, 0, "").unwrap();
    assert_eq!(
        walk,
        Walk {
            questions: 1,
            bytes: 48,
            ..Walk::default()
        }
    );
}

/// A side that answers as a peer link carries fingerprints: cut to 128
/// bits.
struct Truncating<'a>(&'a Mem);

impl Side for Truncating<'_> {
    fn node(&self, part: u16, prefix: &str) -> Result<Node, StoreError> {
        let n = self.0.node(part, prefix)?;
        Ok(Node {
            subtree: n.subtree.truncated(),
            own: n.own.truncated(),
        })
    }

    fn children(
        &self,
        part: u16,
        prefix: &str,
        range: (Bound<&str>, Bound<&str>),
        limit: usize,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        Ok(self
            .0
            .children(part, prefix, range, limit)?
            .into_iter()
            .map(|(s, fp)| (s, fp.truncated()))
            .collect())
    }

    fn events(&self, part: u16, path: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.0.events(part, path)
    }

    fn names_under(
        &self,
        part: u16,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> Result<NamesPage, StoreError> {
        self.0.names_under(part, prefix, after)
    }
}

#[test]
fn a_side_with_truncated_fingerprints_costs_no_more_than_a_full_one() {
    let (all, a, b) = one_missing();
    let full = diff(&a, &b, 0, "").unwrap();
    let cut = diff(&Truncating(&a), &b, 0, "").unwrap();
    assert_eq!(cut.only_left, vec![all[0].clone()]);
    assert!(cut.only_right.is_empty());
    assert_eq!((cut.questions, cut.bytes), (full.questions, full.bytes));
}

#[test]
fn children_only_the_other_side_holds_cost_one_question_each_not_two() {
    // The left holds one event; the right holds it and one under each of
    // 100 more children of the root: a pull lists each of those at once,
    // without asking for its node first.
    let mut draw = Draw(11);
    let shared = draw.name();
    let theirs: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let mut name = format!("only{i}").into_bytes();
            name.push(0);
            name.extend_from_slice(&draw.next().to_be_bytes());
            name.extend_from_slice(b"a");
            name.push(0);
            name.extend_from_slice(&draw.next().to_le_bytes());
            name.extend_from_slice(&draw.next().to_le_bytes());
            name
        })
        .collect();
    let mut left = Mem::default();
    left.fold(std::slice::from_ref(&shared), &[1]);
    let mut right = Mem::default();
    let all: Vec<Vec<u8>> = std::iter::once(shared)
        .chain(theirs.iter().cloned())
        .collect();
    right.fold(&all, &[all.len()]);
    let pulled = diff_wanting(&left, &right, 0, "", Want::RightOnly).unwrap();
    let got: BTreeSet<_> = pulled.only_right.iter().cloned().collect();
    assert_eq!(got, theirs.iter().cloned().collect::<BTreeSet<_>>());
    assert!(pulled.questions <= 105, "{} questions", pulled.questions);
}
