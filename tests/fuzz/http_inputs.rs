//! Generated HTTP inputs (in process; no corpus): every route, with every
//! header and query parameter the web crate reads fuzzed (valid, malformed,
//! around and far over their limits), sent to an open node and to one that
//! requires tokens. No input gets a 5xx (but `501`), and every error is a
//! bounded JSON body.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use spread_web::error::MAX_ERROR_DETAIL_BYTES;

use crate::harness::cfg;
use crate::mutate::text_of;
use crate::ops::{op_string, oversized_string};

/// One request built from fuzzed parts: every header and query parameter
/// the web crate reads, with values that are valid, malformed, or around and
/// far over their limits (headers up to 100 KB, as HTTP/2 allows).
#[derive(Clone, Debug)]
struct HttpInput {
    method: &'static str,
    route: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    /// Index into the tokens of the secured app (`None`: no token).
    token: Option<usize>,
    body: Option<Vec<u8>>,
}

impl HttpInput {
    /// A short description (field lengths, not their bytes) for failures.
    fn describe(&self) -> String {
        let short = |s: &str| {
            let cut: String = s.chars().take(40).collect();
            format!("{cut:?}({} bytes)", s.len())
        };
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", short(v)))
            .collect();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", short(v)))
            .collect();
        format!(
            "{} /{}/{} query {query:?} headers {headers:?} token {:?} body {:?}",
            self.method,
            self.route,
            short(&self.path),
            self.token,
            self.body.as_ref().map(Vec::len)
        )
    }

    fn uri(&self) -> String {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        const PATH: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
        // `http::Uri` takes at most 64 KiB: a longer path is cut (still far
        // over the path limit).
        let mut path = String::new();
        for c in self.path.chars() {
            let piece = utf8_percent_encode(c.encode_utf8(&mut [0; 4]), PATH).to_string();
            if path.len() + piece.len() > 30_000 {
                break;
            }
            path.push_str(&piece);
        }
        let mut uri = format!("/{}/{path}", self.route);
        for (i, (k, v)) in self.query.iter().enumerate() {
            let pair = format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC));
            if uri.len() + pair.len() > 60_000 {
                break;
            }
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&pair);
        }
        uri
    }
}

/// A header or query value: a plausible one, or one near or over a limit.
fn http_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "", "*", "1", "0", "true", "json", "msgpack", "quorum", "all", "3153600000",
            "3153600001", "18446744073709551616", "\"1700000000000000.n1\"", "W/\"1\"",
            "ab:1", "text/plain", "Bearer x", "spread_token=x",
        ])
        .prop_map(str::to_string),
        1 => text_of("0123456789.:\"W/ ,*abz", 0..40),
        2 => oversized_string(),
    ]
}

fn http_input() -> impl Strategy<Value = HttpInput> {
    let query_name = prop::sample::select(vec![
        "since",
        "after",
        "limit",
        "from",
        "to",
        "ttl",
        "w",
        "format",
        "values",
        "at",
        "access_token",
        "x",
    ]);
    let header_name = prop::sample::select(vec![
        "content-type",
        "if-match",
        "if-none-match",
        "x-spread-time",
        "x-spread-etag",
        "etag",
        "last-event-id",
        "content-length",
        "authorization",
        "cookie",
    ]);
    (
        prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]),
        prop::sample::select(vec![
            "raw", "list", "history", "sse", "wss", "rollback", "metrics",
        ]),
        prop_oneof![3 => op_string(), 1 => oversized_string()],
        prop::collection::vec((query_name, http_value()), 0..4),
        prop::collection::vec((header_name, http_value()), 0..4),
        prop::option::of(0usize..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    )
        .prop_map(
            |(method, route, path, query, headers, token, body)| HttpInput {
                method,
                route,
                path,
                query,
                headers,
                token,
                body,
            },
        )
}

/// The request of `input` (with `tokens[input.token]` as its bearer).
fn http_request(input: &HttpInput, tokens: &[String]) -> actix_web::test::TestRequest {
    use actix_web::http::header::HeaderValue;
    let mut req = actix_web::test::TestRequest::default()
        .method(input.method.parse().expect("method"))
        .uri(&input.uri());
    for (name, value) in &input.headers {
        // Values a header cannot carry never reach a server.
        if let Ok(v) = HeaderValue::from_str(value) {
            req = req.append_header((*name, v));
        }
    }
    if let Some(t) = input.token.and_then(|i| tokens.get(i)) {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    if let Some(body) = &input.body {
        req = req.set_payload(body.clone());
    }
    req
}

/// Checks an answer: never a 5xx but `501` (parts of the contract not
/// served yet), and every JSON error names a code and a bounded detail.
async fn check_http_answer<B: actix_web::body::MessageBody>(
    res: actix_web::dev::ServiceResponse<B>,
) -> Result<(), String> {
    use actix_web::test;
    let status = res.status().as_u16();
    if status >= 500 && status != 501 {
        let body = test::read_body(res).await;
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let json = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/json");
    // A 200 SSE stream never ends: it is dropped unread.
    if status >= 400 && json {
        let body = test::read_body(res).await;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{status}: {e}"))?;
        let detail = v["detail"].as_str().unwrap_or("");
        if !v["error"].is_string() || detail.is_empty() || detail.len() > MAX_ERROR_DETAIL_BYTES {
            return Err(format!("{status}: bad error body of {} bytes", body.len()));
        }
    }
    Ok(())
}

/// HTTP requests with every field the web crate reads fuzzed, sent in
/// process to an open node and to one that requires tokens (with tokens
/// that are valid, have a 257-byte or 100 KB subject, or are 100 KB long):
/// no input panics or gets a 5xx (but `501`), and every error is a bounded
/// JSON body.
#[actix_web::test]
async fn http_inputs_never_answer_5xx() {
    use actix_web::{test, web, App};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use spread_web::{auth::Auth, metrics::Metrics, AppState, WebConfig};

    const SECRET: &str = "fuzz-secret";
    let claims = |sub: String| json!({"sub": sub, "exp": 4_000_000_000u64, "spread": {"read": [""], "write": [""]}});
    let sign = |c: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    let tokens = vec![
        sign(claims("alice".into())),
        sign(claims("s".repeat(257))),
        sign(claims("s".repeat(100_000))),
        format!("{}x", sign(claims("bob".into()))),
    ];

    let dir = tempfile::tempdir().expect("temp dir");
    let node = spread_actors::Node::open(spread_actors::Config::new(dir.path())).expect("node");
    let app_with = |auth: Auth| {
        let state = web::Data::new(AppState {
            node: node.clone(),
            config: WebConfig {
                auth,
                ..WebConfig::default()
            },
            metrics: Arc::new(Metrics::new()),
            streams: Arc::default(),
        });
        test::init_service(App::new().app_data(state).configure(spread_web::routes))
    };
    let open = app_with(Auth::off()).await;
    let secured = app_with(Auth::new(SECRET, None, 0).expect("key")).await;

    let cases = cfg(300).cases;
    let mut runner = TestRunner::deterministic();
    let strategy = http_input();
    let mut failures = Vec::new();
    for _ in 0..cases {
        let input = strategy.new_tree(&mut runner).expect("input").current();
        let answers = [
            http_request(&input, &tokens).send_request(&open).await,
            http_request(&input, &tokens).send_request(&secured).await,
        ];
        for (name, answer) in ["open", "secured"].into_iter().zip(answers) {
            let outcome = check_http_answer(answer).await;
            if let Err(e) = outcome {
                failures.push(format!("{name}: {} -> {e}", input.describe()));
            }
        }
    }
    node.shutdown();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
