//! The trees kept by a running node: folded from its commits (writes,
//! overwrites, deletes and late merges), they agree with a full scan of each
//! partition; they survive a restart without a rebuild, are rebuilt once for
//! a store that lacks them, and the log is never trimmed past them.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{Config, Durability};
use crate::merkle::maintain::TREES_META;
use crate::model::{Event, Layout, NodeId, Path, Version};
use crate::store::{SledStore, Store};
use crate::Node;

fn open(dir: &std::path::Path, retention: u64) -> Node {
    let mut config = Config::new(dir);
    config.node_id = Some("m1".into());
    config.durability = Durability::Lazy;
    config.partitions = 8;
    config.log_retention = retention;
    Node::open(config).unwrap()
}

/// Waits until every partition's root agrees with a full scan of it.
fn settled(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let agree = (0..node.partitions() as u16).all(|p| {
            let scan = node.partition_digest(p).unwrap();
            let root = node.partition_root(p).unwrap();
            root.hash() == scan.hash && root.count == scan.events
        });
        if agree {
            return;
        }
        if Instant::now() >= deadline {
            let report: Vec<_> = (0..node.partitions() as u16)
                .map(|p| {
                    let scan = node.partition_digest(p).unwrap();
                    let root = node.partition_root(p).unwrap();
                    (p, root.count, scan.events, root.hash() == scan.hash)
                })
                .collect();
            panic!("the trees never agreed with a scan: (part, tree, scan, same) {report:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes, overwrites, deletes and a late foreign event over 300 paths.
fn write_some(node: &Node, round: u32) {
    actix::System::new().block_on(async {
        for i in 0..300 {
            node.set(
                &format!("rooms/{}/k{}", i % 17, i % 120),
                format!("v{round}-{i}"),
            )
            .await
            .unwrap();
        }
        for i in 0..20 {
            node.delete(&format!("rooms/{}/k{}", i % 17, i))
                .await
                .unwrap();
        }
        // Older than what the path holds: history only (a late event).
        let late = Event {
            path: Path::parse_key("rooms/1/k1").unwrap(),
            version: Version::new(1 + u64::from(round), NodeId::new("far").unwrap()),
            value: Some(Bytes::from_static(b"late")),
            content_type: None,
            expires_at: None,
            author: None,
        };
        node.merge(late).await.unwrap();
    });
}

#[test]
fn the_trees_follow_commits_and_survive_a_restart_without_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 1);
    settled(&node);
    let all = node.digest(&Path::root(), 0).unwrap();
    let total: u64 = (0..8)
        .map(|p| node.partition_digest(p).unwrap().events)
        .sum();
    assert_eq!(
        all.fingerprint.count, total,
        "the root of roots counts every event"
    );
    node.shutdown();
    drop(node);

    let node = open(dir.path(), 1_000_000);
    settled(&node);
    assert_eq!(
        node.digest(&Path::root(), 0).unwrap(),
        all,
        "the same after a restart"
    );
    write_some(&node, 2);
    settled(&node);
    node.shutdown();
}

#[test]
fn a_store_without_trees_has_them_built_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 1);
    settled(&node);
    let before = node.digest(&Path::root(), 2).unwrap();
    node.shutdown();
    drop(node);
    // As a store of an earlier build: no trees, not marked complete.
    {
        let store = SledStore::open_with(
            dir.path(),
            8 << 20,
            Duration::from_millis(100),
            Layout::new(8, 2).unwrap(),
        )
        .unwrap();
        for p in 0..8 {
            store.merkle_clear(p).unwrap();
        }
        store.remove_meta(TREES_META).unwrap();
        store.flush().unwrap();
    }

    let node = open(dir.path(), 1_000_000);
    // Built before the node serves: no wait.
    assert_eq!(node.digest(&Path::root(), 2).unwrap(), before);
    settled(&node);
    node.shutdown();
}

#[test]
fn the_log_is_not_trimmed_past_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny retention: the log would be trimmed long before the trees,
    // held still, fold it.
    let node = open(dir.path(), 5);
    write_some(&node, 0);
    settled(&node);
    let marks = node.merkle_marks();
    marks.pause(true);
    for round in 1..3 {
        write_some(&node, round);
    }
    assert!(node.merkle_unfolded() >= 600, "{}", node.merkle_unfolded());
    // Had the log been trimmed past the trees meanwhile, they could not
    // catch up (and would never agree with a scan).
    marks.pause(false);
    settled(&node);
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.merkle_unfolded() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} unfolded",
            node.merkle_unfolded()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Trimming goes on once they caught up.
    let part = node.partition_of(&Path::parse("rooms/3").unwrap()) as u16;
    write_some(&node, 3);
    settled(&node);
    assert!(
        node.partition_log(part, 0, 10).unwrap().trimmed,
        "the log of a busy partition is trimmed once the trees have it"
    );
    node.shutdown();
}

#[test]
fn a_prefix_digest_sums_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 1);
    settled(&node);
    let rooms = node.digest(&Path::parse("rooms").unwrap(), 1).unwrap();
    assert_eq!(rooms.children.len(), 17);
    let mut sum = crate::merkle::Fingerprint::EMPTY;
    for child in &rooms.children {
        sum.add(&child.fingerprint);
        // A child read alone agrees with the listing.
        let alone = node
            .digest(&Path::parse(&child.prefix).unwrap(), 0)
            .unwrap();
        assert_eq!(alone.fingerprint, child.fingerprint);
    }
    assert_eq!(sum, rooms.fingerprint);
    assert!(!rooms.truncated);
    node.shutdown();
}

#[test]
fn what_was_committed_and_not_folded_before_a_stop_is_folded_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 0);
    settled(&node);
    // Held still, then stopped: the last writes are in the log only (as
    // after a crash between a commit and its fold).
    node.merkle_marks().pause(true);
    write_some(&node, 1);
    node.shutdown();
    drop(node);
    let node = open(dir.path(), 1_000_000);
    settled(&node);
    node.shutdown();
}

#[test]
fn a_dropped_partition_holds_nothing_and_takes_writes_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 1);
    settled(&node);
    let path = Path::parse_key("rooms/1/k1").unwrap();
    let part = node.partition_of(&path) as u16;
    let others: Vec<_> = (0..8u16)
        .filter(|p| *p != part)
        .map(|p| node.partition_digest(p).unwrap())
        .collect();
    assert!(node.partition_digest(part).unwrap().events > 0);
    let old = || Event {
        path: path.clone(),
        version: Version::new(5, NodeId::new("far").unwrap()),
        value: Some(Bytes::from_static(b"old")),
        content_type: None,
        expires_at: None,
        author: None,
    };
    let kept = actix::System::new().block_on(async {
        // A hot path: the partition knows its current event without a read.
        node.set("rooms/1/k1", "hot").await.unwrap();
        // A write and the drop at once: the write is decided before the
        // drop (and goes with it) or after it (and stays), never half.
        let during = node.set("rooms/1/during", "x");
        let dropped = node.drop_partition(part);
        let (during, dropped) = futures_util::future::join(during, dropped).await;
        during.unwrap();
        dropped.unwrap();
        assert!(node.get("rooms/1/k1").unwrap().is_none());
        let kept = node.get("rooms/1/during").unwrap().is_some();
        assert_eq!(node.partition_bytes(part).unwrap() > 0, kept);
        // An event older than the "hot" one the partition knew is new now:
        // it forgot what the store no longer holds.
        let report = node.merge(old()).await.unwrap();
        assert_eq!(report.status, crate::engine::partition::WriteStatus::New);
        kept
    });
    assert_eq!(
        node.get("rooms/1/k1")
            .unwrap()
            .unwrap()
            .event
            .value
            .as_deref(),
        Some(&b"old"[..])
    );
    // The tree starts again from the drop: it agrees with the partition,
    // which holds the one event (or two), and the others are untouched.
    let held = 1 + u64::from(kept);
    settled(&node);
    assert_eq!(node.partition_root(part).unwrap().count, held);
    let after: Vec<_> = (0..8u16)
        .filter(|p| *p != part)
        .map(|p| node.partition_digest(p).unwrap())
        .collect();
    assert_eq!(after, others);
    node.shutdown();
    drop(node);
    // A restart brings nothing back and needs no rebuild of the trees.
    let node = open(dir.path(), 1_000_000);
    assert_eq!(
        node.meta(TREES_META).unwrap().as_deref(),
        Some(&b"complete"[..])
    );
    assert_eq!(node.partition_digest(part).unwrap().events, held);
    settled(&node);
    node.shutdown();
}

#[test]
fn a_walk_against_a_node_holding_nothing_lists_its_subtrees_in_pages() {
    use crate::cluster::differ::question::{SUBTREE_NAMES, SUBTREE_PATHS};
    use crate::cluster::differ::sides::LocalSide;
    let (full_dir, empty_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = open(full_dir.path(), 1_000_000);
    let empty = open(empty_dir.path(), 1_000_000);
    // More paths than a page holds, in one partition; a few with a history.
    let paths = SUBTREE_PATHS * 2 + 300;
    let part = full.partition_of(&Path::parse("big/x/k0").unwrap()) as u16;
    actix::System::new().block_on(async {
        for i in 0..paths {
            let path = format!("big/x/k{i}");
            assert_eq!(full.partition_of(&Path::parse(&path).unwrap()) as u16, part);
            full.set(&path, "v1").await.unwrap();
            if i % 100 == 0 {
                full.set(&path, "v2").await.unwrap();
            }
        }
    });
    settled(&full);
    let mut all = Vec::new();
    for i in 0..paths {
        all.extend(
            full.event_names(&Path::parse(&format!("big/x/k{i}")).unwrap())
                .unwrap(),
        );
    }
    all.sort();
    assert!(all.len() < SUBTREE_NAMES * 2);
    let (left, right) = (LocalSide { node: empty }, LocalSide { node: full });
    let walk = crate::merkle::diff(&left, &right, part, "").unwrap();
    let mut found = walk.only_right.clone();
    found.sort();
    assert_eq!(found, all, "every event, each once");
    // The root's node, then one list per page of paths.
    assert_eq!(walk.questions, 1 + paths.div_ceil(SUBTREE_PATHS));
    // The other way round, this side lists its own events, asking nothing.
    let back = crate::merkle::diff(&right, &left, part, "big").unwrap();
    assert_eq!(back.only_left.len(), all.len());
    assert_eq!(back.questions, 1);
    left.node.shutdown();
    right.node.shutdown();
}

#[test]
fn a_path_with_a_long_history_is_listed_and_answered_in_pages() {
    use crate::cluster::differ::question::{
        answer, DiffQuestion, DiffReply, EVENT_NAMES_PAGE, SUBTREE_NAMES,
    };
    use crate::cluster::differ::sides::LocalSide;
    let (full_dir, empty_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = open(full_dir.path(), 1_000_000);
    let empty = open(empty_dir.path(), 1_000_000);
    // One path with more versions than a page holds, and a few paths after
    // it.
    let versions = SUBTREE_NAMES + 500;
    let hot = Path::parse("hot/x/k").unwrap();
    let part = full.partition_of(&hot) as u16;
    let writer = NodeId::new("w").unwrap();
    actix::System::new().block_on(async {
        for chunk in (0..versions).collect::<Vec<_>>().chunks(512) {
            let merges = chunk.iter().map(|&i| {
                full.merge(Event {
                    path: hot.clone(),
                    version: Version::new(1_000_000 + i as u64, writer.clone()),
                    value: Some(Bytes::from(format!("v{i}"))),
                    content_type: None,
                    expires_at: None,
                    author: None,
                })
            });
            for r in futures_util::future::join_all(merges).await {
                r.unwrap();
            }
        }
        for i in 0..3 {
            full.set(&format!("hot/x/k/{i}"), "v").await.unwrap();
        }
    });
    settled(&full);
    let all = full.event_names(&hot).unwrap();
    assert_eq!(all.len(), versions);
    // A peer's question about the path is answered a page at a time.
    let mut paged: Vec<Vec<u8>> = Vec::new();
    loop {
        let question = DiffQuestion::Events {
            path: hot.as_str().to_string(),
            after: paged.last().cloned(),
        };
        let Ok(DiffReply::Names(names)) = answer(&full, part, question) else {
            panic!("not names");
        };
        assert!(names.len() <= EVENT_NAMES_PAGE);
        let last_page = names.len() < EVENT_NAMES_PAGE;
        paged.extend(names);
        if last_page {
            break;
        }
    }
    assert_eq!(paged, all, "every name once, in order");
    // A page asked after a name of another path, or after one that does
    // not parse, is refused.
    let other = first_name_of(&full, "hot/x/k/0");
    for after in [other, b"hot/x/k\0short".to_vec()] {
        let question = DiffQuestion::Events {
            path: hot.as_str().to_string(),
            after: Some(after),
        };
        assert!(answer(&full, part, question).is_err());
    }
    let question = DiffQuestion::Subtree {
        prefix: "hot".into(),
        after: Some(b"no order".to_vec()),
    };
    assert!(answer(&full, part, question).is_err());
    // A walk against a node that holds nothing lists them, cut within the
    // path: every event of the partition, each once.
    let (left, right) = (LocalSide { node: empty }, LocalSide { node: full });
    let walk = crate::merkle::diff(&left, &right, part, "").unwrap();
    let mut found = walk.only_right.clone();
    found.sort();
    let mut want = all.clone();
    for i in 0..3 {
        want.extend(
            right
                .node
                .event_names(&Path::parse(&format!("hot/x/k/{i}")).unwrap())
                .unwrap(),
        );
    }
    want.sort();
    assert_eq!(found, want);
    assert_eq!(walk.questions, 1 + (versions + 3).div_ceil(SUBTREE_NAMES));
    left.node.shutdown();
    right.node.shutdown();
}

#[test]
fn a_partition_untouched_since_its_last_fold_counts_as_folded_through_any_seq() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 0);
    settled(&node);
    let written = node.partition_of(&Path::parse("solo/one").unwrap()) as u16;
    let other = (0..8u16).find(|p| *p != written).unwrap();
    // The folder held still while one partition takes writes.
    node.merkle_marks().pause(true);
    actix::System::new().block_on(async {
        for i in 0..10 {
            node.set(&format!("solo/one/{i}"), "v").await.unwrap();
        }
    });
    let head = node.log_head();
    let now = Duration::ZERO;
    assert!(!node.merkle_folded_through(&[written], head, now));
    assert!(
        node.merkle_folded_through(&[other], head, now),
        "nothing of it waits to be folded"
    );
    assert!(!node.merkle_folded_through(&[other, written], head, now));
    node.merkle_marks().pause(false);
    assert!(node.merkle_folded_through(&[written], head, Duration::from_secs(10)));
    node.shutdown();
}

#[test]
fn a_partition_written_after_a_pass_still_counts_as_folded_through_that_pass() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path(), 1_000_000);
    write_some(&node, 0);
    settled(&node);
    // One more write, folded: every other partition's last entry is older
    // than the head now.
    let system = actix::System::new();
    system.block_on(async { node.set("solo/last", "v").await.unwrap() });
    let head = node.log_head();
    let last = node.partition_of(&Path::parse("solo/last").unwrap()) as u16;
    assert!(node.merkle_folded_through(&[last], head, Duration::from_secs(10)));
    let other = (0..8u16).find(|p| *p != last).unwrap();
    let path = (0..)
        .map(|i| format!("other/{i}"))
        .find(|p| node.partition_of(&Path::parse(p).unwrap()) as u16 == other)
        .unwrap();
    // A write to another partition, not folded yet: its tree still holds
    // everything through the head the pass saw.
    node.merkle_marks().pause(true);
    system.block_on(async { node.set(&path, "v").await.unwrap() });
    assert!(node.merkle_folded_through(&[other], head, Duration::ZERO));
    assert!(!node.merkle_folded_through(&[other], node.log_head(), Duration::ZERO));
    node.merkle_marks().pause(false);
    node.shutdown();
}

/// The name of `path`'s first event at `node`.
fn first_name_of(node: &Node, path: &str) -> Vec<u8> {
    node.event_names(&Path::parse(path).unwrap()).unwrap()[0].clone()
}
