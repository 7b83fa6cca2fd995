//! Replication between real nodes (child processes on loopback): a write at
//! any node reaches every owner, `?w=` counts real acknowledgements, a node
//! that owns nothing forwards, and an owner killed with SIGKILL catches up
//! on what it missed when it comes back.

mod common;

use common::*;

const SECRET: &str = "a-cluster-secret-for-tests";

fn node(id: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--node-id", id, "--cluster-secret", SECRET];
    args.extend_from_slice(&FAST_PEERS);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Three nodes, every one an owner of everything, all alive.
async fn three() -> Vec<Server> {
    let a = node("a", &[]);
    let b = node("b", &["--join", &a.addr]);
    let c = node("c", &["--join", &a.addr]);
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    nodes
}

/// Two nodes, a and b (joining a), each started with `extra`, alive and
/// linked.
async fn two(extra: &[&str]) -> Vec<Server> {
    let a = node("a", extra);
    let mut b_args = extra.to_vec();
    b_args.extend_from_slice(&["--join", &a.addr]);
    let b = node("b", &b_args);
    let nodes = vec![a, b];
    all_alive(&nodes, &ids(&["a", "b"])).await;
    linked(&nodes).await;
    nodes
}

/// Waits until `s` holds `body` at `path` in its own store.
async fn holds(s: &Server, path: &str, body: &str) {
    let url = format!("{}/raw/{path}?local=true", s.url);
    wait_for(
        &format!("{path} = {body} at {}", s.addr),
        EVENT_DEADLINE,
        async || {
            let r = get(&url).await;
            r.status == 200 && r.body == body.as_bytes()
        },
    )
    .await;
}

#[actix_web::test]
async fn a_write_at_any_node_is_acked_by_a_quorum_and_read_at_every_node() {
    let nodes = three().await;
    let mut sse = SseClient::open(&format!("{}/sse/rooms", nodes[2].url), None).await;
    sse.until_ready().await;
    for (i, s) in nodes.iter().enumerate() {
        let r = put(
            &format!("{}/raw/rooms/{i}/topic", s.url),
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let report = r.json();
        assert_eq!(report["propagation"]["of"], 3, "{report}");
        assert!(
            report["propagation"]["acked"].as_u64().unwrap() >= 2,
            "{report}"
        );
        assert_eq!(report["propagation"]["peers"], 2, "{report}");
    }
    for s in &nodes {
        for i in 0..3 {
            holds(s, &format!("rooms/{i}/topic"), &format!("v{i}")).await;
        }
    }
    // A subscriber at c saw the writes made at a and b as updates.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let e = sse.next_non_ping().await;
        assert_eq!(e.event, "update", "{e:?}");
        seen.insert(e.data["path"].as_str().unwrap().to_string());
    }
    // w=all: every owner acked before the answer.
    let r = put(&format!("{}/raw/rooms/x?w=all", nodes[1].url), b"all").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["propagation"]["acked"], 3);
    put(&format!("{}/raw/rooms/x?w=2", nodes[1].url), b"x")
        .await
        .assert_error(400, "bad_request");
    for s in &nodes {
        assert!(metric(s, "spread_replication_events_total{dir=\"out\"}").await >= 2.0);
        assert!(metric(s, "spread_replication_events_total{dir=\"in\"}").await >= 2.0);
        assert_eq!(
            metric(s, "spread_replication_streams{role=\"following\"}").await,
            128.0,
            "64 partitions from each of 2 co-owners"
        );
    }
}

#[actix_web::test]
async fn an_owner_killed_leaves_quorum_writes_working_and_catches_up_when_back() {
    let mut nodes = three().await;
    for i in 0..20 {
        let r = put(&format!("{}/raw/k/{i}", nodes[0].url), b"before").await;
        assert_eq!(r.status, 201);
    }
    for i in 0..20 {
        holds(&nodes[2], &format!("k/{i}"), "before").await;
    }
    nodes[2].kill9();
    // Quorum: a and b hold every write while c is gone.
    for i in 0..50 {
        let r = put(&format!("{}/raw/k/{i}", nodes[i % 2].url), b"while-down").await;
        assert!(
            r.status == 200 || r.status == 201,
            "{}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["propagation"]["acked"].as_u64().unwrap() >= 2);
    }
    // All: c cannot ack.
    let r = put(&format!("{}/raw/k/all?w=all", nodes[0].url), b"x").await;
    r.assert_error(503, "unavailable");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("acked by 2 of 3"), "{detail}");
    nodes[2].restart();
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    // Back under its id, c has every write it missed (from the cursors it
    // kept), and takes part in w=all again.
    for i in 0..50 {
        holds(&nodes[2], &format!("k/{i}"), "while-down").await;
    }
    holds(&nodes[2], "k/all", "x").await;
    let r = put(&format!("{}/raw/k/after?w=all", nodes[0].url), b"y").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

#[actix_web::test]
async fn concurrent_writes_to_one_path_at_three_nodes_converge_to_one_version() {
    let nodes = three().await;
    let mut writes = Vec::new();
    for i in 0..30 {
        let url = format!("{}/raw/contended/path", nodes[i % 3].url);
        writes.push(async move { put(&url, format!("w{i}").as_bytes()).await });
    }
    for r in futures_util::future::join_all(writes).await {
        assert!(r.status < 500, "{}", String::from_utf8_lossy(&r.body));
    }
    let mut versions = Vec::new();
    for s in &nodes {
        let url = format!("{}/history/contended/path?local=true&values=false", s.url);
        wait_for("all 30 events everywhere", EVENT_DEADLINE, async || {
            get(&url).await.json()["events"].as_array().unwrap().len() == 30
        })
        .await;
        let r = get(&format!("{}/raw/contended/path?local=true", s.url)).await;
        versions.push((r.header("etag").unwrap(), r.body));
    }
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
}

#[actix_web::test]
async fn a_node_that_owns_nothing_forwards_writes_to_an_owner() {
    // Replication 1 over two nodes: each partition has one owner, so half
    // the paths are owned by the other node.
    let nodes = two(&["--replication", "1"]).await;
    let mut forwarded = Vec::new();
    for i in 0..40 {
        let path = format!("spread/{i}/x");
        let r = put(&format!("{}/raw/{path}", nodes[0].url), b"v").await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let report = r.json();
        assert_eq!(report["propagation"]["of"], 1);
        // The version names the node that coordinated the write.
        let version = report["version"].as_str().unwrap().to_string();
        if version.ends_with(".b") {
            holds(&nodes[1], &path, "v").await;
            forwarded.push(path);
        }
    }
    assert!(
        forwarded.len() > 5,
        "some paths are owned by b: {forwarded:?}"
    );
    // A conditional write is decided by the owner, wherever it arrives: a
    // create-only write of a path b holds fails at a with b's answer.
    let create = |url: String| {
        send(
            http().put(url).insert_header(("If-None-Match", "*")),
            Some(b"again"),
        )
    };
    let r = create(format!("{}/raw/{}", nodes[0].url, forwarded[0])).await;
    r.assert_error(412, "precondition_failed");
    let r = create(format!("{}/raw/spread/new/x", nodes[0].url)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = create(format!("{}/raw/spread/new/x", nodes[1].url)).await;
    r.assert_error(412, "precondition_failed");
    // A read of a path a neither owns nor watches is answered by b; with
    // `?local=true` a answers from its own store, where it is not.
    let owned_by_b = format!("{}/raw/{}", nodes[0].url, forwarded[1]);
    let before = metric(&nodes[0], "spread_forwarded_reads_total").await;
    let r = get(&owned_by_b).await;
    assert_eq!((r.status, r.body.as_ref()), (200, &b"v"[..]));
    assert!(metric(&nodes[0], "spread_forwarded_reads_total").await > before);
    get(&format!("{owned_by_b}?local=true"))
        .await
        .assert_error(404, "not_found");
    // A read of the past is answered by the owner too, from its history:
    // a watched copy would hold only the present.
    let first = get(&owned_by_b).await.header("etag").unwrap();
    let then: u64 = first
        .trim_matches('"')
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r = put(&owned_by_b, b"v2").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = get(&format!("{owned_by_b}?at={then}")).await;
    assert_eq!((r.status, r.body.as_ref()), (200, &b"v"[..]));
    assert_eq!(r.header("etag"), Some(first));
    get(&format!("{owned_by_b}?at={}", then - 1))
        .await
        .assert_error(404, "not_found");
    assert_eq!(get(&owned_by_b).await.body.as_ref(), b"v2");
    // A rollback at a node that holds nothing of the path: the past is
    // read at the owner, and the write goes there.
    let rollback = format!("{}/rollback/{}?to={then}", nodes[0].url, forwarded[1]);
    let r = send(http().post(rollback), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(&owned_by_b).await.body.as_ref(), b"v");
    holds(&nodes[1], &forwarded[1], "v").await;
    // A playback merges a whole prefix's history here: refused where this
    // node does not hold all of it, naming who does.
    get(&format!("{}?from={then}", nodes[0].at("sse", "spread")))
        .await
        .assert_error(421, "misdirected");
    get(&format!("{owned_by_b}?local=maybe"))
        .await
        .assert_error(400, "bad_request");
    // The fault switch is not served without --fault-injection.
    send(
        http().put(format!("{}/cluster/faults", nodes[0].url)),
        Some(br#"{"cut": ["b"]}"#),
    )
    .await
    .assert_error(404, "not_found");
    // Once b is dead, a owns every partition and coordinates the write.
    let mut nodes = nodes;
    nodes[1].kill9();
    wait_for("b dead", EVENT_DEADLINE, async || {
        members(&nodes[0])
            .await
            .contains(&("b".to_string(), "dead".to_string()))
    })
    .await;
    let r = put(&format!("{}/raw/{}", nodes[0].url, forwarded[0]), b"moved").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["version"].as_str().unwrap().ends_with(".a"));
}

#[actix_web::test]
async fn a_node_that_owns_nothing_under_a_watched_prefix_keeps_a_local_copy() {
    // Five nodes, two owners per partition: most nodes own nothing of a
    // given prefix (with three nodes and three owners every node owns all).
    // Pings often, so a closed stream is noticed soon.
    let small = ["--replication", "2", "--ping-interval-ms", "200"];
    let a = node("a", &small);
    let mut nodes = vec![a];
    for id in ["b", "c", "d", "e"] {
        let mut args = small.to_vec();
        args.extend_from_slice(&["--join", &nodes[0].addr]);
        let joined = node(id, &args);
        nodes.push(joined);
    }
    let names = ids(&["a", "b", "c", "d", "e"]);
    all_alive(&nodes, &names).await;
    linked(&nodes).await;
    // A prefix whose partition neither e nor a owns: e watches it, a takes
    // the write (and forwards it to an owner).
    let layout = spread_actors::Layout::new(64, 2).unwrap();
    let view = get(&format!("{}/cluster", nodes[0].url)).await.json();
    let owners_of = |prefix: &str| -> Vec<String> {
        let part = layout.partition_of(&spread_actors::Path::parse_key(prefix).unwrap());
        view["partitions"][usize::from(part)]["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect()
    };
    let prefix = (0..1000)
        .map(|i| format!("rooms/{i}"))
        .find(|p| {
            let owners = owners_of(p);
            !owners.contains(&"e".to_string()) && !owners.contains(&"a".to_string())
        })
        .expect("a prefix owned by neither a nor e");
    // Written before the watch: e's client gets it in its snapshot (e's
    // copy is complete before the snapshot is read), and e then answers
    // it from its copy.
    let r = put(&format!("{}/raw/{prefix}/old", nodes[1].url), b"before").await;
    assert!(r.status == 201, "{}", String::from_utf8_lossy(&r.body));
    let mut sse = SseClient::open(&format!("{}/sse/{prefix}", nodes[4].url), None).await;
    let mut snapshot = sse.until_ready().await;
    snapshot.pop(); // the `ready` event
    let paths: Vec<_> = snapshot.iter().map(|e| e.data["path"].clone()).collect();
    assert_eq!(paths, vec![format!("{prefix}/old")], "{snapshot:?}");
    assert_eq!(snapshot[0].data["value"], "before");
    let r = get(&format!("{}/raw/{prefix}/old?local=true", nodes[4].url)).await;
    assert_eq!(r.status, 200, "e answers from its copy once it is complete");
    wait_for("the watch at an owner", EVENT_DEADLINE, async || {
        metric(&nodes[4], "spread_replication_streams{role=\"watching\"}").await == 1.0
    })
    .await;
    let r = put(&format!("{}/raw/{prefix}/topic", nodes[0].url), b"hello").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // e's subscriber gets the write made at a, and e answers it locally.
    loop {
        let event = sse.next_non_ping().await;
        if event.data["path"] == format!("{prefix}/topic") {
            assert_eq!(event.data["value"], "hello", "{:?}", event.data);
            break;
        }
    }
    holds(&nodes[4], &format!("{prefix}/topic"), "hello").await;
    // The last subscriber gone, the watch ends (the copy stays).
    drop(sse);
    wait_for("the watch ended", EVENT_DEADLINE, async || {
        metric(&nodes[4], "spread_replication_streams{role=\"watching\"}").await == 0.0
    })
    .await;
    holds(&nodes[4], &format!("{prefix}/topic"), "hello").await;
}

#[actix_web::test]
async fn a_subscription_to_a_prefix_over_every_partition_starts_with_the_whole_state() {
    // Five nodes, two owners per partition; "lobby" is shallower than the
    // shard depth, so it covers every partition, held by different owners:
    // e watches it at several owners, each for its own partitions.
    let small = ["--replication", "2"];
    let a = node("a", &small);
    let mut nodes = vec![a];
    for id in ["b", "c", "d", "e"] {
        let mut args = small.to_vec();
        args.extend_from_slice(&["--join", &nodes[0].addr]);
        let joined = node(id, &args);
        nodes.push(joined);
    }
    all_alive(&nodes, &ids(&["a", "b", "c", "d", "e"])).await;
    linked(&nodes).await;
    let mut written = std::collections::BTreeMap::new();
    for i in 0..40 {
        let path = format!("lobby/{i}/topic");
        let body = format!("v{i}");
        // Right after the cluster forms, an owner may not follow its
        // co-owner yet, and a quorum write then answers 503: try again.
        let url = format!("{}/raw/{path}", nodes[i % 4].url);
        wait_for(
            &format!("a quorum write of {path}"),
            EVENT_DEADLINE,
            async || {
                let r = put(&url, body.as_bytes()).await;
                assert!(
                    r.status == 201 || r.status == 200 || r.status == 503,
                    "{}",
                    String::from_utf8_lossy(&r.body)
                );
                r.status != 503
            },
        )
        .await;
        written.insert(path, body);
    }
    let mut ws = WsClient::connect(&nodes[4].ws_url("lobby")).await;
    let mut snapshot = ws.until_ready().await;
    snapshot.pop(); // the `ready` frame
    let got: std::collections::BTreeMap<String, String> = snapshot
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, written, "the snapshot at e is the whole state");
    assert_eq!(
        snapshot.len(),
        written.len(),
        "each value once: {snapshot:?}"
    );
    wait_for("e watching several owners", EVENT_DEADLINE, async || {
        metric(&nodes[4], "spread_replication_streams{role=\"watching\"}").await >= 2.0
    })
    .await;
    // And e answers every path from its copy.
    for (path, body) in &written {
        let r = get(&format!("{}/raw/{path}?local=true", nodes[4].url)).await;
        assert_eq!((r.status, &r.body[..]), (200, body.as_bytes()), "{path}");
    }
    // A write after the snapshot comes as an update.
    let r = put(&format!("{}/raw/lobby/9/topic", nodes[0].url), b"later").await;
    assert_eq!(r.status, 200, "an overwrite");
    loop {
        let f = ws.next_non_ping().await;
        if f["path"] == "lobby/9/topic" {
            assert_eq!(f["value"], "later", "{f}");
            break;
        }
    }
}

#[actix_web::test]
async fn a_fourth_node_takes_partitions_and_a_polled_path_never_vanishes_or_goes_back() {
    let mut nodes = three().await;
    // Paths spread over the partitions, all held by the three owners, each
    // with a history of two versions.
    for i in 0..100 {
        let r = put(
            &format!("{}/raw/moving/{i}/x", nodes[i % 3].url),
            format!("old{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let r = put(
            &format!("{}/raw/moving/{i}/x", nodes[i % 3].url),
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    for s in &nodes {
        for i in 0..100 {
            holds(s, &format!("moving/{i}/x"), &format!("v{i}")).await;
        }
    }
    // Readers poll every path at a, and at d from when it knows another
    // member (alone, it would rightly take itself for the whole cluster),
    // while d joins and takes its share.
    let d = node("d", &["--join", &nodes[1].addr]);
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let poll = |url: String| {
        let flag = done.clone();
        actix_web::rt::spawn(async move {
            let mut reads = 0;
            while !flag.get() {
                for i in 0..100 {
                    let r = get(&format!("{url}/raw/moving/{i}/x")).await;
                    assert_eq!(
                        (r.status, String::from_utf8_lossy(&r.body).to_string()),
                        (200, format!("v{i}")),
                        "moving/{i}/x at {url} while d joins"
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    let at_a = poll(nodes[0].url.clone());
    wait_for("d knows another member", EVENT_DEADLINE, async || {
        members(&d)
            .await
            .iter()
            .any(|(n, s)| n != "d" && s == "alive")
    })
    .await;
    let at_d = poll(d.url.clone());
    nodes.push(d);
    all_alive(&nodes, &ids(&["a", "b", "c", "d"])).await;
    linked(&nodes).await;
    // d owns about three quarters of the partitions, holds their paths and
    // serves them (from its own store once caught up).
    let layout = spread_actors::Layout::new(64, 2).unwrap();
    let view = get(&format!("{}/cluster", nodes[3].url)).await.json();
    let mut owned = 0;
    for i in 0..100 {
        let path = format!("moving/{i}/x");
        let part = layout.partition_of(&spread_actors::Path::parse_key(&path).unwrap());
        let owners = view["partitions"][usize::from(part)]["owners"].to_string();
        if owners.contains("\"d\"") {
            owned += 1;
            holds(&nodes[3], &path, &format!("v{i}")).await;
            // Its history too: a new owner compares trees with an owner,
            // and gets every event, not only the latest values.
            let url = format!("{}/history/{path}?local=true&values=false", nodes[3].url);
            wait_for(
                &format!("{path}'s history at d"),
                EVENT_DEADLINE,
                async || {
                    let r = get(&url).await;
                    r.status == 200 && r.json()["events"].as_array().map(Vec::len) == Some(2)
                },
            )
            .await;
        }
        let r = get(&format!("{}/raw/{path}", nodes[3].url)).await;
        assert_eq!((r.status, &r.body[..]), (200, format!("v{i}").as_bytes()));
    }
    assert!(owned > 30, "d owns a share: {owned}");
    done.set(true);
    for reader in [at_a, at_d] {
        let reads = reader.await.unwrap();
        assert!(reads >= 100, "each reader read while d joined: {reads}");
    }
}

#[actix_web::test]
async fn a_peer_that_stops_reading_is_disconnected_then_resumes_from_its_cursor() {
    // Silence is not what closes the link here: only the full send queue.
    let slow = [
        "--peer-heartbeat-ms",
        "1000",
        "--peer-timeout-ms",
        "60000",
        "--replication",
        "3",
        "--peer-send-queue-bytes",
        "1048576",
    ];
    let start = |id: &str, join: Option<&str>| {
        let mut args = vec!["--node-id", id, "--cluster-secret", SECRET];
        if let Some(addr) = join {
            args.extend(["--join", addr]);
        }
        args.extend_from_slice(&slow);
        Server::start(&args)
    };
    let a = start("a", None);
    let b = start("b", Some(&a.addr));
    // A third member keeps the membership whole while a and b, each
    // cut off from the other, declare each other dead: its gossip tells b
    // so, and b rejoins (two members alone can stay apart, see README).
    let c = start("c", Some(&a.addr));
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    let r = put(&format!("{}/raw/big/first?w=all", nodes[0].url), b"x").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    // b stops reading; a goes on taking writes (w=1: its own ack) far
    // past what the kernel's socket buffers and the queue can hold.
    nodes[1].signal("-STOP");
    let value = vec![b'v'; 64 << 10];
    let mut written = 0;
    wait_for(
        "a link closed as overloaded",
        EVENT_DEADLINE * 3,
        async || {
            for _ in 0..16 {
                let url = format!("{}/raw/big/{written}?w=1", nodes[0].url);
                let r = put(&url, &value).await;
                assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                written += 1;
            }
            metric(&nodes[0], "spread_peer_links_overloaded_total").await >= 1.0
        },
    )
    .await;
    // a's own clients never noticed.
    let r = get(&format!("{}/raw/big/first", nodes[0].url)).await;
    assert_eq!(r.status, 200);

    // b resumes, redials, and gets everything it missed.
    nodes[1].signal("-CONT");
    let last = written - 1;
    let url = format!("{}/raw/big/{last}?local=true", nodes[1].url);
    // a and b may have declared each other dead meanwhile: rejoining and
    // redialing (backoff up to 5 s) come first.
    wait_for(
        "b caught up after its link was cut",
        EVENT_DEADLINE * 3,
        async || {
            let r = get(&url).await;
            r.status == 200 && r.body.len() == value.len()
        },
    )
    .await;
    // Paths spread over partitions, each stream resumed on its own.
    for i in 0..written {
        let url = format!("{}/raw/big/{i}?local=true", nodes[1].url);
        wait_for(&format!("big/{i} at b"), EVENT_DEADLINE, async || {
            get(&url).await.status == 200
        })
        .await;
    }
}

#[actix_web::test]
async fn replication_lag_is_zero_once_every_owner_holds_every_write() {
    let nodes = three().await;
    // Writes over many partitions, then many to one path: the partitions
    // of the first ones go idle while the log moves on.
    for i in 0..20 {
        let r = put(&nodes[0].at("raw", &format!("lag/{i}/x")), b"v").await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    for i in 0..50 {
        let r = put(&nodes[0].at("raw", "lag/hot/x"), format!("{i}").as_bytes()).await;
        assert!(
            r.status == 200 || r.status == 201,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    for s in &nodes {
        holds(s, "lag/hot/x", "49").await;
        holds(s, "lag/0/x", "v").await;
    }
    // Every stream is live: none is behind, whatever idle partitions'
    // last entries are.
    for s in &nodes {
        wait_for("no stream behind", EVENT_DEADLINE, async || {
            metric(s, "spread_replication_lag_entries").await == 0.0
        })
        .await;
        let m = get(&format!("{}/metrics", s.url)).await;
        let text = String::from_utf8_lossy(&m.body);
        assert!(text.contains("# HELP spread_replication_partition_lag_entries"));
        assert!(
            !text.contains("spread_replication_partition_lag_entries{"),
            "no partition is behind: {text}"
        );
    }
}

#[actix_web::test]
async fn a_replicated_write_costs_the_coordinator_about_one_frame_back_per_follower() {
    // Default heartbeats (and ticks): what a link carries by the clock,
    // not by the writes, is a few frames a second.
    let a = Server::start(&["--node-id", "a", "--cluster-secret", SECRET]);
    let join = ["--cluster-secret", SECRET, "--join", &a.addr];
    let b = Server::start(&[&["--node-id", "b"][..], &join].concat());
    let c = Server::start(&[&["--node-id", "c"][..], &join].concat());
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    let warm_up = format!("{}?w=all", nodes[0].at("raw", "f/ready"));
    wait_for("every owner acks", EVENT_DEADLINE, async || {
        put(&warm_up, b"v").await.status / 100 == 2
    })
    .await;
    let frames_in = async |s: &Server| metric(s, "spread_peer_frames_total{dir=\"in\"}").await;
    let (a0, c0) = (frames_in(&nodes[0]).await, frames_in(&nodes[2]).await);
    // One at a time: every write is a commit of its own, so nothing is
    // bundled by load.
    const N: usize = 500;
    for i in 0..N {
        let r = put(
            &format!("{}?w=all", nodes[0].at("raw", &format!("f/{i}"))),
            b"v",
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let (a, c) = (
        frames_in(&nodes[0]).await - a0,
        frames_in(&nodes[2]).await - c0,
    );
    // a hears from each follower its ack, with what it merged, in one
    // frame; not a frame more to say how far a's own events are sent
    // (that goes a few times a second). Measured: about 2.5 a write (the
    // clock's frames are a few a second); before, four.
    // (Each of the two followers acked each write before the next.)
    assert!(
        ((2 * N) as f64..(3 * N) as f64).contains(&a),
        "a took {a} frames for {N} writes"
    );
    // c takes each write from a; b relays a's writes to c too, but a few
    // times a second, many in a frame, and b's `Merged` for what c sent it
    // goes as seldom. Measured: about 1.1 a write; 2.1 while b relayed
    // each write at once, and three before that.
    assert!(
        (N as f64..(15 * N / 10) as f64).contains(&c),
        "c took {c} frames for {N} writes"
    );
}

#[actix_web::test]
async fn an_owner_cut_off_from_the_coordinator_gets_its_writes_through_the_third_owner() {
    let a = node("a", &["--fault-injection"]);
    let b = node("b", &["--fault-injection", "--join", &a.addr]);
    let c = node("c", &["--fault-injection", "--join", &a.addr]);
    let nodes = vec![a, b, c];
    all_alive(&nodes, &ids(&["a", "b", "c"])).await;
    linked(&nodes).await;
    // a and c no longer reach each other; b reaches both.
    cut(&nodes[0], &["c"]).await;
    cut(&nodes[2], &["a"]).await;
    wait_for("a and c unlinked", EVENT_DEADLINE, async || {
        let links = async |s: &Server| metric(s, "spread_peer_links").await;
        links(&nodes[0]).await == 1.0 && links(&nodes[2]).await == 1.0
    })
    .await;
    // Acked by a and b; c has them from b, which relays what a made.
    for i in 0..20 {
        let r = put(
            &format!("{}?w=quorum", nodes[0].at("raw", &format!("cut/{i}"))),
            format!("v{i}").as_bytes(),
        )
        .await;
        assert_eq!(r.status / 100, 2, "{}", String::from_utf8_lossy(&r.body));
    }
    for i in 0..20 {
        holds(&nodes[2], &format!("cut/{i}"), &format!("v{i}")).await;
    }
}

/// Sets `s`'s fault switch: links cut to `nodes`, and each batch of
/// replication merges delayed `delay_ms` (a slow follower).
async fn faults(s: &Server, nodes: &[&str], delay_ms: u64) {
    let body = serde_json::json!({ "cut": nodes, "merge_delay_ms": delay_ms });
    let r = send(
        http().put(format!("{}/cluster/faults", s.url)),
        Some(body.to_string().as_bytes()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

#[actix_web::test]
async fn a_follower_that_merges_slowly_paces_catching_up_and_closes_a_link_it_cannot_keep_up_with()
{
    // b's link bound is 1 MiB (a's the default 64): b asks its owners to
    // keep at most a quarter of that in flight to it while it catches up,
    // and closes a link whose frames waiting to merge pass the bound.
    let args = ["--replication", "2", "--fault-injection"];
    let a = node("a", &args);
    let b = node(
        "b",
        &[
            &args[..],
            &["--join", &a.addr, "--peer-send-queue-bytes", "1048576"],
        ]
        .concat(),
    );
    let nodes = vec![a, b];
    all_alive(&nodes, &ids(&["a", "b"])).await;
    linked(&nodes).await;
    let overloads = async |s: &Server| {
        metric(s, "spread_replication_follower_overloads_total").await
            + metric(s, "spread_peer_links_overloaded_total").await
    };
    // Both caught up (their first streams were reset: each pulled from the
    // other), so b resumes from its cursors after the cut.
    wait_for("streams caught up both ways", EVENT_DEADLINE, async || {
        let mut ready = true;
        for s in &nodes {
            ready &= metric(s, "spread_antientropy_sessions_total{result=\"ok\"}").await >= 1.0
                && metric(s, "spread_antientropy_sessions_running").await == 0.0
                && metric(s, "spread_replication_lag_entries").await == 0.0;
        }
        ready
    })
    .await;
    // Apart, a takes 5 MiB; b merges slowly (100 ms before each batch).
    faults(&nodes[0], &["b"], 0).await;
    faults(&nodes[1], &["a"], 100).await;
    let value = vec![b'v'; 32 << 10];
    for i in 0..160 {
        let url = format!("{}/raw/slow/{}/k{i}?w=1", nodes[0].url, i % 40);
        let r = put(&url, &value).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    // Healed: b catches up at its own pace, five times its bound, and no
    // link is closed (without the window, or with a's own share as the
    // window, a's catching up filled b's memory as fast as the link
    // carried it).
    faults(&nodes[0], &[], 0).await;
    faults(&nodes[1], &[], 100).await;
    let held = async |s: &Server, prefix: &str, n: usize, len: usize| {
        for i in 0..n {
            let path = format!("{prefix}/{}/k{i}", i % 40);
            let r = get(&format!("{}/raw/{path}?local=true", s.url)).await;
            if r.status != 200 || r.body.len() != len {
                return false;
            }
        }
        true
    };
    wait_for("b caught up", EVENT_DEADLINE * 3, async || {
        held(&nodes[1], "slow", 160, value.len()).await
    })
    .await;
    assert_eq!(overloads(&nodes[0]).await + overloads(&nodes[1]).await, 0.0);
    // It came by the stream (the sweep after the link came back waits for
    // the streams to catch up, then finds nothing to send).
    assert!(metric(&nodes[1], "spread_replication_events_total{dir=\"in\"}").await >= 160.0);
    // Live changes faster than b merges (a second before each batch): b
    // closes the link rather than hold them all, and catches up once it
    // merges at speed again.
    faults(&nodes[1], &[], 1000).await;
    let big = vec![b'w'; 64 << 10];
    let mut written = 0;
    wait_for(
        "b closed a link it could not keep up with",
        EVENT_DEADLINE * 3,
        async || {
            for _ in 0..8 {
                let url = format!("{}/raw/live/{}/k{written}?w=1", nodes[0].url, written % 40);
                let r = put(&url, &big).await;
                assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                written += 1;
            }
            metric(&nodes[1], "spread_replication_follower_overloads_total").await >= 1.0
        },
    )
    .await;
    faults(&nodes[1], &[], 0).await;
    wait_for(
        "b caught up on the live writes",
        EVENT_DEADLINE * 3,
        async || held(&nodes[1], "live", written, big.len()).await,
    )
    .await;
    // a's clients never noticed.
    let r = get(&format!("{}/raw/slow/0/k0", nodes[0].url)).await;
    assert_eq!(r.status, 200);
}

#[actix_web::test]
async fn a_value_too_big_for_a_peer_frame_is_refused_and_the_links_carry_on() {
    let nodes = two(&[]).await;
    let opened = metric(&nodes[0], "spread_peer_links_opened_total").await;
    // An import may carry a value past the HTTP write limit; in a cluster a
    // value must also fit one peer frame, or every link that tried to
    // stream it would close, again on each reconnect.
    let most = spread_actors::cluster::MAX_VALUE_BYTES;
    let line = format!(
        r#"{{"path":"big/x","version":"1000.z","value":"{}"}}"#,
        "v".repeat(most + 1)
    );
    let r = send(
        http().post(format!("{}/import", nodes[0].url)),
        Some(line.as_bytes()),
    )
    .await;
    r.assert_error(400, "bad_request");
    assert!(
        String::from_utf8_lossy(&r.body).contains(&format!("at most {most}")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // A value of the largest size goes through, and reaches the other owner.
    let line = format!(
        r#"{{"path":"big/y","version":"1000.z","value":"{}"}}"#,
        "w".repeat(most)
    );
    let r = send(
        http().post(format!("{}/import", nodes[0].url)),
        Some(line.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    wait_for("b to hold the largest value", EVENT_DEADLINE, async || {
        let r = get(&format!("{}/raw/big/y?local=true", nodes[1].url)).await;
        r.status == 200 && r.body.len() == most
    })
    .await;
    put(&format!("{}/raw/small/z", nodes[0].url), b"s").await;
    holds(&nodes[1], "small/z", "s").await;
    assert_eq!(
        metric(&nodes[0], "spread_peer_links_opened_total").await,
        opened,
        "no link was closed"
    );
}

#[actix_web::test]
async fn big_writes_and_reads_through_a_node_that_owns_nothing_wait_their_turn_on_the_link() {
    // Replication 1 over two nodes: half the paths are b's. A small send
    // queue at each: a few of these values pushed at once would pass it,
    // and a link whose queue overflows is closed for every client on it.
    let nodes = two(&["--replication", "1", "--peer-send-queue-bytes", "2097152"]).await;
    let mut owned_by_b = Vec::new();
    for i in 0.. {
        let path = format!("turn/{i}/x");
        let r = put(&format!("{}/raw/{path}", nodes[1].url), b"v").await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        if r.json()["version"].as_str().unwrap().ends_with(".b") {
            owned_by_b.push(path);
        }
        if owned_by_b.len() == 8 {
            break;
        }
    }
    let opened = [
        metric(&nodes[0], "spread_peer_links_opened_total").await,
        metric(&nodes[1], "spread_peer_links_opened_total").await,
    ];
    let big = vec![b'x'; 1_500_000];
    let a_url = nodes[0].url.clone();
    let urls: Vec<String> = owned_by_b
        .iter()
        .map(|p| format!("{a_url}/raw/{p}"))
        .collect();
    let writes = futures_util::future::join_all(urls.iter().map(|u| put(u, &big))).await;
    for r in &writes {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let reads = futures_util::future::join_all(urls.iter().map(|u| get(u))).await;
    for r in &reads {
        assert_eq!((r.status, r.body.len()), (200, big.len()));
    }
    // One link all along, and a small write goes through it at once.
    let r = put(&format!("{a_url}/raw/{}", owned_by_b[0]), b"small").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for (s, before) in nodes.iter().zip(opened) {
        assert_eq!(
            metric(s, "spread_peer_links_opened_total").await,
            before,
            "{}",
            s.log()
        );
        assert!(!s.log().contains("cannot keep up"), "{}", s.log());
    }
}

#[actix_web::test]
async fn a_retry_of_a_write_every_owner_holds_is_answered_with_every_owner() {
    let nodes = three().await;
    // A write with its own time can be sent again safely: the same event.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        .to_string();
    let write = || {
        send(
            http()
                .put(format!("{}/raw/retry/x?w=all", nodes[0].url))
                .insert_header(("x-spread-time", now.as_str())),
            Some(b"once"),
        )
    };
    let first = write().await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["propagation"]["acked"], 3);
    // The client did not hear the answer, say, and sends it again: every
    // owner holds it, and the answer says so (it was 503 "acked by 1").
    let again = write().await;
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let report = again.json();
    assert_eq!(report["status"], "existing");
    assert_eq!(report["propagation"]["acked"], 3);
    assert_eq!(report["version"], first.json()["version"]);
    // At a node that owns it too, and at quorum.
    let at_b = send(
        http()
            .put(format!("{}/raw/retry/x", nodes[1].url))
            .insert_header(("x-spread-time", now.as_str())),
        Some(b"once"),
    )
    .await;
    assert_eq!(at_b.status, 200, "{}", String::from_utf8_lossy(&at_b.body));
    assert!(at_b.json()["propagation"]["acked"].as_u64().unwrap() >= 2);
}
