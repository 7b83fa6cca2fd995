//! Limits: every refusal is a clear error and a metric, and the node keeps
//! serving everyone else.

mod common;

use common::*;
use serde_json::json;

#[actix_web::test]
async fn subscriptions_per_connection_are_limited() {
    let s = Server::start(&["--max-subscriptions", "2"]);
    let mut ws = WsClient::connect(&s.ws_url("a")).await;
    ws.until_ready().await;
    ws.send_json(json!({"op": "subscribe", "path": "b"})).await;
    ws.until_ready().await;
    ws.send_json(json!({"op": "subscribe", "path": "c", "id": 3}))
        .await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["error"].as_str(), e["id"].as_i64()),
        (Some("too_many_subscriptions"), Some(3))
    );
    ws.send_json(json!({"op": "set", "path": "b/x", "value": "still open", "id": 4}))
        .await;
    let mut frames = [ws.next_non_ping().await, ws.next_non_ping().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap_or("").to_string());
    assert_eq!(
        (frames[0]["type"].as_str(), frames[1]["type"].as_str()),
        (Some("reply"), Some("update"))
    );
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"too_many_subscriptions\"}").await,
        1.0
    );
}

#[actix_web::test]
async fn streams_per_node_are_limited_and_freed_when_clients_leave() {
    let s = Server::start(&["--max-streams", "2", "--ping-interval-ms", "100"]);
    let first = SseClient::open(&s.at("sse", "x"), None).await;
    let mut second = WsClient::connect(&s.ws_url("x")).await;
    second.until_ready().await;
    let refused = get(&s.at("sse", "x")).await;
    refused.assert_error(503, "too_many_streams");
    assert!(
        awc::Client::new()
            .ws(s.ws_url("x"))
            .connect()
            .await
            .is_err(),
        "a websocket is refused too"
    );
    assert_eq!(
        put(&s.at("raw", "x/1"), b"writes still work").await.status,
        201
    );
    assert!(metric(&s, "spread_errors_total{error=\"too_many_streams\"}").await >= 2.0);

    // The node notices the gone client at its next ping and frees the slot.
    drop(first);
    wait_for("a free stream slot", EVENT_DEADLINE, async || {
        let client = awc::Client::builder().disable_timeout().finish();
        match client.get(s.at("sse", "x")).send().await {
            Ok(res) => res.status().as_u16() == 200,
            Err(_) => false,
        }
    })
    .await;
}

#[actix_web::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_writes_nothing() {
    let s = Server::start(&["--request-timeout-ms", "1000"]);
    let answer = raw_request(
        &s.addr,
        "PUT /raw/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nab",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    get(&s.at("raw", "slow"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(put(&s.at("raw", "fast"), b"ok").await.status, 201);
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"request_timeout\"}").await,
        1.0
    );
}

#[actix_web::test]
async fn refused_bodies_paths_and_frames_are_counted() {
    let s = Server::start(&["--max-body-bytes", "16", "--ws-max-frame-bytes", "64"]);
    put(&s.at("raw", "big"), &[b'x'; 17])
        .await
        .assert_error(413, "too_large");
    put(&s.at("raw", "a//b"), b"x")
        .await
        .assert_error(400, "bad_path");
    let mut ws = WsClient::connect(&s.ws_url("w")).await;
    ws.until_ready().await;
    ws.send_text(&"x".repeat(100)).await;
    assert!(ws.next_frame().await.is_err_and(|code| code == Some(1009)));
    wait_for(
        "the frame refusal to be counted",
        EVENT_DEADLINE,
        async || metric(&s, "spread_errors_total{error=\"ws_frame_too_large\"}").await == 1.0,
    )
    .await;
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"too_large\"}").await,
        1.0
    );
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"bad_path\"}").await,
        1.0
    );
}

#[actix_web::test]
async fn connections_past_the_limit_are_refused_until_one_closes() {
    use std::io::{Read, Write};
    let s = Server::start(&["--max-connections", "1", "--workers", "1"]);
    // One keep-alive connection, used once and then held open.
    let mut held = std::net::TcpStream::connect(&s.addr).unwrap();
    held.set_read_timeout(Some(EVENT_DEADLINE)).unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let refused = raw_request(
        &s.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"too_many_connections\""), "{refused}");

    drop(held);
    wait_for(
        "the connection slot to be freed",
        EVENT_DEADLINE,
        async || {
            raw_request(
                &s.addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .starts_with("HTTP/1.1 200")
        },
    )
    .await;
    assert!(metric(&s, "spread_errors_total{error=\"too_many_connections\"}").await >= 1.0);
}

// ---------------------------------------------------------------------------
// Field limits: whatever one client sends, only its own request fails, with
// a clear 4xx naming the field; everyone else's writes carry on.
// ---------------------------------------------------------------------------

/// `{"error": "bad_request", "id": …}` frame whose detail mentions `needle`.
fn assert_ws_error(frame: &serde_json::Value, code: &str, id: serde_json::Value, needle: &str) {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["error"], code, "{frame}");
    assert_eq!(frame["id"], id, "{frame}");
    let detail = frame["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(needle),
        "detail should name {needle}: {frame}"
    );
    assert!(detail.len() <= 2048, "detail of {} bytes", detail.len());
}

#[actix_web::test]
async fn a_websocket_set_with_a_100_kb_content_type_fails_alone_while_300_puts_succeed() {
    use futures_util::future::join_all;
    let s = Server::start(&[]);
    let mut ws = WsClient::connect(&s.ws_url("ct")).await;
    ws.until_ready().await;

    let puts = join_all((0..300).map(|i| {
        let url = s.at("raw", &format!("load/{i}"));
        async move { put(&url, format!("value {i}").as_bytes()).await.status }
    }));
    let bad_set = async {
        ws.send_json(json!({
            "op": "set", "path": "ct/x", "value": "v", "id": 1,
            "content_type": "x".repeat(100_000),
        }))
        .await;
        ws.next_non_ping().await
    };
    let (statuses, frame) = futures_util::future::join(puts, bad_set).await;
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "every other client's write succeeds: {statuses:?}"
    );
    assert_ws_error(&frame, "bad_request", json!(1), "content type");

    // Nothing was stored for the refused set; the socket still writes.
    get(&s.at("raw", "ct/x"))
        .await
        .assert_error(404, "not_found");
    assert_eq!(get(&s.at("raw", "load/299")).await.body, "value 299");
    ws.send_json(json!({"op": "set", "path": "ct/y", "value": "ok", "id": 2}))
        .await;
    let mut frames = [ws.next_non_ping().await, ws.next_non_ping().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap_or("").to_string());
    assert_eq!(
        (frames[0]["type"].as_str(), frames[0]["id"].as_i64()),
        (Some("reply"), Some(2))
    );
}

#[actix_web::test]
async fn a_put_with_a_70_kb_content_type_is_400_and_stores_nothing() {
    let s = Server::start(&[]);
    let url = s.at("raw", "ct/big");
    let answer = send(
        http()
            .put(&url)
            .insert_header(("content-type", "x".repeat(70_000))),
        Some(b"v"),
    )
    .await;
    answer.assert_error(400, "bad_request");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("content type is 70000 bytes"),
        "{}",
        answer.json()
    );
    get(&url).await.assert_error(404, "not_found");

    // At the limit it is stored and sent back; one byte more is refused.
    let at_limit = format!("text/{}", "a".repeat(256 - 5));
    let ok = send(
        http()
            .put(&url)
            .insert_header(("content-type", at_limit.as_str())),
        Some(b"v"),
    )
    .await;
    assert_eq!(ok.status, 201);
    assert_eq!(
        get(&url).await.header("content-type"),
        Some(at_limit.clone())
    );
    send(
        http()
            .put(&url)
            .insert_header(("content-type", format!("{at_limit}a"))),
        Some(b"v"),
    )
    .await
    .assert_error(400, "bad_request");

    // A byte a header value may carry but a content type may not (obs-text).
    let answer = raw_request(
        &s.addr,
        "PUT /raw/ct/latin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: text/\u{e9}\r\nContent-Length: 1\r\n\r\nv",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"bad_request\""), "{answer}");
    assert!(answer.contains("content type"), "{answer}");
    assert_eq!(put(&s.at("raw", "ct/other"), b"fine").await.status, 201);
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"bad_request\"}").await,
        3.0
    );
}

#[actix_web::test]
async fn a_websocket_content_type_a_header_cannot_carry_is_refused_and_reads_still_work() {
    let s = Server::start(&[]);
    assert_eq!(put(&s.at("raw", "h/ok"), b"fine").await.status, 201);
    let mut ws = WsClient::connect(&s.ws_url("w")).await;
    ws.until_ready().await;
    for (id, ct) in [
        (1, "text/plain\r\nX-Injected: 1"),
        (2, "text/plain\u{0}"),
        (3, "text/\u{e9}"),
    ] {
        ws.send_json(
            json!({"op": "set", "path": "h/bad", "value": "v", "content_type": ct, "id": id}),
        )
        .await;
        let frame = ws.next_non_ping().await;
        assert_ws_error(&frame, "bad_request", json!(id), "content type");
    }
    // Nothing stored, so a read cannot echo an invalid header; reads work.
    get(&s.at("raw", "h/bad"))
        .await
        .assert_error(404, "not_found");
    let ok = get(&s.at("raw", "h/ok")).await;
    assert_eq!((ok.status, &ok.body[..]), (200, &b"fine"[..]));
    ws.send_json(json!({"op": "get", "path": "h/ok", "id": 4}))
        .await;
    let reply = ws.next_non_ping().await;
    assert_eq!(
        (reply["type"].as_str(), reply["value"].as_str()),
        (Some("reply"), Some("fine"))
    );
}

#[actix_web::test]
async fn websocket_writes_in_flight_are_bounded_per_session_and_the_socket_stays_usable() {
    const LIMIT: usize = 4;
    const SETS: usize = 24;
    // `batch` with a long interval holds writes after the first flush, so
    // the pipelined writes are still in flight when the next ones arrive.
    let s = Server::start(&[
        "--ws-max-writes-in-flight",
        "4",
        "--durability",
        "batch",
        "--batch-interval-ms",
        "2000",
    ]);
    let mut ws = WsClient::connect(&s.ws_url("f")).await;
    ws.until_ready().await;
    ws.send_json(json!({"op": "set", "path": "g/prime", "value": "p", "id": 0}))
        .await;
    assert_eq!(ws.next_non_ping().await["type"], "reply");

    let value = "v".repeat(256 << 10);
    for id in 1..=SETS {
        ws.send_json(json!({"op": "set", "path": format!("g/{id}"), "value": value, "id": id}))
            .await;
    }
    let mut answered = std::collections::BTreeSet::new();
    let (mut replies, mut refused) = (0, 0);
    while answered.len() < SETS {
        let f = ws.next_non_ping().await;
        let id = f["id"].as_u64().unwrap_or_else(|| panic!("no id: {f}"));
        assert!(answered.insert(id), "answered twice: {f}");
        match f["type"].as_str() {
            Some("reply") => replies += 1,
            Some("error") => {
                assert_ws_error(&f, "too_many_requests", json!(id), "in flight");
                refused += 1;
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert!(refused >= 1, "no write was refused ({replies} replies)");
    assert!(replies >= LIMIT, "only {replies} writes were taken");
    // Still open and writing once the writes in flight are answered.
    ws.send_json(json!({"op": "delete", "path": "g/1", "id": 100}))
        .await;
    let f = ws.next_non_ping().await;
    assert_eq!(
        (f["type"].as_str(), f["id"].as_u64()),
        (Some("reply"), Some(100))
    );
    assert_eq!(
        metric(&s, "spread_errors_total{error=\"too_many_requests\"}").await,
        refused as f64
    );
}

/// Oversized fields of ops, each with the error it must get.
fn oversized_ops() -> Vec<(
    serde_json::Value,
    &'static str,
    serde_json::Value,
    &'static str,
)> {
    vec![
        // An id over 256 bytes is not echoed back: the error carries none.
        (
            json!({"op": "get", "path": "o/x", "id": "i".repeat(300)}),
            "bad_request",
            json!(null),
            "id is over 256 bytes",
        ),
        (
            json!({"op": "set", "path": "o/x", "value": "v", "id": {"k": "i".repeat(100_000)}}),
            "bad_request",
            json!(null),
            "id is over 256 bytes",
        ),
        (
            json!({"op": "get", "path": "o/x", "id": (0..100).collect::<Vec<u32>>()}),
            "bad_request",
            json!(null),
            "id is over 256 bytes",
        ),
        (
            json!({"op": "subscribe", "path": "o", "since": format!("{}:1", "a".repeat(200)), "id": 1}),
            "bad_request",
            json!(1),
            "since is 202 bytes",
        ),
        (
            json!({"op": "get", "path": format!("o/{}", "p".repeat(2000)), "id": 2}),
            "bad_path",
            json!(2),
            "path is 2002 bytes",
        ),
        (
            json!({"op": "set", "path": "o/x", "value": "v", "content_type": "c".repeat(300), "id": 3}),
            "bad_request",
            json!(3),
            "content type is 300 bytes",
        ),
        // serde quotes an unknown op: the detail stays bounded.
        (
            json!({"op": "o".repeat(100_000), "path": "o/x", "id": 4}),
            "bad_request",
            json!(4),
            "unknown or malformed op",
        ),
    ]
}

#[actix_web::test]
async fn oversized_ids_cursors_and_paths_in_json_ops_are_refused_and_the_socket_stays_open() {
    let s = Server::start(&[]);
    assert_eq!(put(&s.at("raw", "o/x"), b"here").await.status, 201);
    let mut ws = WsClient::connect(&s.ws_url("w")).await;
    ws.until_ready().await;
    for (op, code, id, needle) in oversized_ops() {
        ws.send_json(op.clone()).await;
        let frame = ws.next_non_ping().await;
        assert_ws_error(&frame, code, id, needle);
    }
    // The longest id allowed is echoed intact.
    let id = json!("i".repeat(254));
    ws.send_json(json!({"op": "get", "path": "o/x", "id": id}))
        .await;
    let reply = ws.next_non_ping().await;
    assert_eq!((reply["type"].as_str(), &reply["id"]), (Some("reply"), &id));
}

#[actix_web::test]
async fn oversized_ids_cursors_and_paths_in_msgpack_ops_are_refused_and_the_socket_stays_open() {
    let s = Server::start(&[]);
    assert_eq!(put(&s.at("raw", "o/x"), b"here").await.status, 201);
    let mut ws = WsClient::connect(&s.ws_url("w?format=msgpack")).await;
    assert_eq!(ws.next_non_ping().await["type"], "ready");
    for (op, code, id, needle) in oversized_ops() {
        ws.send_msgpack(&op).await;
        let frame = ws.next_non_ping().await;
        assert_ws_error(&frame, code, id, needle);
    }
    ws.send_msgpack(&json!({"op": "get", "path": "o/x", "id": 9}))
        .await;
    let reply = ws.next_non_ping().await;
    assert_eq!(
        (
            reply["type"].as_str(),
            reply["value"].as_str(),
            reply["id"].as_i64()
        ),
        (Some("reply"), Some("here"), Some(9))
    );
    assert_eq!(
        ws.text_frames, 0,
        "a MessagePack session gets binary frames only"
    );
}

#[actix_web::test]
async fn oversized_headers_and_query_parameters_are_400_naming_them() {
    let s = Server::start(&[]);
    let url = s.at("raw", "q/x");
    assert_eq!(put(&url, b"v").await.status, 201);
    let detail = |r: &Reply| r.json()["detail"].as_str().unwrap_or("").to_string();

    let r = send(
        http()
            .put(&url)
            .insert_header(("if-match", format!("\"{}\"", "1".repeat(2000)))),
        Some(b"v"),
    )
    .await;
    r.assert_error(400, "bad_request");
    assert!(detail(&r).contains("if-match"), "{}", detail(&r));

    let r = send(
        http()
            .get(&url)
            .insert_header(("if-none-match", "\"x\", ".repeat(400))),
        None,
    )
    .await;
    r.assert_error(400, "bad_request");
    assert!(detail(&r).contains("if-none-match"), "{}", detail(&r));

    let r = send(
        http()
            .put(&url)
            .insert_header(("x-spread-time", "1".repeat(100))),
        Some(b"v"),
    )
    .await;
    r.assert_error(400, "bad_time");
    assert!(detail(&r).contains("x-spread-time"), "{}", detail(&r));

    for (target, param) in [
        (format!("{url}?ttl=3153600001"), "ttl"),
        (
            format!("{}?since={}:1", s.at("sse", "q"), "a".repeat(200)),
            "since",
        ),
        (
            format!("{}?after={}", s.at("list", "q"), "a".repeat(2000)),
            "after",
        ),
        (
            format!("{}?limit={}", s.at("list", "q"), "1".repeat(100)),
            "limit",
        ),
        (format!("{url}?x={}", "a".repeat(40_000)), "query string"),
    ] {
        let method = if param == "ttl" {
            http().put(&target)
        } else {
            http().get(&target)
        };
        let r = send(method, Some(b"v")).await;
        r.assert_error(400, "bad_request");
        assert!(detail(&r).contains(param), "{param}: {}", detail(&r));
    }

    // A WebSocket's resume cursor is checked before the upgrade.
    for (query, header) in [
        (format!("?since={}:1", "a".repeat(200)), String::new()),
        (
            String::new(),
            format!("Last-Event-ID: {}:1\r\n", "a".repeat(200)),
        ),
    ] {
        let answer = raw_request(
            &s.addr,
            &format!(
                "GET /wss/q{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{header}\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"bad_request\""), "{answer}");
        assert!(
            answer.contains("since") || answer.contains("last-event-id"),
            "{answer}"
        );
    }
    // Nothing was written by the refused writes.
    assert_eq!(get(&url).await.body, "v");
}

#[actix_web::test]
async fn tokens_with_oversized_subjects_or_lengths_are_401_naming_the_limit() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const SECRET: &str = "limits-secret";
    let s = Server::start(&["--jwt-key", SECRET]);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |claims: serde_json::Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let with = |t: &str, req: awc::ClientRequest| {
        req.insert_header(("authorization", format!("Bearer {t}")))
    };
    let url = s.at("raw", "t/x");

    let ok = token(json!({"sub": "s".repeat(256), "exp": exp}));
    assert_eq!(
        send(with(&ok, http().put(&url)), Some(b"v")).await.status,
        201
    );

    for (claims, needle) in [
        (json!({"sub": "s".repeat(257), "exp": exp}), "subject"),
        (json!({"uid": "u".repeat(5_000), "exp": exp}), "subject"),
        (
            json!({"sub": "a", "exp": exp, "spread": {"read": vec!["r"; 10_000]}}),
            "token is",
        ),
    ] {
        let t = token(claims);
        for req in [http().put(&url), http().get(&url)] {
            let r = send(with(&t, req), Some(b"w")).await;
            r.assert_error(401, "unauthorized");
            let detail = r.json()["detail"].as_str().unwrap().to_string();
            assert!(detail.contains(needle), "{detail}");
        }
    }
    assert_eq!(send(with(&ok, http().get(&url)), None).await.body, "v");
}

#[actix_web::test]
async fn a_websocket_value_over_the_body_limit_is_too_large_and_the_socket_stays_open() {
    // The frame limit is larger than the body limit: a value passes the
    // frame check and must meet the same limit as an HTTP body.
    let s = Server::start(&["--max-body-bytes", "1000"]);
    let mut ws = WsClient::connect(&s.ws_url("big")).await;
    ws.until_ready().await;
    ws.send_json(json!({"op": "set", "path": "big/x", "value": "v".repeat(1001), "id": 1}))
        .await;
    assert_ws_error(&ws.next_non_ping().await, "too_large", json!(1), "1000");
    ws.send_json(json!({"op": "set", "path": "big/x", "value": "v".repeat(1000), "id": 2}))
        .await;
    let mut reply = ws.next_non_ping().await;
    while reply["type"] == "update" {
        reply = ws.next_non_ping().await;
    }
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_i64()),
        (Some("reply"), Some(2))
    );
}
