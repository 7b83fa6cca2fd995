//! Reading the past, rolling back, playing back and exporting, against a real
//! node over HTTP and through the `spread` command line.

mod common;

use common::*;

/// 2023-11-14T22:13:20Z in microseconds: events below are written at
/// explicit times from here, so every read of the past is exact.
const T0: u64 = 1_700_000_000_000_000;
const S: u64 = 1_000_000;

/// Writes `body` at `path` with an explicit event time (and `query`).
async fn put_at(s: &Server, path: &str, time: u64, query: &str, body: &[u8]) -> Reply {
    let r = send(
        http()
            .put(format!("{}{query}", s.at("raw", path)))
            .insert_header(("x-spread-time", time.to_string())),
        Some(body),
    )
    .await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    r
}

/// Deletes `path` with an explicit event time.
async fn delete_at(s: &Server, path: &str, time: u64) {
    let r = send(
        http()
            .delete(s.at("raw", path))
            .insert_header(("x-spread-time", time.to_string())),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// The body at `path` as of `at` (any form the API takes), or the status.
async fn read_at(s: &Server, path: &str, at: &str) -> Result<String, u16> {
    let r = get(&format!("{}?at={at}", s.at("raw", path))).await;
    match r.status {
        200 => Ok(String::from_utf8(r.body.to_vec()).unwrap()),
        404 => {
            r.assert_error(404, "not_found");
            Err(404)
        }
        other => Err(other),
    }
}

/// The paths and versions a listing of `prefix` as of `at` holds.
async fn list_at(s: &Server, prefix: &str, at: &str) -> Vec<String> {
    let r = get(&format!("{}?at={at}", s.at("list", prefix))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Runs the `spread` command line against `s`; its standard output, or
/// its standard error when it failed.
fn cli(s: &Server, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(args)
        .args(["--server", &s.url])
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    if out.status.success() {
        Ok(text(out.stdout))
    } else {
        Err(text(out.stderr))
    }
}

#[actix_web::test]
async fn reads_of_the_past_answer_as_a_path_and_a_listing_stood() {
    let s = Server::start(&[]);
    put_at(&s, "doc/a", T0, "", b"a1").await;
    put_at(&s, "doc/b", T0 + 5 * S, "?ttl=10", b"b1").await; // expires at T0 + 15 s
    put_at(&s, "doc/a", T0 + 10 * S, "", b"a2").await;
    delete_at(&s, "doc/a", T0 + 20 * S).await;
    put_at(&s, "doc/c", T0 + 30 * S, "", b"c1").await;

    let us = |t: u64| t.to_string();
    assert_eq!(read_at(&s, "doc/a", &us(T0 - 1)).await, Err(404), "before");
    assert_eq!(read_at(&s, "doc/a", &us(T0)).await.as_deref(), Ok("a1"));
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 10 * S - 1)).await.as_deref(),
        Ok("a1")
    );
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 15 * S)).await.as_deref(),
        Ok("a2")
    );
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 25 * S)).await,
        Err(404),
        "deleted"
    );
    assert_eq!(
        read_at(&s, "doc/b", &us(T0 + 14 * S)).await.as_deref(),
        Ok("b1")
    );
    assert_eq!(
        read_at(&s, "doc/b", &us(T0 + 15 * S)).await,
        Err(404),
        "expired"
    );
    // RFC 3339, with an offset and a fraction, names the same moments.
    assert_eq!(
        read_at(&s, "doc/a", "2023-11-14T22:13:25Z")
            .await
            .as_deref(),
        Ok("a1")
    );
    assert_eq!(
        read_at(&s, "doc/a", "2023-11-14T23:13:30.000001%2B01:00")
            .await
            .as_deref(),
        Ok("a2")
    );
    // The ETag of a past read is the version that stood then.
    let r = get(&format!("{}?at={}", s.at("raw", "doc/a"), T0 + 12 * S)).await;
    assert!(r
        .header("etag")
        .unwrap()
        .starts_with(&format!("\"{}.", T0 + 10 * S)));

    // Listings: before, between and after the changes.
    let l = async |t: u64| list_at(&s, "doc", &us(t)).await;
    assert!(l(T0 - 1).await.is_empty());
    assert_eq!(l(T0 + 6 * S).await, ["doc/a", "doc/b"]);
    assert_eq!(l(T0 + 16 * S).await, ["doc/a"]);
    assert!(l(T0 + 21 * S).await.is_empty());
    assert_eq!(l(T0 + 31 * S).await, ["doc/c"]);
    assert_eq!(
        list_at(&s, "doc", "2023-11-14T22:13:26Z").await,
        ["doc/a", "doc/b"]
    );

    // A malformed time is a 400 naming the parameter, never a guess.
    for bad in ["yesterday", "-1", "2023-11-14", "99999999999999999999"] {
        let r = get(&format!("{}?at={bad}", s.at("raw", "doc/a"))).await;
        r.assert_error(400, "bad_time");
        assert!(r.json()["detail"].as_str().unwrap().contains("?at"));
        get(&format!("{}?at={bad}", s.at("list", "doc")))
            .await
            .assert_error(400, "bad_time");
    }
    get(&format!("{}?from=soon", s.at("history", "doc/a")))
        .await
        .assert_error(400, "bad_time");
    // History ranges take RFC 3339 too.
    let h = get(&format!(
        "{}?from=2023-11-14T22:13:25Z&to=2023-11-14T22:13:45Z",
        s.at("history", "doc/a")
    ))
    .await
    .json();
    assert_eq!(h["events"].as_array().unwrap().len(), 2, "{h}");

    // The command line: `get --at` and `list --at`.
    let at = (T0 + 12 * S).to_string();
    assert_eq!(cli(&s, &["get", "doc/a", "--at", &at]), Ok("a2".into()));
    let listed = cli(&s, &["list", "doc", "--at", "2023-11-14T22:13:26Z"]).unwrap();
    let paths: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(paths, ["doc/a", "doc/b"]);
    let err = cli(&s, &["get", "doc/a", "--at", &(T0 + 25 * S).to_string()]).unwrap_err();
    assert!(err.contains("not_found"), "{err}");
    let err = cli(&s, &["get", "doc/a", "--at", "noon"]).unwrap_err();
    assert!(err.contains("bad_time"), "{err}");
}

/// Every live path under `prefix` with its value, from a listing and reads.
async fn state_of(s: &Server, prefix: &str, at: Option<u64>) -> Vec<(String, String)> {
    let q = at.map_or(String::new(), |t| format!("&at={t}"));
    let page = get(&format!("{}?limit=10000{q}", s.at("list", prefix)))
        .await
        .json();
    assert!(page["next"].is_null());
    let mut out = Vec::new();
    for e in page["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        let q = at.map_or(String::new(), |t| format!("?at={t}"));
        let r = get(&format!("{}{q}", s.at("raw", path))).await;
        assert_eq!(r.status, 200);
        out.push((
            path.to_string(),
            String::from_utf8(r.body.to_vec()).unwrap(),
        ));
    }
    out
}

#[actix_web::test]
async fn a_path_rolls_back_to_a_version_or_a_time_as_a_new_event() {
    let s = Server::start(&[]);
    let v1 = put_at(&s, "cfg/x", T0, "", b"one").await.json()["version"]
        .as_str()
        .unwrap()
        .to_string();
    put_at(&s, "cfg/x", T0 + S, "", b"two").await;
    delete_at(&s, "cfg/x", T0 + 2 * S).await;
    let mut sse = SseClient::open(&s.at("sse", "cfg"), None).await;
    sse.until_ready().await;

    // To a version: the value it had is written anew; history only grows.
    let r = send(
        http().post(format!("{}?to={v1}", s.at("rollback", "cfg/x"))),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report = r.json();
    assert_eq!(report["status"], "new");
    assert_eq!(report["path"], "cfg/x");
    assert_ne!(
        report["version"],
        v1.as_str(),
        "a new event, not the old one"
    );
    assert_eq!(get(&s.at("raw", "cfg/x")).await.body.as_ref(), b"one");
    let update = sse.next_non_ping().await;
    assert_eq!(
        (update.event.as_str(), &update.data["value"]),
        ("update", &"one".into())
    );
    let history = get(&s.at("history", "cfg/x")).await.json();
    assert_eq!(history["events"].as_array().unwrap().len(), 4);

    // To a time (RFC 3339) when it held "two"; then to before it existed:
    // a tombstone, seen by subscribers as a delete.
    let r = send(
        http().post(format!(
            "{}?to=2023-11-14T22:13:21.5Z",
            s.at("rollback", "cfg/x")
        )),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(&s.at("raw", "cfg/x")).await.body.as_ref(), b"two");
    assert_eq!(sse.next_non_ping().await.data["value"], "two");
    let r = send(
        http().post(format!("{}?to={}", s.at("rollback", "cfg/x"), T0 - 1)),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    get(&s.at("raw", "cfg/x"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(sse.next_non_ping().await.data["deleted"], true);

    // The command line, to the first version again.
    let out = cli(&s, &["rollback", "cfg/x", "--to", &v1]).unwrap();
    assert!(out.contains("\"new\""), "{out}");
    assert_eq!(get(&s.at("raw", "cfg/x")).await.body.as_ref(), b"one");

    // Bad requests are refused with what is wrong, and nothing is written.
    let before = get(&s.at("history", "cfg/x")).await.json();
    let post = |q: &str| {
        send(
            http().post(format!("{}{q}", s.at("rollback", "cfg/x"))),
            None,
        )
    };
    post("").await.assert_error(400, "bad_request");
    post("?to=last-week").await.assert_error(400, "bad_time");
    post("?to=5.not%20a%20node")
        .await
        .assert_error(400, "bad_time");
    post(&format!("?to={v1}&w=2"))
        .await
        .assert_error(400, "bad_request");
    send(http().post(format!("{}?to=1", s.at("rollback", ""))), None)
        .await
        .assert_error(400, "bad_path");
    send(
        http().get(format!("{}?to=1", s.at("rollback", "cfg/x"))),
        None,
    )
    .await
    .assert_error(405, "method_not_allowed");
    assert_eq!(get(&s.at("history", "cfg/x")).await.json(), before);
}

#[actix_web::test]
async fn a_recursive_rollback_restores_a_subtree_exactly_and_subscribers_see_updates() {
    let s = Server::start(&[]);
    // 100 paths as they stood at T1…
    for i in 0..100 {
        put_at(
            &s,
            &format!("tree/{:03}", i),
            T0 + i * S,
            "",
            format!("v{i}").as_bytes(),
        )
        .await;
    }
    let t1 = T0 + 100 * S;
    let then = state_of(&s, "tree", Some(t1)).await;
    assert_eq!(then.len(), 100);
    // …then 30 changed, 20 deleted and 25 created after it.
    let later = T0 + 1000 * S;
    for i in 0..30 {
        put_at(&s, &format!("tree/{:03}", i), later + i, "", b"changed").await;
    }
    for i in 30..50 {
        delete_at(&s, &format!("tree/{:03}", i), later + i).await;
    }
    for i in 0..25 {
        put_at(&s, &format!("tree/new/{i}"), later + 100 + i, "", b"new").await;
    }
    assert_ne!(state_of(&s, "tree", None).await, then);
    let mut sse = SseClient::open(&s.at("sse", "tree"), None).await;
    sse.until_ready().await;

    let r = send(
        http().post(format!(
            "{}?to={t1}&recursive=true",
            s.at("rollback", "tree")
        )),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answer = r.json();
    assert_eq!(answer["reports"].as_array().unwrap().len(), 75, "{answer}");
    assert_eq!(answer["unchanged"], 50);
    assert!(answer.get("failed").is_none());
    assert_eq!(
        state_of(&s, "tree", None).await,
        then,
        "exactly as it stood"
    );

    // Subscribers saw each change as an ordinary update: 30 values back,
    // 20 values restored, 25 deletes.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 75 {
        let e = sse.next_non_ping().await;
        assert_eq!(e.event, "update", "{e:?}");
        seen.insert(e.data["path"].as_str().unwrap().to_string(), e.data);
    }
    let deletes = seen.values().filter(|d| d["deleted"] == true).count();
    assert_eq!(deletes, 25);
    assert_eq!(seen["tree/007"]["value"], "v7");
    assert_eq!(seen["tree/040"]["value"], "v40");

    // Rolling back again changes nothing.
    let again = send(
        http().post(format!(
            "{}?to={t1}&recursive=true",
            s.at("rollback", "tree")
        )),
        None,
    )
    .await
    .json();
    assert_eq!(again["reports"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["unchanged"], 125);
    // The command line takes the same subtree.
    let out = cli(
        &s,
        &["rollback", "tree", "--to", &t1.to_string(), "--recursive"],
    )
    .unwrap();
    assert!(out.contains("\"unchanged\": 125"), "{out}");
}

/// The version of an event's JSON, as a sortable (time, node) pair.
fn version_of(data: &serde_json::Value) -> (u64, String) {
    let v = data["version"].as_str().unwrap();
    let (time, node) = v.split_once('.').unwrap();
    (time.parse().unwrap(), node.to_string())
}

#[actix_web::test]
async fn a_playback_streams_history_in_order_then_live_with_no_gap_or_duplicate() {
    let s = Server::start(&[]);
    // Enough history that the playback takes several passes, while the
    // writer below lands writes in the paths being read.
    let mut from = 0;
    for i in 0..3000u64 {
        let r = put(
            &s.at("raw", &format!("play/{}", i % 20)),
            format!("v{i}").as_bytes(),
        )
        .await;
        if i == 500 {
            from = version_of(&r.json()).0;
        }
    }
    // A writer goes on all through the playback and its hand-over to live.
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let writer = {
        let (url, stop) = (s.url.clone(), stop.clone());
        actix_web::rt::spawn(async move {
            let mut n = 0u64;
            while !stop.get() {
                // The paths being played back: a write that lands while
                // their history is read must come once, either way.
                let r = put(&format!("{url}/raw/play/{}", n % 20), b"w").await;
                assert_eq!(r.status, 200);
                n += 1;
            }
            n
        })
    };
    let mut sse = SseClient::open(&format!("{}?from={from}", s.at("sse", "play")), None).await;
    let mut seen = Vec::new();
    let mut played = Vec::new();
    loop {
        let e = sse.next_non_ping().await;
        match e.event.as_str() {
            "playback" => {
                assert!(e.id.is_empty(), "a played event has no resume point: {e:?}");
                played.push(version_of(&e.data));
                seen.push(version_of(&e.data));
            }
            "update" => seen.push(version_of(&e.data)),
            "ready" => break,
            other => panic!("unexpected {other}: {e:?}"),
        }
    }
    assert!(played.len() >= 2500, "{}", played.len());
    assert!(played.windows(2).all(|w| w[0] < w[1]), "in version order");
    // Live updates while the writer goes on, then it stops and a last
    // write marks the end.
    for _ in 0..20 {
        let e = sse.next_non_ping().await;
        assert_eq!(e.event, "update");
        seen.push(version_of(&e.data));
    }
    stop.set(true);
    let written = writer.await.unwrap();
    let last = put(&s.at("raw", "play/last"), b"end").await.json();
    loop {
        let e = sse.next_non_ping().await;
        assert_eq!(e.event, "update");
        seen.push(version_of(&e.data));
        if e.data["path"] == "play/last" {
            break;
        }
    }
    // Exactly the events since `from`: every one once, none missing.
    let mut expected = Vec::new();
    for i in 0..20 {
        let h = get(&s.at("history", &format!("play/{i}"))).await.json();
        expected.extend(h["events"].as_array().unwrap().iter().map(version_of));
    }
    expected.push(version_of(&last));
    expected.retain(|v| v.0 >= from);
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no event twice");
    let missing: Vec<_> = expected
        .iter()
        .filter(|v| sorted.binary_search(v).is_err())
        .take(5)
        .collect();
    assert!(missing.is_empty(), "no event missing: {missing:?}…");
    assert_eq!(
        sorted.len(),
        expected.len(),
        "nothing but the events since `from`"
    );
    assert!(written > 0);
}

#[actix_web::test]
async fn a_bounded_playback_ends_and_every_client_can_ask_for_one() {
    let s = Server::start(&[]);
    for i in 0..10u64 {
        put_at(
            &s,
            &format!("rec/{}", i % 3),
            T0 + i * S,
            "",
            format!("r{i}").as_bytes(),
        )
        .await;
    }
    let (from, to) = (T0 + 2 * S, T0 + 6 * S);
    // SSE: the events in [from, to], `end`, and the stream closes.
    let mut sse =
        SseClient::open(&format!("{}?from={from}&to={to}", s.at("sse", "rec")), None).await;
    let mut values = Vec::new();
    loop {
        let e = sse
            .try_next()
            .await
            .expect("the end event before the stream ends");
        match e.event.as_str() {
            "playback" => values.push(e.data["value"].as_str().unwrap().to_string()),
            "end" => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(values, ["r2", "r3", "r4", "r5", "r6"]);
    assert!(
        sse.try_next().await.is_none(),
        "the stream ends after `end`"
    );
    // RFC 3339 bounds name the same range.
    let mut sse = SseClient::open(
        &format!(
            "{}?from=2023-11-14T22:13:22Z&to=2023-11-14T22:13:26Z",
            s.at("sse", "rec")
        ),
        None,
    )
    .await;
    let mut n = 0;
    while sse.try_next().await.expect("end").event == "playback" {
        n += 1;
    }
    assert_eq!(n, 5);

    // WebSocket: on the URL (bounded), then by op (unbounded: it goes live).
    let mut ws = WsClient::connect(&s.ws_url(&format!("rec?from={from}&to={to}"))).await;
    let mut frames = Vec::new();
    loop {
        let f = ws.next_non_ping().await;
        if f["type"] == "end" {
            assert_eq!(f["path"], "rec");
            break;
        }
        assert_eq!(f["type"], "playback", "{f}");
        frames.push(f["value"].as_str().unwrap().to_string());
    }
    assert_eq!(frames, values);
    ws.send_json(serde_json::json!({"op": "subscribe", "path": "rec", "from": (T0 + 8 * S).to_string(), "id": 1}))
        .await;
    let f = ws.next_non_ping().await;
    assert_eq!(
        (f["type"].as_str(), f["value"].as_str()),
        (Some("playback"), Some("r8"))
    );
    assert_eq!(ws.next_non_ping().await["value"], "r9");
    assert_eq!(ws.next_non_ping().await["type"], "ready");
    put(&s.at("raw", "rec/live"), b"now").await;
    let f = ws.next_non_ping().await;
    assert_eq!(
        (f["type"].as_str(), f["path"].as_str()),
        (Some("update"), Some("rec/live"))
    );
    ws.send_json(serde_json::json!({"op": "subscribe", "path": "x", "from": "noon", "id": 2}))
        .await;
    let f = ws.next_non_ping().await;
    assert_eq!(
        (f["type"].as_str(), f["error"].as_str(), f["id"].as_i64()),
        (Some("error"), Some("bad_time"), Some(2))
    );

    // The command line: `watch --from --to` prints the events and stops.
    let out = cli(
        &s,
        &[
            "watch",
            "rec",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ],
    )
    .unwrap();
    let kinds: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kinds.len(), 6, "{out}");
    assert_eq!(kinds[5]["event"], "end");

    // Bad ranges are refused before any stream starts.
    let sse_at = async |q: &str| get(&format!("{}{q}", s.at("sse", "rec"))).await;
    sse_at(&format!("?to={to}"))
        .await
        .assert_error(400, "bad_request");
    sse_at(&format!("?from={to}&to={from}"))
        .await
        .assert_error(400, "bad_request");
    sse_at("?from=whenever").await.assert_error(400, "bad_time");
}

#[actix_web::test]
async fn compacted_history_answers_410_naming_the_oldest_time_kept() {
    let s = Server::start(&[
        "--history-keep-versions",
        "2",
        "--log-retention",
        "4",
        "--compaction-interval-ms",
        "20",
    ]);
    for i in 0..12u64 {
        put_at(&s, "k/x", T0 + i * S, "", format!("x{i}").as_bytes()).await;
    }
    // Other writes move the change log on, so the old events leave it and
    // compaction may take them.
    let mut n = 0;
    wait_for("k/x compacted to 2 events", EVENT_DEADLINE, async || {
        n += 1;
        put(&s.at("raw", &format!("filler/{}", n % 5)), b"f").await;
        get(&s.at("history", "k/x")).await.json()["events"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let oldest = T0 + 10 * S;
    assert_eq!(
        read_at(&s, "k/x", &(T0 + 10 * S).to_string())
            .await
            .as_deref(),
        Ok("x10")
    );
    assert_eq!(
        get(&s.at("raw", "k/x")).await.body.as_ref(),
        b"x11",
        "the latest value stays"
    );
    // Everything before what is kept: 410, naming the oldest time known.
    let gone = |r: Reply| {
        r.assert_error(410, "compacted");
        assert_eq!(r.json()["oldest"], oldest, "{}", r.json());
        assert!(r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("2023-11-14T22:13:30Z"));
    };
    gone(get(&format!("{}?at={}", s.at("raw", "k/x"), T0 + 3 * S)).await);
    gone(get(&format!("{}?at={}", s.at("list", "k"), T0 + 3 * S)).await);
    gone(get(&format!("{}?from={}", s.at("history", "k/x"), T0 + S)).await);
    gone(get(&format!("{}?from={}", s.at("sse", "k"), T0)).await);
    gone(
        send(
            http().post(format!("{}?to={}", s.at("rollback", "k/x"), T0 + S)),
            None,
        )
        .await,
    );
    // A WebSocket playback asked by op: an error frame for that request
    // (the socket stays open and serves on).
    let mut ws = WsClient::connect(&s.ws_url("other")).await;
    ws.until_ready().await;
    ws.send_json(
        serde_json::json!({"op": "subscribe", "path": "k", "from": T0.to_string(), "id": 7}),
    )
    .await;
    let f = ws.next_non_ping().await;
    assert_eq!(
        (f["type"].as_str(), f["error"].as_str(), f["id"].as_i64()),
        (Some("error"), Some("compacted"), Some(7)),
        "{f}"
    );
    put(&s.at("raw", "other/x"), b"still served").await;
    let f = ws.next_non_ping().await;
    assert_eq!(f["value"], "still served", "{f}");
    let err = cli(&s, &["get", "k/x", "--at", &(T0 + S).to_string()]).unwrap_err();
    assert!(err.contains("compacted"), "{err}");
    assert!(metric(&s, "spread_history_compacted_events_total").await >= 10.0);
}

#[actix_web::test]
async fn a_ttl_expiry_reaches_a_subscriber_once_and_a_restarted_node_agrees() {
    let mut s = Server::start(&[]);
    let mut sse = SseClient::open(&s.at("sse", "ttl"), None).await;
    sse.until_ready().await;
    let r = put(&format!("{}?ttl=1", s.at("raw", "ttl/x")), b"brief").await;
    assert_eq!(r.status, 201);
    let written = sse.next_non_ping().await;
    assert_eq!(
        (written.event.as_str(), &written.data["value"]),
        ("update", &"brief".into())
    );
    // About a second later (the deadline is longer), the expiry, as a delete.
    let expiry = sse.next_non_ping().await;
    assert_eq!(expiry.event, "update");
    assert_eq!(
        (
            expiry.data["path"].as_str(),
            expiry.data["deleted"].as_bool()
        ),
        (Some("ttl/x"), Some(true))
    );
    get(&s.at("raw", "ttl/x"))
        .await
        .assert_error(404, "not_found");
    // Once: the next event is a later write, not a second delete.
    put(&s.at("raw", "ttl/y"), b"y").await;
    assert_eq!(sse.next_non_ping().await.data["path"], "ttl/y");
    // After a crash and a restart: the same history, and a resume from
    // before the expiry replays it once.
    s.kill9();
    s.restart();
    let mut resumed = SseClient::open(&s.at("sse", "ttl/x"), Some(&written.id)).await;
    let replayed = resumed.until_ready().await;
    let deletes: Vec<_> = replayed
        .iter()
        .filter(|e| e.data["deleted"] == true)
        .collect();
    assert_eq!(deletes.len(), 1, "{replayed:?}");
    assert_eq!(
        deletes[0].data["version"], expiry.data["version"],
        "the same expiry"
    );
    let history = get(&s.at("history", "ttl/x")).await.json();
    assert_eq!(history["events"].as_array().unwrap().len(), 2, "{history}");
}
