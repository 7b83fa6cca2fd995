//! Test harness: real `spread serve` processes on ephemeral ports, and small
//! HTTP / SSE / WebSocket client helpers built on awc and a standard SSE
//! parser (eventsource-stream). Every server is killed and its data removed
//! when its handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

/// Peer settings for cluster tests: fast heartbeats, so that a dead node
/// is noticed within a test's deadline, and a short wait for acks.
pub const FAST_PEERS: [&str; 6] = [
    "--peer-heartbeat-ms",
    "100",
    "--peer-timeout-ms",
    "1000",
    "--ack-timeout-ms",
    "2000",
];

/// How long a server may take to start.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a test waits for any expected event.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// A running `spread serve` child process.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    data: PathBuf,
    announced: Option<mpsc::Receiver<String>>,
    _dir: Option<tempfile::TempDir>,
    args: Vec<String>,
}

impl Server {
    /// Starts a node on a fresh data directory with extra `args`.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, addr, scheme, announced) = spawn(&data, &args, "127.0.0.1:0");
        Server {
            child: Some(child),
            url: format!("{scheme}://{addr}"),
            addr,
            data,
            announced: Some(announced),
            _dir: Some(dir),
            args,
        }
    }

    /// The next further address the server announced (e.g. `--listen-plain`),
    /// as `scheme://addr`.
    pub fn next_announced(&self) -> String {
        let rx = self.announced.as_ref().expect("running");
        let found = rx
            .recv_timeout(START_DEADLINE)
            .expect("no further address announced");
        let (scheme, addr) = found.split_once(' ').expect("scheme and address");
        format!("{scheme}://{addr}")
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// What the server logged (warnings and errors) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process with SIGKILL (no chance to flush) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for an orderly exit; panics past the deadline.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "spread serve exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "spread serve did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends the process a signal (`kill -STOP`, `-CONT`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// Starts the node again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr, _, announced) = spawn(&self.data, &self.args, &self.addr);
        assert_eq!(addr, self.addr);
        self.child = Some(child);
        self.announced = Some(announced);
    }

    /// Resident memory of the server process, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// `{url}/{route}/{path}`.
    pub fn at(&self, route: &str, path: &str) -> String {
        format!("{}/{route}/{path}", self.url)
    }

    /// `ws://127.0.0.1:PORT/wss/{path}`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}/wss/{path_and_query}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what each of its servers logged last
        // (`SPREAD_TEST_LOG` sets the servers' `RUST_LOG`; warn by default).
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- the last log lines of the server at {} ---\n{}",
                self.addr,
                lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
            );
        }
    }
}

/// How many of a server's last log lines a failing test shows.
const LOG_TAIL: usize = 40;

fn spawn(
    data: &Path,
    args: &[String],
    listen: &str,
) -> (Child, String, String, mpsc::Receiver<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .expect("log file");
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spread"))
            .arg("serve")
            .args(["--listen", listen, "--data"])
            .arg(data)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SPREAD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("log handle"))
            .spawn()
            .expect("spawn spread serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" listening on ") {
                    if let Some((scheme, addr)) =
                        line.rsplit(' ').next().and_then(|u| u.split_once("://"))
                    {
                        let _ = tx.send(format!("{scheme} {}", addr.trim()));
                    }
                }
            }
        });
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(found) => {
                let (scheme, addr) = found.split_once(' ').expect("scheme and address");
                return (child, addr.to_string(), scheme.to_string(), rx);
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                // A restart on a fixed port may race the old socket's release.
                if listen.ends_with(":0") || Instant::now() >= deadline {
                    let log =
                        std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                    panic!("spread serve did not start ({status:?}); log:\n{log}");
                }
            }
        }
    }
}

/// An HTTP client with a generous timeout.
pub fn http() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A response: status, headers of interest and body.
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts an error answer: status and JSON `error` code, with a detail.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let json = self.json();
        assert_eq!(json["error"], code, "{json}");
        assert!(
            json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{json}"
        );
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(req: awc::ClientRequest, body: Option<&[u8]>) -> Reply {
    let res = match body {
        Some(b) => req.send_body(b.to_vec()).await,
        None => req.send().await,
    };
    let mut res = res.unwrap_or_else(|e| panic!("request failed: {e}"));
    let body = res.body().limit(64 << 20).await.expect("body");
    Reply {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body,
    }
}

/// `PUT url` with `body`.
pub async fn put(url: &str, body: &[u8]) -> Reply {
    send(http().put(url), Some(body)).await
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send(http().get(url), None).await
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: serde_json::Value,
}

/// An SSE subscription read with the `eventsource-stream` parser.
pub struct SseClient {
    events: std::pin::Pin<Box<dyn futures_util::Stream<Item = Sse>>>,
}

impl SseClient {
    /// Opens `url`, optionally with a `Last-Event-ID`.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> SseClient {
        let client = awc::Client::builder().disable_timeout().finish();
        let mut req = client
            .get(url)
            .insert_header(("accept", "text/event-stream"));
        if let Some(id) = last_event_id {
            req = req.insert_header(("last-event-id", id));
        }
        let res = req.send().await.expect("SSE request");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let events = eventsource_stream::EventStream::new(res).map(|e| {
            let e = e.expect("SSE stream error");
            Sse {
                data: serde_json::from_str(&e.data)
                    .unwrap_or_else(|_| panic!("data is not JSON: {}", e.data)),
                event: e.event,
                id: e.id,
            }
        });
        SseClient {
            events: Box::pin(events),
        }
    }

    /// The next event, within the deadline.
    pub async fn next(&mut self) -> Sse {
        actix_web::rt::time::timeout(EVENT_DEADLINE, self.events.next())
            .await
            .expect("no SSE event before the deadline")
            .expect("SSE stream ended")
    }

    /// The next event within the deadline, or `None` when the server ended
    /// the stream.
    pub async fn try_next(&mut self) -> Option<Sse> {
        actix_web::rt::time::timeout(EVENT_DEADLINE, self.events.next())
            .await
            .expect("no SSE event (nor the end) before the deadline")
    }

    /// Events up to and including the first `ready`.
    pub async fn until_ready(&mut self) -> Vec<Sse> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let done = e.event == "ready";
            out.push(e);
            if done {
                return out;
            }
        }
    }

    /// The next event that is not a ping.
    pub async fn next_non_ping(&mut self) -> Sse {
        loop {
            let e = self.next().await;
            if e.event != "ping" {
                return e;
            }
        }
    }
}

/// A WebSocket client speaking JSON text frames.
pub struct WsClient {
    conn: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    /// Text data frames received so far (a `?format=msgpack` session must
    /// get none).
    pub text_frames: usize,
}

impl WsClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> WsClient {
        let (_res, conn) = awc::Client::builder()
            .disable_timeout()
            .max_http_version(awc::http::Version::HTTP_11)
            .finish()
            .ws(url)
            .max_frame_size(64 << 20)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("websocket connect to {url}: {e}"));
        WsClient {
            conn,
            text_frames: 0,
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.conn
            .send(ws::Message::Text(text.into()))
            .await
            .expect("websocket send");
    }

    /// Sends a JSON value.
    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a value as a MessagePack binary frame (`?format=msgpack`).
    pub async fn send_msgpack(&mut self, value: &serde_json::Value) {
        let bytes = rmp_serde::to_vec_named(value).expect("MessagePack");
        self.conn
            .send(ws::Message::Binary(bytes.into()))
            .await
            .expect("websocket send");
    }

    /// The next data frame (text as JSON; binary as MessagePack turned into
    /// JSON), skipping WebSocket pings. `Err(code)` when the server closes.
    pub async fn next_frame(&mut self) -> Result<serde_json::Value, Option<u16>> {
        loop {
            let frame = actix_web::rt::time::timeout(EVENT_DEADLINE, self.conn.next())
                .await
                .expect("no websocket frame before the deadline");
            match frame {
                Some(Ok(ws::Frame::Text(t))) => {
                    self.text_frames += 1;
                    return Ok(serde_json::from_slice(&t).expect("text frame is JSON"));
                }
                Some(Ok(ws::Frame::Binary(b))) => {
                    return Ok(rmp_serde::from_slice(&b).expect("binary frame is MessagePack"));
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = self.conn.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(ws::Frame::Close(reason))) => return Err(reason.map(|r| u16::from(r.code))),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("websocket error: {e}"),
                None => return Err(None),
            }
        }
    }

    /// The next data frame; panics if the socket closed.
    pub async fn next(&mut self) -> serde_json::Value {
        self.next_frame().await.expect("websocket closed")
    }

    /// Frames up to and including the first `ready`.
    pub async fn until_ready(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        loop {
            let f = self.next().await;
            let done = f["type"] == "ready";
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// The next frame that is not a stream ping.
    pub async fn next_non_ping(&mut self) -> serde_json::Value {
        loop {
            let f = self.next().await;
            if f["type"] != "ping" {
                return f;
            }
        }
    }
}

/// True if `tool` runs (`tool --version`). Tests that drive external
/// clients skip when it is missing, unless `SPREAD_REQUIRE_TOOLS=1` (CI),
/// where a missing tool is a failure.
pub fn have_tool(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("SPREAD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{tool} is required (SPREAD_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// Waits until `check` holds, polling, up to `deadline`.
pub async fn wait_for(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw HTTP/1.1 bytes (for requests a client library would "fix") and
/// returns the whole answer as text.
pub fn raw_request(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(EVENT_DEADLINE))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A sample's value from the node's `/metrics` (0 when absent), e.g.
/// `spread_errors_total{error="too_large"}`.
pub async fn metric(s: &Server, sample: &str) -> f64 {
    metric_at(&s.url, sample).await
}

/// [`metric`] of the node serving plain HTTP at `base` (`http://host:port`).
pub async fn metric_at(base: &str, sample: &str) -> f64 {
    let text = String::from_utf8(get(&format!("{base}/metrics")).await.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The members node `s` lists in `GET /cluster`, as (node, state).
pub async fn members(s: &Server) -> Vec<(String, String)> {
    let answer = get(&format!("{}/cluster", s.url)).await;
    assert_eq!(answer.status, 200);
    let mut out: Vec<(String, String)> = answer.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["node"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until every node of `nodes` lists exactly `ids` as alive members.
pub async fn all_alive(nodes: &[Server], ids: &[String]) {
    let want: Vec<(String, String)> = ids
        .iter()
        .map(|n| (n.clone(), "alive".to_string()))
        .collect();
    for s in nodes {
        let what = format!("{} members alive everywhere", ids.len());
        wait_for(&what, Duration::from_secs(30), async || {
            members(s).await == want
        })
        .await;
    }
}

/// Waits until every node has a link to every other.
pub async fn linked(nodes: &[Server]) {
    let others = (nodes.len() - 1) as f64;
    for s in nodes {
        wait_for("links to every other node", EVENT_DEADLINE, async || {
            metric(s, "spread_peer_links").await == others
        })
        .await;
    }
}

/// Cuts `s`'s links to `nodes` by its fault switch (a node started with
/// `--fault-injection`); an empty list heals them.
pub async fn cut(s: &Server, nodes: &[&str]) {
    let r = send(
        http().put(format!("{}/cluster/faults", s.url)),
        Some(serde_json::json!({ "cut": nodes }).to_string().as_bytes()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

/// Node ids as owned strings.
pub fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The owners of each partition, as node `s` lists them in `GET /cluster`.
pub async fn owners(s: &Server) -> Vec<Vec<String>> {
    get(&format!("{}/cluster", s.url)).await.json()["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["owners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}
