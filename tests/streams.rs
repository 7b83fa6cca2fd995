//! SSE and WebSocket streams against a real node: snapshot, `ready`, live
//! updates, resume, reset, ops, MessagePack, pings and slow subscribers.

mod common;

use common::*;
use serde_json::json;

/// Writes `value` at `path`, returning the report.
async fn write(s: &Server, path: &str, value: &str) -> serde_json::Value {
    let r = put(&s.at("raw", path), value.as_bytes()).await;
    assert!(
        r.status == 200 || r.status == 201,
        "write of {path}: {}",
        r.status
    );
    r.json()
}

#[actix_web::test]
async fn sse_snapshot_then_ready_then_only_matching_updates() {
    let s = Server::start(&[]);
    write(&s, "a/one", "1").await;
    write(&s, "a/two/deep", "2").await;
    write(&s, "ab/not-under-a", "x").await;
    write(&s, "b/other", "x").await;

    let mut sse = SseClient::open(&s.at("sse", "a"), None).await;
    let first = sse.until_ready().await;
    let (snapshot, ready) = first.split_at(first.len() - 1);
    let paths: Vec<&str> = snapshot
        .iter()
        .map(|e| e.data["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["a/one", "a/two/deep"]);
    assert!(snapshot
        .iter()
        .all(|e| e.event == "snapshot" && e.id.is_empty()));
    assert_eq!(snapshot[0].data["value"], "1");
    let ready = &ready[0];
    assert_eq!(ready.data["cursor"], ready.id.as_str());
    assert!(
        ready.id.ends_with(":4"),
        "ready is at the head seq of the cut: {}",
        ready.id
    );

    write(&s, "b/other", "ignored").await;
    write(&s, "ab/x", "ignored").await;
    let report = write(&s, "a/x/y", "live").await;
    assert_eq!(report["propagation"]["subscribers"], 1);
    let update = sse.next_non_ping().await;
    assert_eq!(update.event, "update");
    assert_eq!(update.data["path"], "a/x/y");
    assert_eq!(update.data["value"], "live");
    assert_eq!(update.data["version"], report["version"]);
    assert_eq!(update.id, update.data["cursor"].as_str().unwrap());
    assert!(update.id.ends_with(&format!(":{}", report["seq"])));

    send(http().delete(s.at("raw", "a/one")), None).await;
    let deleted = sse.next_non_ping().await;
    assert_eq!(deleted.data["path"], "a/one");
    assert_eq!(deleted.data["deleted"], true);
}

#[actix_web::test]
async fn sse_resume_with_last_event_id_gets_exactly_the_missed_events() {
    let s = Server::start(&[]);
    write(&s, "r/base", "0").await;
    let mut sse = SseClient::open(&s.at("sse", "r"), None).await;
    sse.until_ready().await;
    write(&s, "r/one", "1").await;
    let seen = sse.next_non_ping().await;
    let cursor = seen.id.clone();
    drop(sse);

    write(&s, "r/two", "2").await;
    write(&s, "elsewhere", "x").await;
    write(&s, "r/one", "1b").await;
    let mut resumed = SseClient::open(&s.at("sse", "r"), Some(&cursor)).await;
    let got = resumed.until_ready().await;
    let missed: Vec<(String, String)> = got
        .iter()
        .filter(|e| e.event == "update")
        .map(|e| {
            (
                e.data["path"].as_str().unwrap().to_string(),
                e.data["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        missed,
        vec![("r/two".into(), "2".into()), ("r/one".into(), "1b".into())]
    );
    assert_eq!(got.len(), 3, "no snapshot on resume, no reset: {got:?}");
    write(&s, "r/three", "3").await;
    assert_eq!(resumed.next_non_ping().await.data["path"], "r/three");

    // The same cursor through ?since= gives the same answer.
    let mut by_query = SseClient::open(&format!("{}?since={cursor}", s.at("sse", "r")), None).await;
    let again = by_query.until_ready().await;
    assert_eq!(again.iter().filter(|e| e.event == "update").count(), 3);
}

#[actix_web::test]
async fn a_cursor_that_cannot_be_honoured_gets_reset_and_a_fresh_snapshot() {
    let s = Server::start(&["--log-retention", "5"]);
    let mut sse = SseClient::open(&s.at("sse", "t"), None).await;
    let ready = sse.until_ready().await.pop().unwrap();
    drop(sse);
    for i in 0..20 {
        write(&s, &format!("t/{}", i % 3), &i.to_string()).await;
    }
    // The log is trimmed only behind the merkle trees, which fold in the
    // background: once they hold every entry, a commit trims the log.
    wait_for("the trees folded every entry", EVENT_DEADLINE, async || {
        metric(&s, "spread_merkle_unfolded_entries").await == 0.0
    })
    .await;
    for i in 20..23 {
        write(&s, &format!("t/{}", i % 3), &i.to_string()).await;
    }
    for cursor in [ready.id.as_str(), "another-store:1", "garbage"] {
        let mut resumed = SseClient::open(&s.at("sse", "t"), Some(cursor)).await;
        let got = resumed.until_ready().await;
        assert_eq!(got[0].event, "reset", "cursor {cursor}: {got:?}");
        let snapshot: Vec<&str> = got
            .iter()
            .filter(|e| e.event == "snapshot")
            .map(|e| e.data["path"].as_str().unwrap())
            .collect();
        assert_eq!(snapshot, vec!["t/0", "t/1", "t/2"]);
    }
    // A cursor ahead of the log (another node's) is not a position here either.
    let ahead = format!("{}:999999", ready.id.split(':').next().unwrap());
    let mut resumed = SseClient::open(&s.at("sse", "t"), Some(&ahead)).await;
    assert_eq!(resumed.next().await.event, "reset");
}

#[actix_web::test]
async fn sse_pings_carry_the_log_head_when_quiet() {
    let s = Server::start(&["--ping-interval-ms", "200"]);
    let mut sse = SseClient::open(&s.at("sse", "quiet"), None).await;
    sse.until_ready().await;
    let report = write(&s, "elsewhere", "moves the head").await;
    let ping = sse.next().await;
    assert_eq!(ping.event, "ping");
    assert_eq!(ping.data, json!({}));
    // Pings keep coming; once the hub has published the write, they carry it.
    let head = format!(":{}", report["seq"]);
    let mut last = ping;
    for _ in 0..20 {
        if last.id.ends_with(&head) {
            break;
        }
        last = sse.next().await;
    }
    assert!(
        last.id.ends_with(&head),
        "ping id {} should reach seq {head}",
        last.id
    );
}

#[actix_web::test]
async fn websocket_snapshot_ready_updates_and_ops() {
    let s = Server::start(&[]);
    write(&s, "w/a", "1").await;
    write(&s, "z/other", "x").await;
    let mut ws = WsClient::connect(&s.ws_url("w")).await;
    let first = ws.until_ready().await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["type"], "snapshot");
    assert_eq!(first[0]["path"], "w/a");
    assert_eq!(first[1]["type"], "ready");
    assert_eq!(first[1]["path"], "w");

    ws.send_json(json!({"op": "set", "path": "w/b", "value": "two", "id": 1}))
        .await;
    let mut frames = [ws.next_non_ping().await, ws.next_non_ping().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_string());
    assert_eq!(frames[0]["type"], "reply");
    assert_eq!(frames[0]["id"], 1);
    assert_eq!(frames[0]["status"], "new");
    assert_eq!(frames[1]["type"], "update");
    assert_eq!(frames[1]["path"], "w/b");
    assert!(frames[1]["cursor"].as_str().unwrap().contains(':'));

    ws.send_json(json!({"op": "get", "path": "w/b", "id": "g"}))
        .await;
    let got = ws.next_non_ping().await;
    assert_eq!(
        (
            got["type"].as_str(),
            got["id"].as_str(),
            got["value"].as_str()
        ),
        (Some("reply"), Some("g"), Some("two"))
    );
    ws.send_json(json!({"op": "get", "path": "w/none", "id": 2}))
        .await;
    let missing = ws.next_non_ping().await;
    assert_eq!(
        (
            missing["type"].as_str(),
            missing["error"].as_str(),
            missing["id"].as_i64()
        ),
        (Some("error"), Some("not_found"), Some(2))
    );

    // Bad input: an error frame each, and the socket stays open.
    ws.send_text("{not json").await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["type"].as_str(), e["error"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    assert!(e["id"].is_null());
    ws.send_json(json!({"op": "explode", "id": 7})).await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["error"].as_str(), e["id"].as_i64()),
        (Some("bad_request"), Some(7))
    );
    ws.send_json(json!({"op": "set", "path": "w//x", "value": "v", "id": 8}))
        .await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["error"].as_str(), e["id"].as_i64()),
        (Some("bad_path"), Some(8))
    );

    // A second subscription on the same socket, then unsubscribe.
    ws.send_json(json!({"op": "subscribe", "path": "z"})).await;
    let z = ws.until_ready().await;
    assert_eq!(z[0]["path"], "z/other");
    ws.send_json(json!({"op": "unsubscribe", "path": "w", "id": 9}))
        .await;
    assert_eq!(ws.next_non_ping().await["id"], 9);
    ws.send_json(json!({"op": "delete", "path": "w/a", "id": 10}))
        .await;
    assert_eq!(
        ws.next_non_ping().await["status"],
        "new",
        "delete reply; no update after unsubscribe"
    );
    write(&s, "z/other", "y").await;
    let update = ws.next_non_ping().await;
    assert_eq!(
        (update["path"].as_str(), update["value"].as_str()),
        (Some("z/other"), Some("y"))
    );
}

#[actix_web::test]
async fn websocket_resume_and_messagepack() {
    let s = Server::start(&[]);
    let mut ws = WsClient::connect(&s.ws_url("m?format=msgpack")).await;
    let ready = ws.until_ready().await.pop().unwrap();
    let cursor = ready["cursor"].as_str().unwrap().to_string();
    write(&s, "m/1", "one").await;
    let update = ws.next_non_ping().await;
    assert_eq!(
        (update["type"].as_str(), update["value"].as_str()),
        (Some("update"), Some("one"))
    );
    drop(ws);

    write(&s, "m/2", "two").await;
    let mut resumed = WsClient::connect(&s.ws_url(&format!("m?since={cursor}"))).await;
    let frames = resumed.until_ready().await;
    let paths: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "update")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["m/1", "m/2"]);
}

#[actix_web::test]
async fn a_subscriber_that_never_reads_stays_bounded_while_others_keep_receiving() {
    let s = Server::start(&[
        "--durability",
        "lazy",
        "--cache-mb",
        "32",
        "--subscriber-queue-items",
        "64",
        "--subscriber-queue-bytes",
        "1048576",
    ]);
    let mut reader = SseClient::open(&s.at("sse", "load"), None).await;
    reader.until_ready().await;
    const WRITES: usize = 1000; // 64 MiB of values per phase
    let value = "v".repeat(64 * 1024);

    // Phase A, the baseline: what the store itself costs for this load.
    let before_a = s.rss_kib();
    write_and_read(&s, "load/a", &value, WRITES, &mut reader).await;
    let growth_a = s.rss_kib().saturating_sub(before_a) / 1024;

    // Phase B: the same load with four clients that never read. Unbounded
    // buffering would hold 4 x 64 MiB for them.
    let stalled: Vec<_> = (0..4).map(|_| raw_ws_subscribe(&s.addr, "load")).collect();
    wait_for("the stalled subscribers", EVENT_DEADLINE, async || {
        metric(&s, "spread_subscribers").await == 5.0
    })
    .await;
    let before_b = s.rss_kib();
    write_and_read(&s, "load/b", &value, WRITES, &mut reader).await;
    wait_for(
        "the stalled subscribers to be dropped",
        EVENT_DEADLINE,
        async || metric(&s, "spread_subscribers_lagged_total").await >= 4.0,
    )
    .await;
    assert_eq!(
        metric(&s, "spread_subscribers").await,
        1.0,
        "only the reader is left"
    );
    let growth_b = s.rss_kib().saturating_sub(before_b) / 1024;
    assert!(
        growth_b < growth_a + 96,
        "with stalled subscribers RSS grew {growth_b} MiB, against {growth_a} MiB without"
    );
    drop(stalled);
}

/// Writes `count` values at `path` while `reader` must receive each one.
async fn write_and_read(s: &Server, path: &str, value: &str, count: usize, reader: &mut SseClient) {
    let url = s.at("raw", path);
    let writer = async {
        for _ in 0..count {
            let r = put(&url, value.as_bytes()).await;
            assert_eq!(r.status / 100, 2);
        }
    };
    let reading = async {
        let mut n = 0;
        while n < count {
            let e = reader.next_non_ping().await;
            assert_eq!(
                (e.event.as_str(), e.data["path"].as_str()),
                ("update", Some(path))
            );
            n += 1;
        }
        n
    };
    let ((), received) = futures_util::future::join(writer, reading).await;
    assert_eq!(received, count, "the reading subscriber got every change");
}

/// A WebSocket subscription by hand on a socket that is then never read.
fn raw_ws_subscribe(addr: &str, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /wss/{path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

#[actix_web::test]
async fn the_cli_watch_and_set_verbs_talk_to_a_node() {
    let s = Server::start(&[]);
    let bin = env!("CARGO_BIN_EXE_spread");
    let set = std::process::Command::new(bin)
        .args(["set", "--server", &s.url, "cli/x", "from-cli"])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(report["status"], "new");
    let got = std::process::Command::new(bin)
        .args(["get", "--server", &s.url, "cli/x"])
        .output()
        .unwrap();
    assert_eq!(got.stdout, b"from-cli");
    let missing = std::process::Command::new(bin)
        .args(["get", "--server", &s.url, "cli/none"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    let watch = std::process::Command::new(bin)
        .args(["watch", "--server", &s.url, "cli", "--count", "1"])
        .output()
        .unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(watch.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["data"]["value"].as_str()),
        (Some("snapshot"), Some("from-cli"))
    );
}

#[actix_web::test]
async fn an_oversized_websocket_frame_closes_that_socket_only() {
    let s = Server::start(&["--ws-max-frame-bytes", "1024"]);
    let mut other = WsClient::connect(&s.ws_url("f")).await;
    other.until_ready().await;
    let mut ws = WsClient::connect(&s.ws_url("f")).await;
    ws.until_ready().await;
    let big = json!({"op": "set", "path": "f/x", "value": "x".repeat(4096)}).to_string();
    ws.send_text(&big).await;
    let closed = loop {
        match ws.next_frame().await {
            Ok(f) if f["type"] == "ping" => continue,
            other => break other,
        }
    };
    assert_eq!(closed, Err(Some(1009)), "closed with 'message too big'");
    get(&s.at("raw", "f/x"))
        .await
        .assert_error(404, "not_found");
    write(&s, "f/y", "still serving").await;
    assert_eq!(other.next_non_ping().await["path"], "f/y");
}

#[actix_web::test]
async fn the_cli_list_history_and_del_verbs_talk_to_a_node() {
    let s = Server::start(&[]);
    let bin = env!("CARGO_BIN_EXE_spread");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("SPREAD_SERVER", &s.url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["set", "dir/a", "1"]);
    assert!(ok, "{err}");
    run(&["set", "dir/a", "2"]);
    run(&["set", "dir/b", "3", "--content-type", "text/plain"]);
    let (ok, listing, _) = run(&["list", "dir"]);
    assert!(ok);
    let rows: Vec<Vec<&str>> = listing.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0][0], rows[0][2]), ("dir/a", "1"));
    assert_eq!((rows[1][0], rows[1][3]), ("dir/b", "text/plain"));
    let (ok, deleted, _) = run(&["del", "dir/a"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&deleted).unwrap()["status"],
        "new"
    );
    let (ok, history, _) = run(&["history", "dir/a"]);
    assert!(ok);
    let events: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let values: Vec<&str> = events
        .iter()
        .map(|e| e["value"].as_str().unwrap_or("<deleted>"))
        .collect();
    assert_eq!(values, vec!["1", "2", "<deleted>"]);
    let (ok, _, err) = run(&["get", "dir//a"]);
    assert!(!ok && err.contains("bad_path"), "{err}");
}

/// Writes at most this many small values before a stalled reader must have
/// been cut (see the test below).
const STALL_WRITES: usize = 3000;

/// Small writes under `prefix` until every stalled subscriber is cut as
/// lagging or `STALL_WRITES` are made, while `reader` receives each one;
/// returns the number of writes made when the last one was cut.
async fn writes_until_cut(
    s: &Server,
    prefix: &str,
    stalled: f64,
    reader: &mut SseClient,
) -> Option<usize> {
    let value = "s".repeat(200);
    for i in 1..=STALL_WRITES {
        let r = put(
            &s.at("raw", &format!("{prefix}/{}", i % 10)),
            value.as_bytes(),
        )
        .await;
        assert_eq!(r.status / 100, 2);
        let e = reader.next_non_ping().await;
        assert_eq!(e.event, "update");
        if i % 25 == 0 && metric(s, "spread_subscribers_lagged_total").await >= stalled {
            return Some(i);
        }
    }
    None
}

#[actix_web::test]
async fn a_stalled_stream_is_cut_after_a_bounded_amount_of_data() {
    // With the kernel's autotuned send buffers (up to 4 MiB a socket), a
    // client that stops reading absorbed 3,500-5,000 updates before the
    // server's own queue started to count; bounded send buffers cut it
    // after its queue (64 items here) and about 200 KiB in the kernel.
    let s = Server::start(&["--durability", "lazy", "--subscriber-queue-items", "64"]);
    let mut reader = SseClient::open(&s.at("sse", "stall"), None).await;
    reader.until_ready().await;
    let stalled: Vec<_> = (0..3).map(|_| raw_ws_subscribe(&s.addr, "stall")).collect();
    wait_for("the stalled subscribers", EVENT_DEADLINE, async || {
        metric(&s, "spread_subscribers").await == 4.0
    })
    .await;
    let cut = writes_until_cut(&s, "stall", 3.0, &mut reader).await;
    assert!(
        cut.is_some(),
        "{STALL_WRITES} updates of ~300 bytes did not get a stalled subscriber cut"
    );
    assert_eq!(
        metric(&s, "spread_subscribers").await,
        1.0,
        "the reader stays"
    );
    drop(stalled);
}
