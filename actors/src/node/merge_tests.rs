//! Stamp and merge: a foreign event is merged by the LWW rule through its
//! partition, every event (a late one too) gets a change-log entry, and a
//! node that merges another's log in order holds the same latest values and
//! histories.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use proptest::prelude::*;

use super::*;
use crate::config::Durability;
use crate::model::Version;
use crate::{StreamItem, WriteStatus};

fn node_in(dir: &std::path::Path, id: &str) -> Node {
    let mut config = Config::new(dir);
    config.node_id = Some(id.into());
    config.durability = Durability::Lazy;
    config.partitions = 4;
    Node::open(config).unwrap()
}

fn foreign(path: &str, time: u64, value: Option<&str>) -> Event {
    Event {
        path: Path::parse_key(path).unwrap(),
        version: Version::new(time, NodeId::new("elsewhere").unwrap()),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        content_type: Some(Arc::from("text/plain")),
        expires_at: None,
        author: Some(Arc::from("bob")),
    }
}

/// Everything a node holds of `path`: its history as (version, digest,
/// value), and its latest event.
type Held = (Vec<(Version, [u8; 16], Option<Bytes>)>, Option<Version>);

fn held(node: &Node, path: &str) -> Held {
    let history = node
        .history(
            path,
            HistoryRange {
                limit: 100_000,
                ..HistoryRange::default()
            },
        )
        .unwrap()
        .into_iter()
        .map(|s| (s.event.version, s.digest, s.event.value))
        .collect();
    let latest = node
        .inner
        .store
        .latest(&Path::parse_key(path).unwrap())
        .unwrap()
        .map(|s| s.event.version);
    (history, latest)
}

#[test]
fn a_merged_event_is_new_existing_or_too_late_and_only_a_new_one_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_in(dir.path(), "here");
    actix::System::new().block_on(async {
        let mut stream = node.subscribe("m", None).unwrap();
        assert!(matches!(
            stream.next().await,
            Some(StreamItem::Ready { .. })
        ));

        let newer = foreign("m/x", 2_000, Some("two"));
        let report = node.merge(newer.clone()).await.unwrap();
        assert_eq!(report.status, WriteStatus::New);
        assert_eq!(
            report.version, newer.version,
            "the version is kept, not stamped"
        );
        let first_seq = report.seq.expect("a seq");
        match stream.next().await {
            Some(StreamItem::Update(change)) => {
                assert_eq!(change.event.version.node.as_str(), "elsewhere");
                assert_eq!(change.seq, first_seq);
            }
            other => panic!("expected the merged value, got {other:?}"),
        }
        // Merging it again changes nothing.
        let again = node.merge(newer.clone()).await.unwrap();
        assert_eq!((again.status, again.seq), (WriteStatus::Existing, None));
        // An older one joins history, with a seq of its own, unseen by
        // subscribers.
        let older = foreign("m/x", 1_000, Some("one"));
        let late = node.merge(older.clone()).await.unwrap();
        assert_eq!(late.status, WriteStatus::TooLate);
        assert_eq!(late.current, Some(newer.version.clone()));
        let late_seq = late.seq.expect("a late event has a seq too");
        assert_eq!(late_seq, first_seq + 1);
        assert_eq!(
            node.merge(older).await.unwrap().status,
            WriteStatus::Existing
        );
        // The next change streamed is the next value, after the late seq.
        let next = node.set("m/y", "after").await.unwrap();
        match stream.next().await {
            Some(StreamItem::Update(change)) => assert_eq!(change.seq, next.seq.unwrap()),
            other => panic!("the late event must not be streamed: {other:?}"),
        }
        assert_eq!(next.seq, Some(late_seq + 1));
        // The log has all three, the late one marked.
        let log: Vec<(u64, bool)> = node
            .log_after(first_seq - 1, 10)
            .unwrap()
            .iter()
            .map(|s| (s.seq.unwrap(), s.late))
            .collect();
        assert_eq!(
            log,
            vec![(first_seq, false), (late_seq, true), (late_seq + 1, false)]
        );
        // A resume cursor taken before the late event replays only values.
        let cursor = format!("{}:{}", node.incarnation(), first_seq);
        let mut resumed = node.subscribe("m", Some(&cursor)).unwrap();
        match resumed.next().await {
            Some(StreamItem::Update(change)) => assert_eq!(change.event.path.as_str(), "m/y"),
            other => panic!("expected m/y replayed, got {other:?}"),
        }
        assert!(matches!(
            resumed.next().await,
            Some(StreamItem::Ready { .. })
        ));
    });
    node.shutdown();
}

#[test]
fn a_late_client_write_gets_a_seq_and_a_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_in(dir.path(), "here");
    actix::System::new().block_on(async {
        let now = node.set("l/x", "now").await.unwrap();
        let mut old = Write::set(Path::parse_key("l/x").unwrap(), "old");
        old.time = Some(10);
        let late = node.write(old).await.unwrap();
        assert_eq!(late.status, WriteStatus::TooLate);
        assert_eq!(late.seq, Some(now.seq.unwrap() + 1));
        let logged = node.log_after(now.seq.unwrap(), 10).unwrap();
        assert_eq!(logged.len(), 1);
        assert!(logged[0].late);
        assert_eq!(logged[0].event.value.as_deref(), Some(&b"old"[..]));
    });
    node.shutdown();
}

/// One step of a random history: a path (of three), an explicit time or
/// the clock, a value or a delete.
fn arb_step() -> impl Strategy<Value = (usize, Option<u64>, Option<u8>)> {
    (
        0usize..3,
        prop::option::weighted(0.6, 1u64..40),
        prop::option::weighted(0.85, any::<u8>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Node B merges node A's change log, in order, from the start: it then
    /// holds exactly A's latest values and histories (late events included),
    /// and merging the log again changes nothing.
    #[test]
    fn merging_a_nodes_log_reproduces_its_values_and_histories(
        steps in prop::collection::vec(arb_step(), 1..60)
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (node_in(da.path(), "a"), node_in(db.path(), "b"));
        let paths = ["p/0", "p/1", "q/2"];
        actix::System::new().block_on(async {
            for (p, time, value) in &steps {
                let path = Path::parse_key(paths[*p]).unwrap();
                let mut w = match value {
                    Some(v) => Write::set(path, vec![*v]),
                    None => Write::delete(path),
                };
                w.time = *time;
                a.write(w).await.unwrap();
            }
            let log = a.log_after(0, 100_000).unwrap();
            let seqs: Vec<u64> = log.iter().map(|s| s.seq.unwrap()).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap in A's log");
            for round in 0..2 {
                for stored in &log {
                    let report = b.merge(stored.event.clone()).await.unwrap();
                    if round == 1 {
                        assert_eq!(report.status, WriteStatus::Existing);
                    }
                }
            }
        });
        let expected: BTreeMap<_, _> = paths.iter().map(|p| (*p, held(&a, p))).collect();
        let got: BTreeMap<_, _> = paths.iter().map(|p| (*p, held(&b, p))).collect();
        a.shutdown();
        b.shutdown();
        prop_assert_eq!(got, expected);
    }
}

/// The version times of the log's entries, in seq order.
fn logged_times(node: &Node) -> Vec<u64> {
    node.log_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|s| s.event.version.time)
        .collect()
}

#[test]
fn the_same_late_event_merged_twice_at_once_enters_history_and_the_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_in(dir.path(), "n1");
    actix::System::new().block_on(async {
        node.merge(foreign("a/b", 2000, Some("new"))).await.unwrap();
        // Two copies of an older event arrive together (a peer's push and
        // this node's own fetch of it, say): both are decided before either
        // is committed.
        let late = foreign("a/b", 1000, Some("old"));
        let (x, y) = futures_util::future::join(node.merge(late.clone()), node.merge(late)).await;
        let mut statuses = vec![x.unwrap().status, y.unwrap().status];
        statuses.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(statuses, vec![WriteStatus::Existing, WriteStatus::TooLate]);
    });
    let logged = logged_times(&node);
    assert_eq!(logged, vec![2000, 1000], "one log entry per event");
    assert_eq!(held(&node, "a/b").0.len(), 2);
    node.shutdown();
}

#[test]
fn an_event_overtaken_in_its_own_batch_and_merged_again_enters_the_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_in(dir.path(), "n1");
    actix::System::new().block_on(async {
        // A history [E, N] fetched here while the peer pushes the same
        // [E, N]: E is decided new, N overtakes it, then E comes again.
        let e = foreign("a/c", 1000, Some("e"));
        let n = foreign("a/c", 2000, Some("n"));
        let merges = [e.clone(), n.clone(), e, n].map(|x| node.merge(x));
        for r in futures_util::future::join_all(merges).await {
            r.unwrap();
        }
    });
    let logged = logged_times(&node);
    assert_eq!(logged, vec![1000, 2000], "one log entry per event");
    node.shutdown();
}
