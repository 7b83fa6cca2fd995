//! Reads of a prefix in a cluster whose nodes each own a share of it (real
//! nodes, child processes on loopback): any node lists the whole prefix,
//! now and in the past, page by page; reads any path's history; and rolls
//! a subtree back, each partition read where it is held. With an owner
//! killed, listings go on at its co-owners, complete.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::future::join_all;

const SECRET: &str = "a-cluster-secret-for-tests";

/// Peer timings for a test of big transfers, not of failure detection: a
/// node busy moving megabytes on a loaded machine is not taken for dead
/// (which would move its partitions mid-test).
const STEADY_PEERS: [&str; 6] = [
    "--peer-heartbeat-ms",
    "100",
    "--peer-timeout-ms",
    "5000",
    "--ack-timeout-ms",
    "5000",
];

fn node(id: &str, replication: &str, extra: &[&str]) -> Server {
    node_timed(id, replication, &FAST_PEERS, extra)
}

fn node_timed(id: &str, replication: &str, timing: &[&str], extra: &[&str]) -> Server {
    let mut args = vec![
        "--node-id",
        id,
        "--cluster-secret",
        SECRET,
        "--replication",
        replication,
    ];
    args.extend_from_slice(timing);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Three linked nodes, each partition owned by `replication` of them.
async fn three(replication: &str) -> Vec<Server> {
    let a = node("a", replication, &[]);
    let b = node("b", replication, &["--join", &a.addr]);
    let c = node("c", replication, &["--join", &a.addr]);
    let nodes = vec![a, b, c];
    let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    all_alive(&nodes, &ids).await;
    linked(&nodes).await;
    nodes
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Every live path of `prefix` listed at `s` (with `query` added), `page`
/// entries at a time: path → version. Asserts the pages come in path
/// order and within their limit.
async fn list_all(s: &Server, prefix: &str, query: &str, page: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut last = String::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let mut url = format!("{}?limit={page}{query}", s.at("list", prefix));
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let r = get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
        let listed = r.json();
        let entries = listed["entries"].as_array().unwrap();
        assert!(entries.len() <= page, "{listed}");
        for e in entries {
            let path = e["path"].as_str().unwrap().to_string();
            assert!(path > last, "{path} after {last}");
            last = path.clone();
            out.insert(path, e["version"].as_str().unwrap().to_string());
        }
        match listed["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return out,
        }
    }
    panic!("a listing of {prefix} that never ends");
}

/// Writes `body` at `path` through `s`, answering the version.
async fn write(s: &Server, path: &str, body: &str) -> String {
    let r = put(&s.at("raw", path), body.as_bytes()).await;
    assert!(
        r.status == 200 || r.status == 201,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["version"].as_str().unwrap().to_string()
}

fn tree_path(i: usize) -> String {
    format!("tree/{i}/x")
}

#[actix_web::test]
async fn any_node_lists_reads_histories_and_rolls_back_a_prefix_others_hold() {
    // Replication 1: every partition has one owner, so each node holds a
    // third of the tree.
    let nodes = three("1").await;
    let mut then: BTreeMap<String, String> = BTreeMap::new();
    for chunk in (0..60).collect::<Vec<_>>().chunks(20) {
        let written = join_all(chunk.iter().map(|&i| {
            let s = &nodes[i % 3];
            async move {
                (
                    tree_path(i),
                    write(s, &tree_path(i), &format!("v1-{i}")).await,
                )
            }
        }))
        .await;
        then.extend(written);
    }
    // A time after every first write, and before every change below.
    let newest: u64 = then
        .values()
        .map(|v| v.split('.').next().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    let t1 = newest.max(now_micros());
    wait_for("the clock past t1", EVENT_DEADLINE, async || {
        now_micros() > t1 + 1000
    })
    .await;
    let mut now = then.clone();
    for i in 0..20 {
        now.insert(
            tree_path(i),
            write(&nodes[(i + 1) % 3], &tree_path(i), "v2").await,
        );
    }
    for i in 20..30 {
        let r = send(http().delete(nodes[i % 3].at("raw", &tree_path(i))), None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        now.remove(&tree_path(i));
    }
    for i in 60..70 {
        now.insert(
            tree_path(i),
            write(&nodes[i % 3], &tree_path(i), "new").await,
        );
    }

    for s in &nodes {
        // The whole tree, now and as it stood at t1, at every node, in
        // pages smaller than any node's share.
        assert_eq!(list_all(s, "tree", "", 7).await, now, "at {}", s.addr);
        assert_eq!(
            list_all(s, "tree", &format!("&at={t1}"), 7).await,
            then,
            "at {} as of t1",
            s.addr
        );
        // Its own store holds only its share.
        let own = list_all(s, "tree", "&local=true", 1000).await;
        assert!(
            !own.is_empty() && own.len() < now.len(),
            "{} holds {} of {}",
            s.addr,
            own.len(),
            now.len()
        );
        // Any path's history, wherever it is held.
        for i in [0, 7, 13] {
            let h = get(&s.at("history", &tree_path(i))).await;
            assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&h.body));
            let values: Vec<String> = h.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["value"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                values,
                [format!("v1-{i}"), "v2".to_string()],
                "at {}",
                s.addr
            );
        }
    }
    // A listing of a path's own partition, and an empty prefix.
    let one = list_all(&nodes[1], "tree/5", "", 10).await;
    assert_eq!(one.keys().collect::<Vec<_>>(), ["tree/5/x"]);
    assert!(list_all(&nodes[2], "nothing/here", "", 10).await.is_empty());

    // A recursive rollback at one node puts the whole tree back as it was,
    // whichever node holds each path.
    let r = send(
        http().post(format!(
            "{}?to={t1}&recursive=true",
            nodes[0].at("rollback", "tree")
        )),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    // 20 updated and 10 deleted paths restored, 10 created ones deleted.
    assert_eq!(report["reports"].as_array().unwrap().len(), 40, "{report}");
    assert_eq!(report["unchanged"], 30, "{report}");
    for s in &nodes {
        let listed = list_all(s, "tree", "", 50).await;
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            then.keys().collect::<Vec<_>>(),
            "at {}",
            s.addr
        );
    }
    for i in 0..70 {
        let r = get(&nodes[1].at("raw", &tree_path(i))).await;
        if i < 60 {
            assert_eq!(r.body.as_ref(), format!("v1-{i}").as_bytes(), "{i}");
        } else {
            r.assert_error(404, "not_found");
        }
    }
}

#[actix_web::test]
async fn with_an_owner_killed_its_co_owners_answer_listings_and_histories_complete() {
    let mut nodes = three("2").await;
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    for chunk in (0..60).collect::<Vec<_>>().chunks(20) {
        let done = join_all(chunk.iter().map(|&i| {
            let s = &nodes[i % 3];
            async move {
                (
                    tree_path(i),
                    write(s, &tree_path(i), &format!("v{i}")).await,
                )
            }
        }))
        .await;
        written.extend(done);
    }
    nodes[2].kill9();
    // At once (c's links are gone, its death not yet known) and after.
    for s in &nodes[..2] {
        assert_eq!(list_all(s, "tree", "", 9).await, written, "at {}", s.addr);
        for i in 0..60 {
            let h = get(&s.at("history", &tree_path(i))).await;
            assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&h.body));
            assert_eq!(h.json()["events"].as_array().unwrap().len(), 1, "{i}");
        }
    }
    wait_for("c dead", EVENT_DEADLINE, async || {
        members(&nodes[0])
            .await
            .contains(&("c".to_string(), "dead".to_string()))
    })
    .await;
    for s in &nodes[..2] {
        assert_eq!(list_all(s, "tree", "", 9).await, written, "at {}", s.addr);
    }
    // Back, c lists everything too, while it catches up or after.
    nodes[2].restart();
    wait_for("c alive again", Duration::from_secs(30), async || {
        members(&nodes[0])
            .await
            .contains(&("c".to_string(), "alive".to_string()))
    })
    .await;
    wait_for("c lists the whole tree", EVENT_DEADLINE, async || {
        list_all(&nodes[2], "tree", "", 9).await == written
    })
    .await;
}

/// The lines of an export of `prefix` at `s`, without their node-local
/// `seq`.
async fn export(s: &Server, prefix: &str) -> Vec<serde_json::Value> {
    let r = get(&s.at("export", prefix)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8(r.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seq");
            v
        })
        .collect()
}

/// `POST /import` of `body` at `s`: the answer's counts.
async fn import(s: &Server, body: &[u8]) -> serde_json::Value {
    let r = send(http().post(format!("{}/import", s.url)), Some(body)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[actix_web::test]
async fn a_cluster_exported_at_one_node_and_imported_at_one_node_of_another_is_the_same() {
    let src = three("1").await;
    for i in 0..60 {
        write(&src[i % 3], &tree_path(i), &format!("v1-{i}")).await;
    }
    for i in 0..20 {
        write(&src[(i + 1) % 3], &tree_path(i), "v2").await;
    }
    for i in 20..30 {
        let r = send(http().delete(src[i % 3].at("raw", &tree_path(i))), None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // Every event, from any node, though each holds a third of them.
    let exported = export(&src[0], "").await;
    assert_eq!(exported.len(), 90);
    assert_eq!(export(&src[2], "").await, exported);
    let paths: Vec<&str> = exported
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.is_sorted(), "in path order");

    let dst = three("1").await;
    let body = get(&src[1].at("export", "")).await.body;
    let counts = import(&dst[1], &body).await;
    assert_eq!(counts["events"], 90, "{counts}");
    assert_eq!(counts["existing"], 0, "{counts}");
    // The same values, versions and histories at every node, and each
    // node holds the same events as its namesake (same ids, same
    // placement): their merkle roots are equal.
    let listed = list_all(&src[0], "tree", "", 1000).await;
    assert_eq!(listed.len(), 50);
    for d in &dst {
        assert_eq!(list_all(d, "tree", "", 13).await, listed, "at {}", d.addr);
        assert_eq!(export(d, "").await, exported, "at {}", d.addr);
    }
    let root = async |n: &Server| {
        let d = get(&format!("{}?depth=0", n.at("digest", ""))).await.json();
        (
            d["hash"].as_str().unwrap().to_string(),
            d["items"].as_u64().unwrap(),
        )
    };
    let mut items = 0;
    for (s, d) in src.iter().zip(&dst) {
        wait_for(
            "namesakes' merkle roots to agree",
            EVENT_DEADLINE,
            async || root(s).await == root(d).await,
        )
        .await;
        items += root(s).await.1;
    }
    assert_eq!(items, 90, "each event held once, by its partition's owner");
    // Importing again changes nothing.
    let again = import(&dst[0], &body).await;
    assert_eq!(
        (again["existing"].as_u64(), again["new"].as_u64()),
        (Some(90), Some(0)),
        "{again}"
    );
}

#[actix_web::test]
async fn histories_of_big_values_are_read_whole_where_they_are_not_held() {
    let a = node_timed("a", "1", &STEADY_PEERS, &[]);
    let b = node_timed("b", "1", &STEADY_PEERS, &["--join", &a.addr]);
    let nodes = vec![a, b];
    let ids: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    all_alive(&nodes, &ids).await;
    linked(&nodes).await;
    // A path b owns (its writes are coordinated there).
    let mut owned_by_b = None;
    for i in 0..40 {
        let path = format!("big/{i}/x");
        if write(&nodes[0], &path, "small").await.ends_with(".b") {
            owned_by_b = Some(path);
            break;
        }
    }
    let path = owned_by_b.expect("a path b owns");
    // Two values over the 8 MiB an owner's answer holds.
    let big = vec![b'x'; 9 << 20];
    for _ in 0..2 {
        let r = put(&nodes[0].at("raw", &path), &big).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let sizes = |events: &[serde_json::Value]| -> Vec<usize> {
        events
            .iter()
            .map(|e| e["value"].as_str().map_or(0, str::len))
            .collect()
    };
    let h = get(&nodes[0].at("history", &path)).await;
    assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&h.body));
    let events = h.json()["events"].as_array().unwrap().clone();
    assert_eq!(sizes(&events), [5, 9 << 20, 9 << 20]);
    // An export at a, which does not hold the prefix, has them too.
    let exported: Vec<serde_json::Value> = export(&nodes[0], "big")
        .await
        .into_iter()
        .filter(|e| e["path"] == path.as_str())
        .collect();
    assert_eq!(sizes(&exported), [5, 9 << 20, 9 << 20]);
}
