//! Anti-entropy between real nodes (child processes on loopback): two
//! owners cut apart, both taking writes, with a log retention too short for
//! cursors to help, converge once the link is back — latest values,
//! histories and merkle digests — while writes go on; and an explicit
//! repair of an owner that was down exchanges far less than the data.

mod common;

use std::collections::BTreeMap;

use common::*;
use futures_util::future::join_all;

const SECRET: &str = "a-cluster-secret-for-tests";

fn node(id: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--node-id",
        id,
        "--cluster-secret",
        SECRET,
        "--replication",
        "2",
        "--fault-injection",
    ];
    args.extend_from_slice(&FAST_PEERS);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Nodes a and b, both with `args` (b joins a), alive and linked: two
/// owners of everything.
async fn two(args: &[&str]) -> [Server; 2] {
    let a = node("a", args);
    let b = node("b", &[args, &["--join", &a.addr]].concat());
    let nodes = [a, b];
    all_alive(&nodes, &ids(&["a", "b"])).await;
    linked(&nodes).await;
    nodes
}

/// Two owners of everything cut apart both ways; their logs keep 50
/// entries, so after the cut neither side's cursor can be honoured.
async fn owners_cut_apart() -> [Server; 2] {
    let nodes = two(&["--log-retention", "50"]).await;
    cut(&nodes[0], &["b"]).await;
    cut(&nodes[1], &["a"]).await;
    nodes
}

/// The root digest of `s` (hash, items).
async fn root(s: &Server) -> (String, u64) {
    let d = get(&format!("{}?depth=0", s.at("digest", ""))).await.json();
    (
        d["hash"].as_str().unwrap().to_string(),
        d["items"].as_u64().unwrap(),
    )
}

/// Waits until both nodes have the same root digest; past the deadline,
/// shows their digests, anti-entropy metrics and warnings.
async fn converge(nodes: &[Server], when: &str) {
    let deadline = std::time::Instant::now() + EVENT_DEADLINE * 3;
    while root(&nodes[0]).await != root(&nodes[1]).await {
        if std::time::Instant::now() > deadline {
            for s in nodes {
                let d = get(&format!("{}?depth=1", s.at("digest", ""))).await.json();
                eprintln!("{}: {d}", s.addr);
                let m = get(&format!("{}/metrics", s.url)).await;
                for line in String::from_utf8_lossy(&m.body).lines() {
                    if line.starts_with("spread_antientropy") || line.starts_with("spread_merkle") {
                        eprintln!("  {line}");
                    }
                }
                for line in s
                    .log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                {
                    eprintln!("  {line}");
                }
            }
            panic!("the digests never met {when}");
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Writes `body` at `path` on `s` with `w=1` (the other owner may be cut
/// off), asserting it was taken.
async fn write(s: &Server, path: String, body: String) {
    let r = put(&format!("{}?w=1", s.at("raw", &path)), body.as_bytes()).await;
    assert!(
        r.status == 200 || r.status == 201,
        "{path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

/// Writes 2 MB at `s` with `w=all` (both owners hold it): 2,000 values of
/// 1 KB under `big/`, 50 at a time.
async fn write_2mb(s: &Server) {
    let value = "v".repeat(1000);
    for chunk in (0..2000).collect::<Vec<_>>().chunks(50) {
        join_all(chunk.iter().map(|i| {
            let value = &value;
            async move {
                let r = put(
                    &format!("{}?w=all", s.at("raw", &format!("big/{}/k{i}", i % 50))),
                    value.as_bytes(),
                )
                .await;
                assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            }
        }))
        .await;
    }
}

/// Every path's latest (version, value) and full history (versions) at `s`.
async fn state(s: &Server, paths: &[String]) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for p in paths {
        let r = get(&format!("{}?local=true", s.at("raw", p))).await;
        assert_eq!(r.status, 200, "{p} at {}", s.addr);
        let history = get(&format!("{}?values=false&limit=10000", s.at("history", p)))
            .await
            .json();
        let versions: Vec<String> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_str().unwrap().to_string())
            .collect();
        out.insert(
            p.clone(),
            (
                r.header("etag").unwrap_or_default(),
                String::from_utf8_lossy(&r.body).to_string(),
                versions.join(","),
            ),
        );
    }
    out
}

#[actix_web::test]
async fn owners_cut_apart_converge_in_values_histories_and_digests_while_writes_go_on() {
    let nodes = owners_cut_apart().await;
    // 1,000 writes on each side, 300 paths written on both.
    let paths: Vec<String> = (0..300).map(|i| format!("ae/{}/k{}", i % 40, i)).collect();
    for (side, s) in nodes.iter().enumerate() {
        for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
            join_all(
                chunk
                    .iter()
                    .map(|i| write(s, paths[i % 300].clone(), format!("side{side}-{i}"))),
            )
            .await;
        }
    }
    assert_ne!(
        root(&nodes[0]).await,
        root(&nodes[1]).await,
        "apart, they differ"
    );
    // Heal, and write on while the trees are compared (the first sweep
    // starts two heartbeats after the link is back).
    cut(&nodes[0], &[]).await;
    cut(&nodes[1], &[]).await;
    let mut live = Vec::new();
    let writes = 200;
    for i in 0..writes {
        let path = format!("live/{}", i % 20);
        write(&nodes[i % 2], path.clone(), format!("live-{i}")).await;
        live.push(path);
    }
    converge(&nodes, "after the heal").await;
    let i = writes;
    // Equal digests: equal values, versions and histories, path by path.
    let mut all = paths.clone();
    live.sort();
    live.dedup();
    all.extend(live.iter().cloned());
    wait_for("equal states", EVENT_DEADLINE, async || {
        state(&nodes[0], &all).await == state(&nodes[1], &all).await
    })
    .await;
    // The last live writes stand (none was reverted by the repair).
    let (last_a, last_b) = (state(&nodes[0], &live).await, state(&nodes[1], &live).await);
    assert_eq!(last_a, last_b);
    for (path, (_, value, _)) in &last_a {
        let n: usize = path.trim_start_matches("live/").parse().unwrap();
        let newest = (0..i).filter(|j| j % 20 == n).max().unwrap();
        assert_eq!(value, &format!("live-{newest}"), "{path}");
    }
    // Every path's history holds both sides' writes.
    let items = root(&nodes[0]).await.1;
    assert_eq!(
        items,
        2000 + writes as u64,
        "every event once, history included"
    );
    assert!(
        metric(
            &nodes[0],
            "spread_antientropy_sessions_total{result=\"ok\"}"
        )
        .await
            + metric(
                &nodes[1],
                "spread_antientropy_sessions_total{result=\"ok\"}"
            )
            .await
            >= 1.0
    );
}

#[actix_web::test]
async fn a_repair_of_an_owner_that_was_down_exchanges_far_less_than_the_data() {
    let mut nodes = two(&["--anti-entropy-interval", "0"]).await;
    write_2mb(&nodes[0]).await;
    // (The trees trail the writes: equal and whole.)
    wait_for("equal digests", EVENT_DEADLINE, async || {
        let a = root(&nodes[0]).await;
        a.1 == 2000 && a == root(&nodes[1]).await
    })
    .await;
    let ae_bytes = async |s: &Server| {
        metric(s, "spread_antientropy_bytes_total{dir=\"in\"}").await
            + metric(s, "spread_antientropy_bytes_total{dir=\"out\"}").await
    };
    // What the start moved (each side pulled the other's first writes)
    // is not the repair's.
    let a_before = ae_bytes(&nodes[0]).await;
    // b goes down; a takes 20 more writes; b comes back.
    nodes[1].kill9();
    for i in 0..20 {
        write(&nodes[0], format!("big/{}/new{i}", i % 50), format!("n{i}")).await;
    }
    nodes[1].restart();
    all_alive(&nodes, &ids(&["a", "b"])).await;
    // An explicit repair from b: whatever the streams have not brought yet
    // comes now, and the two agree.
    let r = send(http().post(format!("{}/repair/", nodes[1].url)), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    let sessions = report["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{report}");
    assert!(sessions[0].get("failed").is_none(), "{report}");
    converge(&nodes, "after the repair").await;
    // (b's counters started again with its restart.)
    let bytes = ae_bytes(&nodes[0]).await - a_before + ae_bytes(&nodes[1]).await;
    assert!(
        bytes < 200_000.0,
        "anti-entropy moved {bytes} bytes of 2 MB"
    );
    // A repair of a prefix, and a wrong method.
    let r = send(http().post(format!("{}/repair/big/7", nodes[0].url)), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["prefix"], "big/7");
    get(&format!("{}/repair/big", nodes[0].url))
        .await
        .assert_error(405, "method_not_allowed");
}

#[actix_web::test]
async fn a_session_cut_in_the_middle_succeeds_on_the_next_try() {
    let nodes = owners_cut_apart().await;
    // Enough differences for a session to take many questions.
    for (side, s) in nodes.iter().enumerate() {
        for chunk in (0..1500).collect::<Vec<_>>().chunks(50) {
            join_all(
                chunk
                    .iter()
                    .map(|i| write(s, format!("cut/{side}/{}/k{i}", i % 97), format!("v{i}"))),
            )
            .await;
        }
    }
    // A log is trimmed only as far as its node's trees reach (they trail
    // the writes by up to a second), and only when commits land: once the
    // trees hold every write, a few more trim each log past the other's
    // cursors, so the heal goes by the trees (else the streams could bring
    // it all, with no session to cut).
    for (side, s) in nodes.iter().enumerate() {
        wait_for("the trees folded the writes", EVENT_DEADLINE, async || {
            root(s).await.1 == 1500
        })
        .await;
        for i in 0..100 {
            write(s, format!("cut/{side}/more/k{i}"), "m".to_string()).await;
        }
    }
    cut(&nodes[0], &[]).await;
    cut(&nodes[1], &[]).await;
    // The sweep that follows the heal is cut while it asks.
    let questions = async |s: &Server| metric(s, "spread_antientropy_questions_total").await;
    wait_for("a session under way", EVENT_DEADLINE, async || {
        questions(&nodes[0]).await + questions(&nodes[1]).await >= 20.0
    })
    .await;
    cut(&nodes[0], &["b"]).await;
    cut(&nodes[1], &["a"]).await;
    let failed =
        async |s: &Server| metric(s, "spread_antientropy_sessions_total{result=\"failed\"}").await;
    wait_for("the session failed", EVENT_DEADLINE, async || {
        failed(&nodes[0]).await + failed(&nodes[1]).await >= 1.0
    })
    .await;
    // The node whose session failed, and its good sessions so far.
    let who = if failed(&nodes[0]).await >= 1.0 { 0 } else { 1 };
    let ok = async |s: &Server| metric(s, "spread_antientropy_sessions_total{result=\"ok\"}").await;
    let ok_before = ok(&nodes[who]).await;
    // Healed again: its next session succeeds, and the two agree. The
    // dialer may be at its longest backoff (5 s) after the failed tries
    // while cut, and the session then walks 3,200 differences: the same
    // allowance as `converge`.
    cut(&nodes[0], &[]).await;
    cut(&nodes[1], &[]).await;
    wait_for(
        "a good session after the failed one",
        EVENT_DEADLINE * 3,
        async || ok(&nodes[who]).await > ok_before,
    )
    .await;
    converge(&nodes, "after the second heal").await;
    assert_eq!(root(&nodes[0]).await.1, 3200);
}

#[actix_web::test]
async fn a_repair_waits_for_its_rate_and_still_converges() {
    let nodes = two(&["--log-retention", "50", "--anti-entropy-mb-per-sec", "1"]).await;
    cut(&nodes[0], &["b"]).await;
    cut(&nodes[1], &["a"]).await;
    // 3 MiB written at a while apart, as history: three times what the
    // throttle lets go at once (a second's worth). Each big value is then
    // overwritten, and the log keeps 50 entries: b's streams are reset,
    // and only anti-entropy brings what came before (big events of history
    // included).
    let value = "x".repeat(100 << 10);
    for i in 0..30 {
        write(&nodes[0], format!("thr/{i}/x"), value.clone()).await;
        write(&nodes[0], format!("thr/{i}/x"), "small".to_string()).await;
    }
    // Far more entries than the log keeps (it is trimmed a few partitions
    // per commit), so b's cursors cannot be honoured anywhere and the big
    // events can only come by anti-entropy.
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        join_all(
            chunk
                .iter()
                .map(|i| write(&nodes[0], format!("fill/{}/k{i}", i % 97), "f".to_string())),
        )
        .await;
    }
    cut(&nodes[0], &[]).await;
    cut(&nodes[1], &[]).await;
    converge(&nodes, "after the heal").await;
    // The sessions that moved it have ended (their time is counted then).
    for s in &nodes {
        wait_for("no session running", EVENT_DEADLINE, async || {
            metric(s, "spread_antientropy_sessions_running").await == 0.0
        })
        .await;
    }
    // Sent by a session (pushed) or answered to a fetch (pulled).
    let mut moved = 0.0;
    for s in &nodes {
        for dir in ["in", "out"] {
            moved += metric(
                s,
                &format!("spread_antientropy_bytes_total{{dir=\"{dir}\"}}"),
            )
            .await;
        }
    }
    // (Some of the 3 MiB may come by the stream: a reset resumes the log
    // from where the trees reach, which trail the writes by up to a second;
    // more than the second's worth the throttle saves must come this way.)
    assert!(
        moved > 1_500_000.0,
        "the big events came by anti-entropy: {moved}"
    );
    // The rate held: the events waited for it, or (a machine so loaded
    // that the repair went slower than the rate by itself) the sessions
    // took at least what the rate allows a. Every byte a sent went in a
    // session of a or of b, so their time together is at least the time it
    // took (the heal's redials and the wait for the sweep are not in it).
    // What a sent is what it pushed and what b's fetches got (names and
    // digests too, a few tens of KB); its bucket lets a second's worth go
    // at once.
    let name = "spread_antientropy_throttled_milliseconds_total";
    let waited = metric(&nodes[0], name).await + metric(&nodes[1], name).await;
    let sent_by_a = metric(&nodes[0], "spread_antientropy_bytes_total{dir=\"out\"}").await
        + metric(&nodes[1], "spread_antientropy_bytes_total{dir=\"in\"}").await;
    let millis = "spread_antientropy_session_milliseconds_total";
    let took = (metric(&nodes[0], millis).await + metric(&nodes[1], millis).await) / 1000.0;
    let rate = (1 << 20) as f64;
    assert!(
        waited > 0.0 || took >= sent_by_a / rate - 1.2,
        "the repair's events waited for the rate (a sent {sent_by_a} bytes in sessions of {took:.2} s)"
    );
}

#[actix_web::test]
async fn an_owner_whose_cursors_the_log_no_longer_honours_catches_up_by_its_trees() {
    // No periodic sessions: b starts none but its pulls (a, the lower id,
    // starts the sweep after a link comes up).
    let mut nodes = two(&["--log-retention", "50", "--anti-entropy-interval", "0"]).await;
    write_2mb(&nodes[0]).await;
    converge(&nodes, "before the stop").await;
    // b goes down; a takes far more writes than its log keeps, so b's
    // cursors cannot be honoured when it comes back.
    nodes[1].kill9();
    for i in 0..20 {
        write(&nodes[0], format!("big/{}/new{i}", i % 50), format!("n{i}")).await;
    }
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        join_all(
            chunk
                .iter()
                .map(|i| write(&nodes[0], format!("fill/{}/k{i}", i % 97), "f".to_string())),
        )
        .await;
    }
    // The log is trimmed only as far as a's trees reach (they trail the
    // writes by up to a second), and only when commits land: once the
    // trees hold every write, a few more writes trim it past b's cursors.
    wait_for("a's trees folded the writes", EVENT_DEADLINE, async || {
        root(&nodes[0]).await.1 == 2000 + 20 + 1000
    })
    .await;
    for i in 0..100 {
        write(
            &nodes[0],
            format!("fill/{}/more{i}", i % 97),
            "f".to_string(),
        )
        .await;
    }
    nodes[1].restart();
    all_alive(&nodes, &ids(&["a", "b"])).await;
    converge(&nodes, "after the restart").await;
    for i in 0..20 {
        let r = get(&format!(
            "{}?local=true",
            nodes[1].at("raw", &format!("big/{}/new{i}", i % 50))
        ))
        .await;
        assert_eq!((r.status, &r.body[..]), (200, format!("n{i}").as_bytes()));
    }
    // b's reset streams were caught up by pulling the differences from
    // a's trees, not by a copy of the 2 MB.
    let pulls = metric(
        &nodes[1],
        "spread_antientropy_sessions_total{result=\"ok\"}",
    )
    .await;
    assert!(pulls >= 1.0, "b pulled by its trees: {pulls}");
    let bytes_in = metric(&nodes[1], "spread_peer_bytes_total{dir=\"in\"}").await;
    assert!(
        bytes_in < 500_000.0,
        "b received {bytes_in} bytes after its restart, with 2 MB held by both"
    );
}
