//! Tests of opening a node and of its listings.

use super::*;

#[test]
fn a_bad_node_id_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.node_id = Some("not valid!".into());
    match Node::open(config) {
        Err(NodeError::BadConfig(detail)) => assert!(detail.contains("node id"), "{detail}"),
        Err(other) => panic!("expected BadConfig, got {other}"),
        Ok(_) => panic!("a bad node id was accepted"),
    }
}

#[test]
fn a_listing_over_many_tombstones_reads_a_bounded_page_and_says_where_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Lazy;
    let node = Node::open(config).unwrap();
    let dead = LIST_SCAN_SLACK + 50;
    actix::System::new().block_on(async {
        let paths: Vec<String> = (0..dead).map(|i| format!("t/{i:05}")).collect();
        for chunk in paths.chunks(1000) {
            let writes = chunk.iter().map(|p| node.delete(p));
            for report in futures_util::future::join_all(writes).await {
                report.unwrap();
            }
        }
        node.set("t/zzz", "alive").await.unwrap();
    });
    let prefix = Path::parse("t").unwrap();
    let first = node.list(&prefix, None, 10).unwrap();
    assert!(
        first.entries.is_empty(),
        "only tombstones within the scan bound"
    );
    let next = first.next.expect("a page cut short says where to go on");
    let second = node.list(&prefix, Some(&next), 10).unwrap();
    let paths: Vec<_> = second
        .entries
        .iter()
        .map(|s| s.event.path.as_str().to_string())
        .collect();
    assert_eq!(paths, ["t/zzz"]);
    assert_eq!(second.next, None, "the prefix is done");
    node.shutdown();
}

#[test]
fn partition_layout_is_fixed_when_the_store_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.partitions = 8;
    config.shard_depth = 1;
    let node = Node::open(config.clone()).unwrap();
    assert_eq!(node.partitions(), 8);
    let a = Path::parse("rooms/1/x").unwrap();
    let b = Path::parse("rooms/2/y").unwrap();
    assert_eq!(
        node.partition_of(&a),
        node.partition_of(&b),
        "depth 1: same first segment"
    );
    let before = node.partition_of(&a);
    node.shutdown();
    drop(node);

    config.partitions = 64;
    config.shard_depth = 2;
    let node = Node::open(config).unwrap();
    assert_eq!(
        node.partitions(),
        8,
        "an existing store keeps its partition count"
    );
    assert_eq!(node.partition_of(&a), before, "and its shard depth");
    assert_eq!(node.partition_of(&a), node.partition_of(&b));
}

#[test]
fn a_partition_is_read_and_followed_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.partitions = 8;
    config.shard_depth = 1;
    let node = Node::open(config).unwrap();
    assert_eq!(node.layout(), Layout::new(8, 1).unwrap());
    actix::System::new().block_on(async {
        for i in 0..40 {
            node.set(&format!("g{}/k{i}", i % 5), "v").await.unwrap();
        }
    });
    let part = node.partition_of(&Path::parse("g2").unwrap()) as u16;
    let page = node.partition_log(part, 0, 1000).unwrap();
    assert!(!page.trimmed);
    assert!(page
        .entries
        .iter()
        .all(|s| node.partition_of(&s.event.path) == usize::from(part)));
    assert!(page
        .entries
        .iter()
        .any(|s| s.event.path.as_str() == "g2/k2"));
    // Resuming after its first entry gives the rest, and nothing else.
    let first = page.entries[0].seq.unwrap();
    let rest = node.partition_log(part, first, 1000).unwrap();
    assert_eq!(rest.entries.len(), page.entries.len() - 1);
    let latest = node.partition_latest(part, None, 1000).unwrap();
    assert_eq!(latest.len(), page.entries.len());
    assert_eq!(
        node.partition_digest(part).unwrap().events,
        latest.len() as u64
    );
    match node.partition_log(8, 0, 10) {
        Err(NodeError::NoPartition {
            part: 8,
            partitions: 8,
        }) => {}
        other => panic!("expected NoPartition, got {other:?}"),
    }
    assert_eq!(node.log_after(0, 1000).unwrap().len(), 40);
    node.shutdown();
}

#[test]
fn a_log_read_past_the_retention_fails_instead_of_leaving_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.log_retention = 5;
    config.partitions = 4;
    config.shard_depth = 1;
    let node = Node::open(config).unwrap();
    actix::System::new().block_on(async {
        for i in 0..60 {
            node.set(&format!("g{}/k", i % 4), "v").await.unwrap();
        }
    });
    // The log is trimmed only behind the merkle trees (folded in the
    // background): once they hold everything, the next commits trim it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while node.merkle_unfolded() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the trees never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    actix::System::new().block_on(async {
        for i in 0..8 {
            node.set(&format!("g{}/k", i % 4), "w").await.unwrap();
        }
    });
    match node.log_after(0, 1000) {
        Err(NodeError::Store(StoreError::Trimmed { after: 0 })) => {}
        other => panic!("expected Trimmed, got {other:?}"),
    }
    let head = node.head_seq();
    assert_eq!(node.log_after(head - 1, 10).unwrap().len(), 1);
    node.shutdown();
}
