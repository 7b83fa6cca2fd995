//! History compaction on a running node: what a retention keeps, reads
//! before it answered `Compacted`, nothing inside the window lost under
//! concurrent writes, dropped events kept out of the merkle tree and not
//! brought back by a merge.

use std::time::{Duration, Instant};

use super::*;
use crate::config::Durability;
use crate::merkle::Fingerprint;
use crate::store::event_name;
use crate::WriteStatus;

const S: u64 = 1_000_000;
/// 2023-11-14: far more than a day ago.
const T0: u64 = 1_700_000_000_000_000;

fn node_with(dir: &std::path::Path, keep_versions: Option<usize>, keep_days: Option<u64>) -> Node {
    let mut config = Config::new(dir);
    config.durability = Durability::Lazy;
    config.partitions = 4;
    // A short log: events leave it (and may be compacted) soon.
    config.log_retention = 8;
    config.history_keep_versions = keep_versions;
    config.history_keep_days = keep_days;
    config.compaction_interval = Duration::from_millis(20);
    Node::open(config).unwrap()
}

async fn write_at(node: &Node, path: &str, time: u64, value: &str) -> WriteReport {
    node.write(Write {
        path: Some(Path::parse_key(path).unwrap()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        time: Some(time),
        ..Write::default()
    })
    .await
    .unwrap()
}

fn times(node: &Node, path: &str) -> Vec<u64> {
    node.history(
        path,
        HistoryRange {
            limit: 100_000,
            ..HistoryRange::default()
        },
    )
    .unwrap()
    .iter()
    .map(|s| s.event.version.time)
    .collect()
}

/// Writes to other paths until `done` holds (log entries move on, so
/// events leave the log and compaction may take them), or panics.
async fn until(node: &Node, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0u64;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        node.set(&format!("filler/{}", i % 7), "f").await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The merkle fingerprint of `path`'s events, from its history.
fn held_fingerprint(node: &Node, path: &str) -> Fingerprint {
    let mut fp = Fingerprint::EMPTY;
    let p = Path::parse_key(path).unwrap();
    for s in node
        .history_of(
            &p,
            HistoryRange {
                limit: 100_000,
                ..HistoryRange::default()
            },
        )
        .unwrap()
    {
        fp.add(&Fingerprint::of(&event_name(
            &p,
            &s.event.version,
            &s.digest,
        )));
    }
    fp
}

#[test]
fn keep_versions_drops_older_events_and_reads_before_them_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), Some(3), None);
    actix::System::new().block_on(async {
        for i in 0..40 {
            write_at(&node, "c/y", T0 + i * S, &format!("v{i}")).await;
        }
        until(&node, "c/y to keep 3 events", || {
            times(&node, "c/y").len() == 3
        })
        .await;
        let kept = T0 + 37 * S;
        assert_eq!(times(&node, "c/y"), [kept, T0 + 38 * S, T0 + 39 * S]);
        // The latest value stands; reads inside what is kept are exact.
        let latest = node.get("c/y").unwrap().unwrap();
        assert_eq!(latest.event.value.as_deref(), Some(&b"v39"[..]));
        let at = node.get_at("c/y", kept + 1).unwrap().unwrap();
        assert_eq!(at.event.value.as_deref(), Some(&b"v37"[..]));
        // Before it: not a wrong answer, but `Compacted` naming the oldest
        // time still known.
        match node.get_at("c/y", T0 + 10 * S) {
            Err(NodeError::Compacted { oldest, .. }) => assert_eq!(oldest, kept),
            other => panic!("expected Compacted, got {other:?}"),
        }
        let from = HistoryRange {
            from: T0 + S,
            ..HistoryRange::default()
        };
        assert!(matches!(
            node.history("c/y", from),
            Err(NodeError::Compacted { .. })
        ));
        assert!(matches!(
            node.playback("c", T0, None),
            Err(NodeError::Compacted { .. })
        ));
        // An old event merged again (anti-entropy from a replica that has
        // not compacted, an import) is not brought back.
        let again = Event {
            path: Path::parse_key("c/y").unwrap(),
            version: Version::new(T0 + 5 * S, node.node_id().clone()),
            // (Not the event written then: that one the partition may
            // still remember as applied.)
            value: Some(Bytes::from_static(b"v5, again")),
            content_type: None,
            expires_at: None,
            author: None,
        };
        let merged = node.merge(again).await.unwrap();
        assert_eq!(merged.status, WriteStatus::TooLate);
        assert_eq!(times(&node, "c/y").len(), 3, "not stored");
        // The merkle tree holds exactly what is kept.
        let p = Path::parse_key("c/y").unwrap();
        let want = held_fingerprint(&node, "c/y");
        until(&node, "the tree to drop the compacted events", || {
            node.digest(&p, 0).unwrap().fingerprint == want
        })
        .await;
        assert!(node.stats().compacted.load(Ordering::Relaxed) >= 37);
    });
}

#[test]
fn keep_days_keeps_the_window_and_the_value_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), None, Some(1));
    actix::System::new().block_on(async {
        // Old events (2023), then recent ones (stamped by the clock).
        for i in 0..10 {
            write_at(&node, "d/x", T0 + i * S, &format!("old{i}")).await;
        }
        let start = wall_micros();
        for i in 0..5 {
            node.set("d/x", format!("new{i}")).await.unwrap();
        }
        until(&node, "d/x to keep one old event", || {
            times(&node, "d/x").len() == 6
        })
        .await;
        let kept = times(&node, "d/x");
        assert_eq!(kept[0], T0 + 9 * S, "the value as the window starts");
        assert!(kept[1..].iter().all(|t| *t >= start), "{kept:?}");
        // The value as it stood a moment before the recent writes is known.
        let before = node.get_at("d/x", start - 1).unwrap().unwrap();
        assert_eq!(before.event.value.as_deref(), Some(&b"old9"[..]));
        assert!(matches!(
            node.get_at("d/x", T0 + 3 * S),
            Err(NodeError::Compacted { .. })
        ));
        // A path whose whole history is old keeps its latest value.
        for i in 0..6 {
            write_at(&node, "d/old", T0 + i * S, "o").await;
        }
        until(&node, "d/old to keep its latest", || {
            times(&node, "d/old").len() == 1
        })
        .await;
        assert_eq!(times(&node, "d/old"), [T0 + 5 * S]);
    });
}

#[test]
fn compaction_under_concurrent_writes_loses_nothing_inside_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let keep = 20;
    let node = node_with(dir.path(), Some(keep), None);
    actix::System::new().block_on(async {
        // Four writers, ten paths, 1,200 writes while compaction runs.
        let writers = (0..4).map(|w| {
            let node = node.clone();
            async move {
                let mut written = Vec::new();
                for i in 0..300 {
                    let path = format!("w/{}", (i + w) % 10);
                    let r = node.set(&path, format!("{w}-{i}")).await.unwrap();
                    written.push((path, r.version));
                }
                written
            }
        });
        let mut by_path: std::collections::BTreeMap<String, Vec<Version>> = Default::default();
        for written in futures_util::future::join_all(writers).await {
            for (path, version) in written {
                by_path.entry(path).or_default().push(version);
            }
        }
        until(&node, "every path to be compacted", || {
            by_path.keys().all(|p| times(&node, p).len() <= keep)
        })
        .await;
        for (path, mut versions) in by_path {
            versions.sort();
            let newest = &versions[versions.len() - keep..];
            let p = Path::parse_key(&path).unwrap();
            let held: Vec<Version> = node
                .history_of(
                    &p,
                    HistoryRange {
                        limit: 100_000,
                        ..HistoryRange::default()
                    },
                )
                .unwrap()
                .into_iter()
                .map(|s| s.event.version)
                .collect();
            assert_eq!(
                held, newest,
                "{path}: the newest {keep} events, all of them"
            );
        }
    });
}

#[test]
fn an_expiry_is_never_the_cut_that_drops_the_value_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), Some(2), None);
    actix::System::new().block_on(async {
        write_at(&node, "x/v", T0 - S, "before").await;
        // Lives 10 s (long ago): its expiry is written at once.
        node.write(Write {
            ttl_secs: Some(10),
            ..Write {
                path: Some(Path::parse_key("x/v").unwrap()),
                value: Some(Bytes::from_static(b"e")),
                time: Some(T0),
                ..Write::default()
            }
        })
        .await
        .unwrap();
        until(&node, "the expiry", || times(&node, "x/v").len() == 3).await;
        write_at(&node, "x/v", T0 + 20 * S, "after").await;
        // The newest two are "after" and the expiry; the value the expiry
        // ends stays, so the time it stood is still answered.
        until(&node, "x/v compacted", || times(&node, "x/v").len() == 3).await;
        assert_eq!(times(&node, "x/v"), [T0, T0 + 1, T0 + 20 * S]);
        let then = node.get_at("x/v", T0 + 5 * S).unwrap().unwrap();
        assert_eq!(then.event.value.as_deref(), Some(&b"e"[..]));
        assert!(
            node.get_at("x/v", T0 + 15 * S).unwrap().is_none(),
            "expired then"
        );
        assert!(matches!(
            node.get_at("x/v", T0 - 1),
            Err(NodeError::Compacted { .. })
        ));
        // Before its oldest event (dropped), nothing stood: that is known.
        assert!(node.get_at("x/v", T0 - 2 * S).unwrap().is_none());
    });
}

#[test]
fn a_hot_path_whose_history_is_still_in_the_log_does_not_hold_up_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Lazy;
    config.partitions = 1; // one partition: "a/hot" is swept before "b/old"
    config.log_retention = 350;
    config.history_keep_versions = Some(1);
    config.compaction_interval = Duration::from_millis(20);
    let node = Node::open(config).unwrap();
    actix::System::new().block_on(async {
        for i in 0..100 {
            write_at(&node, "b/old", T0 + i * S, "b").await;
        }
        // 300 versions of a hot path, every one still in the log: dozens
        // of pages compaction must look past without dropping anything.
        for i in 0..300 {
            write_at(&node, "a/hot", T0 + 1000 * S + i * S, "a").await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.merkle_unfolded() > 0 {
            assert!(Instant::now() < deadline, "the trees never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // More writes of the hot path trim the log now that the trees have
        // it all: the log's first record (b/old's events, a/hot's first
        // ones) goes; the hundreds of later a/hot events stay in the log.
        for i in 0..400 {
            write_at(&node, "a/hot", T0 + 2000 * S + i * S, "a").await;
        }
    });
    // No more writes: only the sweep can shrink b/old now.
    let deadline = Instant::now() + Duration::from_secs(20);
    while times(&node, "b/old").len() == 100 {
        assert!(
            Instant::now() < deadline,
            "b/old was never compacted: the sweep is stuck on a/hot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        times(&node, "a/hot").len() > 1,
        "a/hot's events are still in the log"
    );
}

#[test]
fn an_expired_values_space_is_reclaimed_once_its_expiry_left_the_log_whatever_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    // No retention rule: history is kept whole, but for expired values.
    let node = node_with(dir.path(), None, None);
    let p = Path::parse_key("t/old").unwrap();
    actix::System::new().block_on(async {
        write_at(&node, "t/old", T0, "first").await;
        // Lived one second, long ago: expired as soon as it is written.
        node.write(Write {
            ttl_secs: Some(1),
            ..Write {
                path: Some(p.clone()),
                value: Some(Bytes::from_static(b"brief")),
                time: Some(T0 + S),
                ..Write::default()
            }
        })
        .await
        .unwrap();
        // A value that expired, then was written again: kept whole.
        node.write(Write {
            ttl_secs: Some(1),
            ..Write {
                path: Some(Path::parse_key("t/back").unwrap()),
                value: Some(Bytes::from_static(b"brief")),
                time: Some(T0),
                ..Write::default()
            }
        })
        .await
        .unwrap();
        until(&node, "t/back's expiry", || {
            times(&node, "t/back").len() == 2
        })
        .await;
        write_at(&node, "t/back", T0 + 5 * S, "again").await;
        // The expiry (version: the value's plus 1 µs) stays, and only it.
        until(&node, "t/old's space reclaimed", || {
            times(&node, "t/old") == [T0 + S + 1]
        })
        .await;
        let kept = node.history("t/old", HistoryRange::default()).unwrap();
        let expiry = &kept[0];
        assert!(expiry.event.is_deleted());
        let expired_at = expiry.event.expires_at.unwrap();
        assert_eq!(expired_at, T0 + 2 * S);
        // While it stood the value is no longer known: said, not guessed.
        match node.get_at("t/old", T0 + S + S / 2) {
            Err(NodeError::Compacted { oldest, .. }) => assert_eq!(oldest, expired_at),
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(node.get_at("t/old", expired_at).unwrap().is_none());
        // Before its first event nothing stood: known still.
        assert!(node.get_at("t/old", T0 - 1).unwrap().is_none());
        // The merkle tree holds exactly what is kept.
        let want = held_fingerprint(&node, "t/old");
        until(&node, "the tree to drop the reclaimed events", || {
            node.digest(&p, 0).unwrap().fingerprint == want
        })
        .await;
        assert!(node.stats().compacted.load(Ordering::Relaxed) >= 2);
        // Sweeps went on since; the path written again kept its history.
        let sweeps = node.stats().compaction_sweeps.load(Ordering::Relaxed);
        until(&node, "two more sweeps", || {
            node.stats().compaction_sweeps.load(Ordering::Relaxed) >= sweeps + 2
        })
        .await;
        assert_eq!(times(&node, "t/back"), [T0, T0 + 1, T0 + 5 * S]);
    });
    node.shutdown();
    drop(node);
    // A restarted node holds what was reclaimed as reclaimed.
    let node = node_with(dir.path(), None, None);
    assert_eq!(times(&node, "t/old"), [T0 + S + 1]);
    assert!(matches!(
        node.get_at("t/old", T0 + S),
        Err(NodeError::Compacted { .. })
    ));
}

#[test]
fn a_late_event_older_than_all_that_was_dropped_is_kept_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), Some(3), None);
    actix::System::new().block_on(async {
        for i in 10..20 {
            write_at(&node, "l/x", T0 + i * S, &format!("v{i}")).await;
        }
        until(&node, "l/x to keep 3 events", || {
            times(&node, "l/x").len() == 3
        })
        .await;
        let late = |time: u64, value: &'static str| Event {
            path: Path::parse_key("l/x").unwrap(),
            version: Version::new(time, NodeId::new("other").unwrap()),
            value: Some(Bytes::from_static(value.as_bytes())),
            content_type: None,
            expires_at: None,
            author: None,
        };
        // Inside what was dropped: not brought back.
        let merged = node.merge(late(T0 + 12 * S, "inside")).await.unwrap();
        assert_eq!(merged.status, WriteStatus::TooLate);
        assert_eq!(times(&node, "l/x").len(), 3);
        // Older than every event dropped (anti-entropy from a replica, an
        // import): history before the path's dropped span, still exact.
        let merged = node.merge(late(T0 + 5 * S, "older")).await.unwrap();
        assert_eq!(merged.status, WriteStatus::TooLate);
        assert_eq!(times(&node, "l/x")[0], T0 + 5 * S);
        let then = node.get_at("l/x", T0 + 6 * S).unwrap().unwrap();
        assert_eq!(then.event.value.as_deref(), Some(&b"older"[..]));
        assert!(node.get_at("l/x", T0 + 4 * S).unwrap().is_none());
        assert!(matches!(
            node.get_at("l/x", T0 + 12 * S),
            Err(NodeError::Compacted { .. })
        ));
    });
}
