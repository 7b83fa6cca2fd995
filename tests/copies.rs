//! Copies nobody needs, between real nodes (child processes on loopback):
//! a watched copy outlives its last subscriber as a cache bounded by
//! `--copy-cache-mb`, and a partition placement moves away is handed over
//! to its new owner before its copy is dropped.

mod common;

use common::*;

const SECRET: &str = "a-cluster-secret-for-copies";

fn node(id: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--node-id",
        id,
        "--cluster-secret",
        SECRET,
        "--replication",
        "1",
        // Pings often, so a closed stream (and its watch) ends soon.
        "--ping-interval-ms",
        "200",
    ];
    args.extend_from_slice(&FAST_PEERS);
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn partition_of(path: &str) -> usize {
    let layout = spread_actors::Layout::new(64, 2).unwrap();
    usize::from(layout.partition_of(&spread_actors::Path::parse_key(path).unwrap()))
}

/// A prefix `rooms/<i>` whose partition none of `nodes` owns, as `s`
/// places it.
async fn owned_by_none_of(s: &Server, nodes: &[&str]) -> String {
    let view = owners(s).await;
    (0..1000)
        .map(|i| format!("rooms/{i}"))
        .find(|p| {
            let o = &view[partition_of(p)];
            nodes.iter().all(|n| !o.iter().any(|x| x == n))
        })
        .expect("a prefix none of them owns")
}

/// The status and body of a read of `path` at `s` (`local`: its own store).
async fn read(s: &Server, path: &str, local: bool) -> (u16, Vec<u8>) {
    let query = if local { "?local=true" } else { "" };
    let r = get(&format!("{}/raw/{path}{query}", s.url)).await;
    (r.status, r.body.to_vec())
}

#[actix_web::test]
async fn a_watched_copy_outlives_its_subscribers_within_the_bound_and_is_dropped_past_it() {
    // Replication 1: c and d own nothing under the prefix, so what they
    // hold of it is a copy. c keeps no copy nobody needs, d the default.
    let a = node("a", &[]);
    let b = node("b", &["--join", &a.addr]);
    let c = node("c", &["--join", &a.addr, "--copy-cache-mb", "0"]);
    let d = node("d", &["--join", &a.addr]);
    let nodes = vec![a, b, c, d];
    all_alive(&nodes, &ids(&["a", "b", "c", "d"])).await;
    linked(&nodes).await;
    let prefix = owned_by_none_of(&nodes[0], &["c", "d"]).await;
    let mut written = Vec::new();
    for i in 0..10 {
        let path = format!("{prefix}/k{i}");
        let r = put(
            &format!("{}/raw/{path}", nodes[0].url),
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        written.push((path, format!("v{i}")));
    }
    // Watched at c and d: each keeps a copy and answers from it.
    for watcher in [&nodes[2], &nodes[3]] {
        let mut sse = SseClient::open(&format!("{}/sse/{prefix}", watcher.url), None).await;
        let snapshot = sse.until_ready().await;
        assert_eq!(snapshot.len(), written.len() + 1, "{snapshot:?}");
        for (path, body) in &written {
            assert_eq!(
                read(watcher, path, true).await,
                (200, body.clone().into_bytes())
            );
        }
        drop(sse);
        wait_for("the watch ended", EVENT_DEADLINE, async || {
            metric(watcher, "spread_replication_streams{role=\"watching\"}").await == 0.0
        })
        .await;
    }
    // Past c's bound of 0: handed over (nothing the owner lacks) and
    // dropped; c still answers every read, from the owner.
    wait_for("c dropped its copy", EVENT_DEADLINE, async || {
        metric(&nodes[2], "spread_copy_dropped_partitions_total").await >= 1.0
    })
    .await;
    for (path, body) in &written {
        assert_eq!(
            read(&nodes[2], path, true).await.0,
            404,
            "{path} left c's store"
        );
        assert_eq!(
            read(&nodes[2], path, false).await,
            (200, body.clone().into_bytes())
        );
    }
    assert!(metric(&nodes[2], "spread_copy_handovers_total{result=\"ok\"}").await >= 1.0);
    // d's copy is within its bound: handed over, measured, kept.
    wait_for("d handed its copy over", EVENT_DEADLINE, async || {
        metric(&nodes[3], "spread_copy_handovers_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    assert!(metric(&nodes[3], "spread_copy_idle_bytes").await > 0.0);
    assert_eq!(
        metric(&nodes[3], "spread_copy_dropped_partitions_total").await,
        0.0
    );
    for (path, body) in &written {
        assert_eq!(
            read(&nodes[3], path, true).await,
            (200, body.clone().into_bytes())
        );
    }
    // Watched again at c after the drop: the copy is made afresh, whole.
    let r = put(&format!("{}/raw/{prefix}/k0", nodes[1].url), b"again").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    written[0].1 = "again".into();
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[2].url), None).await;
    let mut snapshot = sse.until_ready().await;
    snapshot.pop(); // `ready`
    let mut got: Vec<(String, String)> = snapshot
        .iter()
        .map(|e| {
            (
                e.data["path"].as_str().unwrap().to_string(),
                e.data["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    written.sort();
    assert_eq!(got, written, "c's new snapshot is the whole state");
    for (path, body) in &written {
        assert_eq!(
            read(&nodes[2], path, true).await,
            (200, body.clone().into_bytes())
        );
    }
}

#[actix_web::test]
async fn a_partition_moved_to_a_new_node_gets_every_event_its_former_owner_held() {
    // Replication 1: a partition that moves to a joining node has no
    // co-owner to follow; its former owner hands its events over, then
    // (bound 0) drops them.
    let a = node("a", &["--copy-cache-mb", "0"]);
    let b = node("b", &["--join", &a.addr, "--copy-cache-mb", "0"]);
    let mut nodes = vec![a, b];
    all_alive(&nodes, &ids(&["a", "b"])).await;
    linked(&nodes).await;
    let mut written = Vec::new();
    for i in 0..60 {
        let path = format!("moving/{i}/topic");
        let body = format!("v{i}");
        let r = put(&format!("{}/raw/{path}", nodes[i % 2].url), body.as_bytes()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        written.push((path, body));
    }
    let before = owners(&nodes[0]).await;
    let c = node("c", &["--join", &nodes[0].addr]);
    nodes.push(c);
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    wait_for(
        "placement agrees at every node",
        EVENT_DEADLINE,
        async || {
            let first = owners(&nodes[0]).await;
            first.iter().any(|o| o.contains(&"c".to_string()))
                && owners(&nodes[1]).await == first
                && owners(&nodes[2]).await == first
        },
    )
    .await;
    let after = owners(&nodes[0]).await;
    let moved: Vec<&(String, String)> = written
        .iter()
        .filter(|(p, _)| after[partition_of(p)] == ["c".to_string()])
        .collect();
    assert!(!moved.is_empty(), "some written partition moved to c");
    // Every write stays readable at every node, the moved ones from c's
    // own store once handed over.
    for (path, body) in &moved {
        let url = format!("{}/raw/{path}?local=true", nodes[2].url);
        wait_for(&format!("{path} at c"), EVENT_DEADLINE, async || {
            let r = get(&url).await;
            r.status == 200 && r.body == body.as_bytes()
        })
        .await;
    }
    for s in &nodes {
        for (path, body) in &written {
            assert_eq!(
                read(s, path, false).await,
                (200, body.clone().into_bytes()),
                "{path}"
            );
        }
    }
    // The former owners handed over, then dropped what moved.
    for (path, _) in &moved {
        let former = &before[partition_of(path)][0];
        let s = &nodes[if former == "a" { 0 } else { 1 }];
        let url = format!("{}/raw/{path}?local=true", s.url);
        wait_for(
            &format!("{path} gone from {former}"),
            EVENT_DEADLINE,
            async || get(&url).await.status == 404,
        )
        .await;
    }
    let handed = metric(&nodes[0], "spread_copy_handovers_total{result=\"ok\"}").await
        + metric(&nodes[1], "spread_copy_handovers_total{result=\"ok\"}").await;
    assert!(handed >= 1.0, "{handed}");
}

#[actix_web::test]
async fn a_watched_copy_learns_deletions_it_missed_and_is_compared_with_its_owner_periodically() {
    // c watches a prefix it does not own; its copy outlives the watch, a
    // value is deleted at the owner meanwhile, and the next watch's
    // snapshot carries the deletion (a watch's snapshot holds deleted
    // values too): c's next subscriber never sees the deleted value. With
    // sweeps off, nothing else could have brought it. Then, with sweeps
    // on, the watched subtree is compared with the owner's periodically.
    let sweeps = ["--anti-entropy-interval", "0"];
    let a = node("a", &sweeps);
    let b = node("b", &[&sweeps[..], &["--join", &a.addr]].concat());
    let c = node("c", &[&sweeps[..], &["--join", &a.addr]].concat());
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    let prefix = owned_by_none_of(&nodes[0], &["c"]).await;
    for i in 0..5 {
        let r = put(&format!("{}/raw/{prefix}/k{i}", nodes[0].url), b"v").await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let watch = async || {
        let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[2].url), None).await;
        sse.until_ready().await;
        sse
    };
    let sse = watch().await;
    assert_eq!(read(&nodes[2], &format!("{prefix}/k0"), true).await.0, 200);
    let watching =
        async || metric(&nodes[2], "spread_replication_streams{role=\"watching\"}").await;
    wait_for("the gauge shows the watch", EVENT_DEADLINE, async || {
        watching().await >= 1.0
    })
    .await;
    drop(sse);
    wait_for("the watch ended", EVENT_DEADLINE, async || {
        watching().await == 0.0
    })
    .await;
    let r = send(
        http().delete(format!("{}/raw/{prefix}/k0", nodes[0].url)),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Watched again: the snapshot the copy took brought the deletion.
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[2].url), None).await;
    let mut snapshot = sse.until_ready().await;
    snapshot.pop(); // `ready`
    let paths: Vec<&str> = snapshot
        .iter()
        .map(|e| e.data["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/k0")), "{paths:?}");
    assert_eq!(read(&nodes[2], &format!("{prefix}/k0"), true).await.0, 404);
    for i in 1..5 {
        assert_eq!(
            read(&nodes[2], &format!("{prefix}/k{i}"), true).await.0,
            200
        );
    }
    assert_eq!(
        metric(
            &nodes[2],
            "spread_antientropy_sessions_total{result=\"ok\"}"
        )
        .await,
        0.0,
        "no sweep brought it"
    );
    drop(sse);
    drop(nodes);
    // Sweeps on: the watched subtree is compared with the owner's.
    let sweeps = ["--anti-entropy-interval", "1"];
    let a = node("a", &sweeps);
    let c = node("c", &[&sweeps[..], &["--join", &a.addr]].concat());
    let nodes = vec![a, c];
    all_alive(&nodes, &ids(&["a", "c"])).await;
    linked(&nodes).await;
    let prefix = owned_by_none_of(&nodes[0], &["c"]).await;
    let r = put(&format!("{}/raw/{prefix}/k", nodes[0].url), b"v").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[1].url), None).await;
    sse.until_ready().await;
    wait_for(
        "a sweep of the watched subtree",
        EVENT_DEADLINE,
        async || {
            metric(
                &nodes[1],
                "spread_antientropy_sessions_total{result=\"ok\"}",
            )
            .await
                >= 1.0
        },
    )
    .await;
}

#[actix_web::test]
async fn a_watcher_that_merges_slowly_takes_a_big_snapshot_at_its_own_pace() {
    // c owns nothing under the prefix (replication 1); its link bound is
    // 1 MiB (the owners' the default 64), and each frame of watched values
    // it keeps waits 100 ms first.
    let a = node("a", &["--fault-injection"]);
    let b = node("b", &["--join", &a.addr, "--fault-injection"]);
    let c = node(
        "c",
        &[
            "--join",
            &a.addr,
            "--fault-injection",
            "--peer-send-queue-bytes",
            "1048576",
        ],
    );
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    let prefix = owned_by_none_of(&nodes[0], &["c"]).await;
    // 5 MiB under it: five times c's bound.
    let value = vec![b'v'; 32 << 10];
    for i in 0..160 {
        let r = put(&format!("{}/raw/{prefix}/k{i}", nodes[0].url), &value).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = send(
        http().put(format!("{}/cluster/faults", nodes[2].url)),
        Some(br#"{"cut": [], "merge_delay_ms": 100}"#),
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    // Watched at c: the owner sends its snapshot as fast as c keeps it,
    // and no link is closed (without the window, the owner's frames
    // filled c's memory as fast as the link carried them).
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[2].url), None).await;
    // What waits to be kept shows at c meanwhile.
    wait_for("watched values waiting at c", EVENT_DEADLINE, async || {
        metric(&nodes[2], "spread_replication_merge_queue_bytes").await > 0.0
    })
    .await;
    let snapshot = sse.until_ready().await;
    assert_eq!(snapshot.len(), 161, "every value, then `ready`");
    for i in [0, 80, 159] {
        assert_eq!(
            read(&nodes[2], &format!("{prefix}/k{i}"), true).await,
            (200, value.clone())
        );
    }
    let closed = async |s: &Server| {
        metric(s, "spread_replication_follower_overloads_total").await
            + metric(s, "spread_peer_links_overloaded_total").await
    };
    for s in &nodes {
        assert_eq!(closed(s).await, 0.0, "no link closed at {}", s.addr);
    }
}

#[actix_web::test]
async fn a_copy_is_handed_over_even_when_the_owner_keeps_less_history_than_it() {
    // a keeps one version of each path and compacts often; c watches a
    // prefix a owns and keeps no copy nobody needs. c's copy holds versions
    // a has dropped since: handing it over, a takes them as too late (it
    // keeps nothing that old), which counts as handed, and c drops the copy
    // (it retried every second for ever).
    let keep = [
        "--history-keep-versions",
        "1",
        "--log-retention",
        "4",
        "--compaction-interval-ms",
        "20",
    ];
    let a = node("a", &keep);
    let c = node("c", &["--join", &a.addr, "--copy-cache-mb", "0"]);
    let nodes = vec![a, c];
    all_alive(&nodes, &ids(&["a", "c"])).await;
    linked(&nodes).await;
    let prefix = owned_by_none_of(&nodes[0], &["c"]).await;
    let path = format!("{prefix}/k");
    let url = format!("{}/raw/{path}", nodes[0].url);
    assert_eq!(put(&url, b"v1").await.status, 201);
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[1].url), None).await;
    sse.until_ready().await;
    for v in ["v2", "v3"] {
        assert_eq!(put(&url, v.as_bytes()).await.status, 200);
    }
    wait_for("c holds v3", EVENT_DEADLINE, async || {
        read(&nodes[1], &path, true).await == (200, b"v3".to_vec())
    })
    .await;
    // Other writes move a's change log on, so the old versions leave it
    // and compaction may take them.
    let history = format!("{}/history/{path}", nodes[0].url);
    let mut n = 0;
    wait_for("a compacted v1 and v2", EVENT_DEADLINE, async || {
        n += 1;
        let filler = format!("{}/raw/{prefix}/f{}", nodes[0].url, n % 5);
        put(&filler, b"f").await;
        get(&history).await.json()["events"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    drop(sse);
    wait_for(
        "c handed its copy over and dropped it",
        EVENT_DEADLINE,
        async || metric(&nodes[1], "spread_copy_dropped_partitions_total").await >= 1.0,
    )
    .await;
    assert_eq!(read(&nodes[1], &path, true).await.0, 404);
    assert_eq!(read(&nodes[1], &path, false).await, (200, b"v3".to_vec()));
    let kept = get(&history).await.json();
    assert_eq!(kept["events"].as_array().unwrap().len(), 1, "{kept}");
}
