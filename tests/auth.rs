//! JWT auth and per-prefix rights against a real node: every route refuses
//! missing and bad tokens with 401, rights with 403, and nothing outside a
//! token's rights is read or written.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "test-secret-please-change";
const ISSUER: &str = "spread-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(claims: serde_json::Value, key: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// A valid token for `sub`, with optional rights.
fn token(sub: &str, rights: Option<serde_json::Value>) -> String {
    let mut claims = json!({"sub": sub, "iss": ISSUER, "exp": now() + 600});
    if let Some(r) = rights {
        claims["spread"] = r;
    }
    token_with(claims, SECRET)
}

fn secured() -> Server {
    Server::start(&[
        "--jwt-key",
        SECRET,
        "--jwt-iss",
        ISSUER,
        "--jwt-leeway-secs",
        "0",
    ])
}

fn bearer(req: awc::ClientRequest, token: &str) -> awc::ClientRequest {
    req.insert_header(("authorization", format!("Bearer {token}")))
}

/// Every client route, as (method, url, body).
fn routes(s: &Server) -> Vec<(&'static str, String, Option<&'static [u8]>)> {
    vec![
        ("GET", s.at("raw", "a/x"), None),
        ("PUT", s.at("raw", "a/x"), Some(b"v")),
        ("POST", s.at("raw", "a/x"), Some(b"v")),
        ("DELETE", s.at("raw", "a/x"), None),
        ("GET", s.at("list", "a"), None),
        ("GET", s.at("history", "a/x"), None),
        ("GET", s.at("sse", "a"), None),
        ("GET", format!("{}/metrics", s.url), None),
    ]
}

async fn call(method: &str, url: &str, body: Option<&[u8]>, token: Option<&str>) -> Reply {
    let req = http().request(method.parse().unwrap(), url);
    let req = match token {
        Some(t) => bearer(req, t),
        None => req,
    };
    send(req, body).await
}

#[actix_web::test]
async fn every_route_refuses_missing_and_bad_tokens_with_401() {
    let s = secured();
    let alg_none = {
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.",
            enc(json!({"alg": "none", "typ": "JWT"})),
            enc(json!({"sub": "x", "iss": ISSUER, "exp": now() + 600}))
        )
    };
    let bad_tokens = [
        (
            "expired",
            token_with(
                json!({"sub": "x", "iss": ISSUER, "exp": now() - 120}),
                SECRET,
            ),
        ),
        (
            "other issuer",
            token_with(
                json!({"sub": "x", "iss": "someone-else", "exp": now() + 600}),
                SECRET,
            ),
        ),
        (
            "other key",
            token_with(
                json!({"sub": "x", "iss": ISSUER, "exp": now() + 600}),
                "another-secret",
            ),
        ),
        (
            "no exp",
            token_with(json!({"sub": "x", "iss": ISSUER}), SECRET),
        ),
        (
            "not yet valid",
            token_with(
                json!({"sub": "x", "iss": ISSUER, "exp": now() + 600, "nbf": now() + 300}),
                SECRET,
            ),
        ),
        ("alg none", alg_none),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (method, url, body) in routes(&s) {
        let r = call(method, &url, body, None).await;
        r.assert_error(401, "unauthorized");
        for (what, t) in &bad_tokens {
            let r = call(method, &url, body, Some(t)).await;
            assert_eq!(r.status, 401, "{method} {url} with an {what} token");
            r.assert_error(401, "unauthorized");
            let detail = r.json()["detail"].as_str().unwrap().to_string();
            assert!(
                !detail.contains(SECRET) && !detail.to_lowercase().contains("hs256"),
                "{detail}"
            );
        }
    }
    let ws = awc::Client::new().ws(s.ws_url("a")).connect().await;
    assert!(ws.is_err(), "a websocket without a token is refused");
    assert_eq!(
        get(&format!("{}/healthz", s.url)).await.status,
        200,
        "healthz needs no token"
    );
    let good = token("alice", None);
    for (method, url, body) in routes(&s) {
        if url.contains("/sse/") {
            // A stream never ends by itself: open it with the SSE client.
            let mut sse = SseClient::open(&format!("{url}?access_token={good}"), None).await;
            assert_eq!(sse.next().await.event, "ready");
            continue;
        }
        let r = call(method, &url, body, Some(&good)).await;
        assert!(
            r.status < 400 || r.status == 404,
            "{method} {url}: {}",
            r.status
        );
    }
}

#[actix_web::test]
async fn a_read_only_token_reads_and_streams_but_every_write_is_403_and_changes_nothing() {
    let s = secured();
    let admin = token("admin", None);
    assert_eq!(
        send(
            bearer(http().put(s.at("raw", "a/x")), &admin),
            Some(b"original")
        )
        .await
        .status,
        201
    );
    let reader = token("reader", Some(json!({"read": ["a"], "write": []})));

    let got = send(bearer(http().get(s.at("raw", "a/x")), &reader), None).await;
    assert_eq!(&got.body[..], b"original");
    for (method, body) in [
        ("PUT", Some(&b"changed"[..])),
        ("POST", Some(&b"changed"[..])),
        ("DELETE", None),
    ] {
        call(method, &s.at("raw", "a/x"), body, Some(&reader))
            .await
            .assert_error(403, "forbidden");
    }
    let mut ws = WsClient::connect(&format!("{}?access_token={reader}", s.ws_url("a"))).await;
    let first = ws.until_ready().await;
    assert_eq!(first[0]["value"], "original");
    ws.send_json(json!({"op": "set", "path": "a/x", "value": "changed", "id": 1}))
        .await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["error"].as_str(), e["id"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    ws.send_json(json!({"op": "delete", "path": "a/x", "id": 2}))
        .await;
    assert_eq!(ws.next_non_ping().await["error"], "forbidden");
    ws.send_json(json!({"op": "get", "path": "a/x", "id": 3}))
        .await;
    assert_eq!(ws.next_non_ping().await["value"], "original");

    let after = send(bearer(http().get(s.at("raw", "a/x")), &admin), None).await;
    assert_eq!(
        &after.body[..],
        b"original",
        "no refused write changed anything"
    );
    let history = send(bearer(http().get(s.at("history", "a/x")), &admin), None)
        .await
        .json();
    assert_eq!(history["events"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn forbidden_subtrees_never_reach_a_stream_and_authors_are_recorded() {
    let s = secured();
    let admin = token("admin", None);
    for (path, v) in [("a/1", "mine"), ("b/1", "secret value")] {
        send(
            bearer(http().put(s.at("raw", path)), &admin),
            Some(v.as_bytes()),
        )
        .await;
    }
    let alice = token("alice", Some(json!({"read": ["a"], "write": ["a"]})));
    // A prefix wider than the rights is refused, over SSE, WS and listing.
    call("GET", &s.at("sse", ""), None, Some(&alice))
        .await
        .assert_error(403, "forbidden");
    call("GET", &s.at("list", ""), None, Some(&alice))
        .await
        .assert_error(403, "forbidden");
    call("GET", &s.at("history", "b/1"), None, Some(&alice))
        .await
        .assert_error(403, "forbidden");
    let refused = awc::Client::new()
        .ws(format!("{}?access_token={alice}", s.ws_url("")))
        .connect()
        .await;
    assert!(refused.is_err());

    let mut ws = WsClient::connect(&format!("{}?access_token={alice}", s.ws_url("a"))).await;
    let snapshot = ws.until_ready().await;
    assert_eq!(snapshot.len(), 2);
    ws.send_json(json!({"op": "subscribe", "path": "b", "id": "s"}))
        .await;
    let e = ws.next_non_ping().await;
    assert_eq!(
        (e["error"].as_str(), e["id"].as_str()),
        (Some("forbidden"), Some("s"))
    );
    ws.send_json(json!({"op": "get", "path": "b/1", "id": "g"}))
        .await;
    assert_eq!(ws.next_non_ping().await["error"], "forbidden");

    // Writes record the token's subject, in reports' history and in streams.
    let mut sse =
        SseClient::open(&format!("{}?access_token={alice}", s.at("sse", "a")), None).await;
    sse.until_ready().await;
    let w = send(
        bearer(http().put(s.at("raw", "a/2")), &alice),
        Some(b"by alice"),
    )
    .await;
    assert_eq!(w.status, 201);
    send(
        bearer(http().put(s.at("raw", "b/1")), &admin),
        Some(b"still secret"),
    )
    .await;
    let update = sse.next_non_ping().await;
    assert_eq!(
        (update.data["path"].as_str(), update.data["author"].as_str()),
        (Some("a/2"), Some("alice"))
    );
    let frame = ws.next_non_ping().await;
    assert_eq!(
        (frame["path"].as_str(), frame["author"].as_str()),
        (Some("a/2"), Some("alice"))
    );
    let history = send(bearer(http().get(s.at("history", "a/2")), &admin), None)
        .await
        .json();
    assert_eq!(history["events"][0]["author"], "alice");
    // The seed's `uid` claim names the author when there is no `sub`.
    let seed = token_with(
        json!({"uid": "seed-user", "iss": ISSUER, "exp": now() + 600}),
        SECRET,
    );
    send(bearer(http().put(s.at("raw", "a/3")), &seed), Some(b"x")).await;
    let history = send(bearer(http().get(s.at("history", "a/3")), &admin), None)
        .await
        .json();
    assert_eq!(history["events"][0]["author"], "seed-user");
}

#[actix_web::test]
async fn tokens_ride_in_cookies_and_queries_and_websockets_close_when_they_expire() {
    let s = secured();
    let t = token("browser", None);
    let by_cookie = send(
        http()
            .put(s.at("raw", "c/x"))
            .insert_header(("cookie", format!("spread_token={t}"))),
        Some(b"v"),
    )
    .await;
    assert_eq!(by_cookie.status, 201);
    let by_query = get(&format!("{}?access_token={t}", s.at("raw", "c/x"))).await;
    assert_eq!(&by_query.body[..], b"v");

    let short = token_with(
        json!({"sub": "brief", "iss": ISSUER, "exp": now() + 2}),
        SECRET,
    );
    let mut ws = WsClient::connect(&format!("{}?access_token={short}", s.ws_url("c"))).await;
    ws.until_ready().await;
    let closed = loop {
        match ws.next_frame().await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(
        closed,
        Some(1008),
        "closed as a policy violation once the token expired"
    );
}

#[actix_web::test]
async fn cors_preflight_and_exposed_etag_for_allowed_origins_only() {
    let s = Server::start(&["--cors-origin", "http://app.example"]);
    let preflight = send(
        http()
            .request(awc::http::Method::OPTIONS, s.at("raw", "x"))
            .insert_header(("origin", "http://app.example"))
            .insert_header(("access-control-request-method", "PUT"))
            .insert_header((
                "access-control-request-headers",
                "authorization, if-match, x-spread-time",
            )),
        None,
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("if-match"),
        "{allowed}"
    );
    let put = send(
        http()
            .put(s.at("raw", "x"))
            .insert_header(("origin", "http://app.example")),
        Some(b"v"),
    )
    .await;
    assert_eq!(
        put.header("access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    assert!(put
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase()
        .contains("etag"));
    let other = send(
        http()
            .get(s.at("raw", "x"))
            .insert_header(("origin", "http://evil.example")),
        None,
    )
    .await;
    assert_ne!(
        other.header("access-control-allow-origin").as_deref(),
        Some("http://evil.example")
    );

    let plain = Server::start(&[]);
    let r = send(
        http()
            .get(plain.at("raw", "x"))
            .insert_header(("origin", "http://app.example")),
        None,
    )
    .await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "no CORS unless configured"
    );
}

#[actix_web::test]
async fn spread_token_mints_tokens_the_node_accepts_with_hmac_and_es256() {
    let bin = env!("CARGO_BIN_EXE_spread");
    let mint = |key: &str, extra: &[&str]| {
        let out = std::process::Command::new(bin)
            .args([
                "token", "--key", key, "--sub", "cli-user", "--iss", ISSUER, "--ttl", "600",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let s = secured();
    let t = mint(SECRET, &["--read", "r", "--write", "r/w"]);
    assert_eq!(
        send(bearer(http().put(s.at("raw", "r/w/1")), &t), Some(b"ok"))
            .await
            .status,
        201
    );
    call("PUT", &s.at("raw", "r/1"), Some(b"no"), Some(&t))
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        call("GET", &s.at("raw", "r/w/1"), None, Some(&t))
            .await
            .status,
        200
    );

    // ES256: the node holds the public key, the CLI signs with the private one.
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    let ec = Server::start(&["--jwt-key", public.to_str().unwrap(), "--jwt-iss", ISSUER]);
    let t = mint(private.to_str().unwrap(), &[]);
    assert_eq!(
        send(bearer(http().put(ec.at("raw", "e/1")), &t), Some(b"ok"))
            .await
            .status,
        201
    );
    let hmac = mint(SECRET, &[]);
    call("GET", &ec.at("raw", "e/1"), None, Some(&hmac))
        .await
        .assert_error(401, "unauthorized");
}
