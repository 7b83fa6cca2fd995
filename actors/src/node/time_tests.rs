//! Tests of reading the past: a path and a listing as they stood at a time,
//! across writes, deletes, expiries and events that arrived too late.

use super::*;

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
