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
