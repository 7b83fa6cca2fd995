//! Tests of reading the past: a path and a listing as they stood at a time,
//! across writes, deletes, expiries and events that arrived too late.

use super::*;
use crate::config::Durability;
use crate::StreamItem;

/// Writes `value` (a delete when `None`) at `path` with explicit `time`
/// and an optional time to live.
async fn write_at(node: &Node, path: &str, time: u64, value: Option<&str>, ttl: Option<u64>) {
    let write = Write {
        path: Some(Path::parse_key(path).unwrap()),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        time: Some(time),
        ttl_secs: ttl,
        ..Write::default()
    };
    node.write(write).await.unwrap();
}

fn value_at(node: &Node, path: &str, time: u64) -> Option<String> {
    node.get_at(path, time)
        .unwrap()
        .map(|s| String::from_utf8(s.event.value.unwrap().to_vec()).unwrap())
}

fn listing_at(node: &Node, prefix: &str, time: u64) -> Vec<(String, String)> {
    let prefix = Path::parse(prefix).unwrap();
    node.list_at(&prefix, None, 100, Some(time))
        .unwrap()
        .entries
        .into_iter()
        .map(|s| {
            let value = String::from_utf8(s.event.value.unwrap().to_vec()).unwrap();
            (s.event.path.to_string(), value)
        })
        .collect()
}

const S: u64 = 1_000_000;

#[test]
fn a_path_and_a_listing_read_as_they_stood_before_between_and_after_changes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(Config::new(dir.path())).unwrap();
    actix::System::new().block_on(async {
        write_at(&node, "r/a", 100 * S, Some("a1"), None).await;
        write_at(&node, "r/b", 110 * S, Some("b1"), Some(10)).await; // expires at 120 s
        write_at(&node, "r/a", 130 * S, Some("a2"), None).await;
        write_at(&node, "r/a", 140 * S, None, None).await;
        write_at(&node, "r/c", 150 * S, Some("c1"), None).await;
        // Arrives too late: it still stood between 105 s and 130 s.
        write_at(&node, "r/a", 105 * S, Some("a-late"), None).await;
    });
    // A path.
    assert_eq!(
        value_at(&node, "r/a", 99 * S),
        None,
        "before it was written"
    );
    assert_eq!(value_at(&node, "r/a", 100 * S).as_deref(), Some("a1"));
    assert_eq!(value_at(&node, "r/a", 104 * S).as_deref(), Some("a1"));
    assert_eq!(value_at(&node, "r/a", 105 * S).as_deref(), Some("a-late"));
    assert_eq!(value_at(&node, "r/a", 135 * S).as_deref(), Some("a2"));
    assert_eq!(value_at(&node, "r/a", 140 * S), None, "deleted then");
    assert_eq!(value_at(&node, "r/a", u64::MAX), None, "deleted since");
    assert_eq!(value_at(&node, "r/b", 115 * S).as_deref(), Some("b1"));
    assert_eq!(value_at(&node, "r/b", 120 * S - 1).as_deref(), Some("b1"));
    assert_eq!(value_at(&node, "r/b", 120 * S), None, "expired then");
    // A listing.
    let l = |t| listing_at(&node, "r", t);
    assert_eq!(l(99 * S), vec![]);
    assert_eq!(
        l(112 * S),
        vec![("r/a".into(), "a-late".into()), ("r/b".into(), "b1".into())]
    );
    assert_eq!(l(125 * S), vec![("r/a".into(), "a-late".into())]);
    assert_eq!(l(131 * S), vec![("r/a".into(), "a2".into())]);
    assert_eq!(l(145 * S), vec![]);
    assert_eq!(l(151 * S), vec![("r/c".into(), "c1".into())]);
    // The present through `at` agrees with the plain listing.
    let now = node.list(&Path::parse("r").unwrap(), None, 100).unwrap();
    assert_eq!(now.entries.len(), l(wall_micros()).len());
    // A bad path is refused as by `get`.
    assert!(matches!(node.get_at("a//b", 1), Err(NodeError::BadPath(_))));
}

/// A foreign event at `time` from node `from`.
fn event(path: &str, time: u64, from: &str, value: &str) -> Event {
    Event {
        path: Path::parse_key(path).unwrap(),
        version: Version::new(time, NodeId::new(from).unwrap()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        content_type: None,
        expires_at: None,
        author: None,
    }
}

/// The next item of a session that is not a ping.
async fn next_item(stream: &mut SessionStream) -> StreamItem {
    use futures_util::StreamExt as _;
    loop {
        let item = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("an item before the deadline")
            .expect("the session goes on");
        if !matches!(item, StreamItem::Ping { .. }) {
            return item;
        }
    }
}

#[test]
fn a_playback_sends_every_event_since_a_time_in_version_order_over_many_passes_then_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Lazy;
    config.partitions = 8;
    let node = Node::open(config).unwrap();
    // 9,000 events over 300 paths (more than two passes' worth), merged in
    // an order unlike their versions, so that many arrive too late and
    // join history only; two nodes share times, so ties break by node id.
    let mut expected = Vec::new();
    actix::System::new().block_on(async {
        let mut events = Vec::new();
        for i in 0..9_000u64 {
            let time = S + (i * 7_919) % 9_000 * 10;
            let from = if i % 2 == 0 { "a" } else { "b" };
            events.push(event(&format!("p/{:03}", i % 300), time, from, "x"));
            events.push(event(&format!("p/{:03}", i % 300), time, "c", "y"));
        }
        for chunk in events.chunks(500) {
            for r in
                futures_util::future::join_all(chunk.iter().map(|e| node.merge(e.clone()))).await
            {
                r.unwrap();
            }
        }
        // Outside the prefix, and before `from`: never played.
        node.merge(event("q/1", 2 * S, "a", "no")).await.unwrap();
        let from = S + 30_000;
        for e in &events {
            if e.version.time >= from {
                expected.push((e.version.clone(), e.digest()));
            }
        }
        expected.sort();
        let mut sub = node.playback("p", from, None).unwrap();
        let mut played = Vec::new();
        loop {
            match next_item(&mut sub).await {
                StreamItem::Played(c) => {
                    played.push((c.event.version.clone(), c.event.digest()));
                }
                StreamItem::Ready { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(played.len(), expected.len());
        assert!(
            played == expected,
            "every event since `from`, in version order, once"
        );
        // Live from here.
        node.set("p/live", "now").await.unwrap();
        match next_item(&mut sub).await {
            StreamItem::Update(c) => assert_eq!(c.event.path.as_str(), "p/live"),
            other => panic!("expected the live write, got {other:?}"),
        }

        // Bounded: the events up to `to`, then the end.
        let to = from + 1_000;
        let mut sub = node.playback("p", from, Some(to)).unwrap();
        let mut bounded = Vec::new();
        loop {
            match next_item(&mut sub).await {
                StreamItem::Played(c) => bounded.push(c.event.version.time),
                StreamItem::End { prefix } => {
                    assert_eq!(prefix.as_str(), "p");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let want: Vec<u64> = expected
            .iter()
            .map(|(v, _)| v.time)
            .filter(|t| *t <= to)
            .collect();
        assert_eq!(bounded, want);
    });
}

/// Waits (with a deadline) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn history_of(node: &Node, path: &str) -> Vec<Stored> {
    node.history(path, HistoryRange::default()).unwrap()
}

#[test]
fn an_expiry_reaches_subscribers_once_and_a_restarted_node_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let mut cursor = None;
    {
        let node = Node::open(Config::new(dir.path())).unwrap();
        actix::System::new().block_on(async {
            let mut sub = node.subscribe("e", None).unwrap();
            assert!(matches!(
                next_item(&mut sub).await,
                StreamItem::Ready { .. }
            ));
            // Lives one second from now.
            let w = Write {
                ttl_secs: Some(1),
                ..Write::set(Path::parse_key("e/soon").unwrap(), "brief")
            };
            let written = node.write(w).await.unwrap();
            match next_item(&mut sub).await {
                StreamItem::Update(c) => assert_eq!(c.event.value.as_deref(), Some(&b"brief"[..])),
                other => panic!("expected the write, got {other:?}"),
            }
            // Its expiry comes as a delete.
            let expiry = match next_item(&mut sub).await {
                StreamItem::Update(c) => c,
                other => panic!("expected the expiry, got {other:?}"),
            };
            assert!(expiry.event.is_deleted());
            assert_eq!(expiry.event.path.as_str(), "e/soon");
            assert!(expiry.event.version > written.version);
            cursor = Some(written.seq.unwrap());
            // An expired value read in the past is the value; after, nothing.
            let at = written.version.time + 500_000;
            assert_eq!(
                node.get_at("e/soon", at)
                    .unwrap()
                    .unwrap()
                    .event
                    .value
                    .as_deref(),
                Some(&b"brief"[..])
            );
            let x = expiry.event.expires_at.unwrap();
            assert!(node.get_at("e/soon", x).unwrap().is_none());
            let listed = node
                .list_at(&Path::parse("e").unwrap(), None, 10, Some(at))
                .unwrap();
            assert_eq!(listed.entries.len(), 1, "listed as it stood");
            // Once: a later write of another path comes next, no second
            // delete of this one.
            node.set("e/other", "x").await.unwrap();
            match next_item(&mut sub).await {
                StreamItem::Update(c) => assert_eq!(c.event.path.as_str(), "e/other"),
                other => panic!("expected e/other, got {other:?}"),
            }
            assert_eq!(history_of(&node, "e/soon").len(), 2);
        });
        node.shutdown();
    }
    // A value already expired when it is written (an explicit past time):
    // its expiry is written too, once, and a restart writes none again.
    let node = Node::open(Config::new(dir.path())).unwrap();
    actix::System::new().block_on(async {
        write_at(&node, "e/old", 1_000 * S, Some("gone"), Some(1)).await;
    });
    eventually("the old value's expiry", || {
        history_of(&node, "e/old").len() == 2
    });
    node.shutdown();
    drop(node);
    let node = Node::open(Config::new(dir.path())).unwrap();
    // Whatever the thread did meanwhile, a look at the index now writes
    // nothing: every expiry due was written before the restart.
    let again = actix::System::new().block_on(node.expire_due()).unwrap();
    assert_eq!(again, 0);
    assert_eq!(
        history_of(&node, "e/soon").len(),
        2,
        "no second expiry after a restart"
    );
    assert_eq!(history_of(&node, "e/old").len(), 2);
    // A resume from before the expiry replays it once.
    actix::System::new().block_on(async {
        let since = format!("{}:{}", node.incarnation(), cursor.unwrap());
        let mut sub = node.subscribe("e/soon", Some(&since)).unwrap();
        match next_item(&mut sub).await {
            StreamItem::Update(c) => assert!(c.event.is_deleted()),
            other => panic!("expected the expiry, got {other:?}"),
        }
        assert!(matches!(
            next_item(&mut sub).await,
            StreamItem::Ready { .. }
        ));
    });
}

#[test]
fn playback_and_export_read_big_values_a_bounded_step_at_a_time_and_miss_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Lazy;
    let node = Node::open(config).unwrap();
    let big = "x".repeat(1 << 20);
    actix::System::new().block_on(async {
        // 12 MiB of versions of one path (a pass holds about 4 MiB), and
        // small values of others in between.
        for i in 0..12u64 {
            write_at(&node, "big/one", 100 * S + i * S, Some(&big), None).await;
            write_at(
                &node,
                &format!("big/small{i}"),
                100 * S + i * S + 1,
                Some("s"),
                None,
            )
            .await;
        }
        let mut sub = node.playback("big", 0, None).unwrap();
        let mut times = Vec::new();
        loop {
            match next_item(&mut sub).await {
                StreamItem::Played(c) => times.push(c.event.version.time),
                StreamItem::Ready { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let want: Vec<u64> = (0..12u64)
            .flat_map(|i| [100 * S + i * S, 100 * S + i * S + 1])
            .collect();
        assert_eq!(times, want, "every event once, in version order");
        let mut exported = 0;
        let mut chunks = node.export(&Path::parse("big").unwrap()).unwrap();
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.unwrap();
            let bytes: usize = chunk
                .iter()
                .map(|s| s.event.value.as_ref().map_or(0, |v| v.len()))
                .sum();
            assert!(
                bytes <= 3 << 20,
                "a chunk holds about 1 MiB of values, not {bytes}"
            );
            exported += chunk.len();
        }
        assert_eq!(exported, 24);
    });
}
