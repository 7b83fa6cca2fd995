//! Peer links between real nodes (child processes on loopback): the
//! handshake, heartbeats, redialing a node that died, and refusing whoever
//! cannot prove the cluster secret or does not fit the cluster.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SECRET: &str = "a-cluster-secret-for-tests";

/// Fast heartbeats so that a dead link is noticed within a test's deadline.
const FAST: [&str; 4] = ["--peer-heartbeat-ms", "100", "--peer-timeout-ms", "1000"];

fn node(id: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--node-id", id, "--cluster-secret", SECRET];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Starts `spread serve` with `args` (on an ephemeral port, a data
/// directory never created) and answers what it said on stderr as it
/// refused to start.
fn refused_start(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--data", "/nonexistent/never-created"])
        .args(args)
        .output()
        .expect("run spread serve");
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn links(s: &Server) -> f64 {
    metric(s, "spread_peer_links").await
}

#[actix_web::test]
async fn nodes_that_share_the_secret_link_and_keep_the_link_alive() {
    let a = node("a", &[]);
    let b = node("b", &["--join", &a.addr]);
    wait_for("a link on both nodes", EVENT_DEADLINE, async || {
        links(&a).await == 1.0 && links(&b).await == 1.0
    })
    .await;
    // Heartbeats flow both ways on the quiet link, which stays up.
    let heard = metric(&a, "spread_peer_frames_total{dir=\"in\"}").await;
    wait_for("heartbeats from b", EVENT_DEADLINE, async || {
        metric(&a, "spread_peer_frames_total{dir=\"in\"}").await >= heard + 10.0
    })
    .await;
    assert_eq!(links(&a).await, 1.0);
    assert_eq!(links(&b).await, 1.0);
    assert_eq!(metric(&a, "spread_peer_links_refused_total").await, 0.0);
    assert!(!a.log().contains("closed"), "{}", a.log());
}

#[actix_web::test]
async fn a_node_killed_and_restarted_is_linked_again() {
    let mut a = node("a", &[]);
    let b = node("b", &["--join", &a.addr]);
    wait_for("the first link", EVENT_DEADLINE, async || {
        links(&b).await == 1.0
    })
    .await;
    a.kill9();
    wait_for("b to notice a is gone", EVENT_DEADLINE, async || {
        links(&b).await == 0.0
    })
    .await;
    a.restart();
    wait_for("b to link with a again", EVENT_DEADLINE, async || {
        links(&a).await == 1.0 && links(&b).await == 1.0
    })
    .await;
    assert!(metric(&b, "spread_peer_links_opened_total").await >= 2.0);
}

/// Starts `a`, then `b` joining it with `b_args`; waits until `a` logged
/// `reason` and `b` logged a closed link; then neither lists a link.
async fn refused(a_args: &[&str], b_args: &[&str], reason: &str) {
    let a = Server::start(a_args);
    let mut args = b_args.to_vec();
    args.extend_from_slice(&["--join", &a.addr]);
    let b = Server::start(&args);
    wait_for(
        &format!("a refusal naming '{reason}'"),
        EVENT_DEADLINE,
        async || a.log().contains(reason) && b.log().contains("closed:"),
    )
    .await;
    assert_eq!(links(&a).await, 0.0, "{}", a.log());
    assert_eq!(links(&b).await, 0.0, "{}", b.log());
    assert!(metric(&a, "spread_peer_links_refused_total").await >= 1.0);
    assert_eq!(metric(&a, "spread_peer_links_opened_total").await, 0.0);
}

#[actix_web::test]
async fn a_wrong_secret_another_cluster_or_layout_is_refused_and_never_listed() {
    refused(
        &["--node-id", "a", "--cluster-secret", SECRET],
        &[
            "--node-id",
            "b",
            "--cluster-secret",
            "another-secret-of-16-bytes",
        ],
        "does not prove the cluster secret",
    )
    .await;
    refused(
        &["--node-id", "a", "--cluster-secret", SECRET],
        &[
            "--node-id",
            "b",
            "--cluster-secret",
            SECRET,
            "--cluster-id",
            "other",
        ],
        "in cluster 'other'",
    )
    .await;
    refused(
        &["--node-id", "a", "--cluster-secret", SECRET],
        &[
            "--node-id",
            "b",
            "--cluster-secret",
            SECRET,
            "--partitions",
            "32",
        ],
        "has 32 partitions",
    )
    .await;
}

/// The close code of a `/peer` socket, past the frames the node sends first
/// (its hello, then its refusal).
async fn close_code(ws: &mut WsClient) -> Option<u16> {
    loop {
        if let Err(code) = ws.next_frame().await {
            return code;
        }
    }
}

#[actix_web::test]
async fn garbage_on_a_peer_link_closes_that_link_and_the_node_serves_on() {
    let a = node("a", &[]);
    for bad in [
        serde_json::json!("not a frame"),
        serde_json::json!({"Hello": {"protocol": 1}}),
    ] {
        let mut ws = WsClient::connect(&format!("ws://{}/peer", a.addr)).await;
        ws.send_msgpack(&bad).await;
        let code = close_code(&mut ws).await;
        assert_eq!(code, Some(1008), "closed as a policy violation");
    }
    // A socket that never completes the handshake is closed after the
    // peer timeout (1 s here), heartbeats or not.
    let mut silent = WsClient::connect(&format!("ws://{}/peer", a.addr)).await;
    assert_eq!(close_code(&mut silent).await, Some(1008));
    assert!(a.log().contains("no handshake for"), "{}", a.log());
    let mut ws = WsClient::connect(&format!("ws://{}/peer", a.addr)).await;
    ws.send_text("hello?").await;
    assert_eq!(close_code(&mut ws).await, Some(1008));
    assert!(
        a.log().contains("a text frame on a peer link"),
        "{}",
        a.log()
    );
    // The node serves on.
    put(&a.at("raw", "still/here"), b"yes").await;
    assert_eq!(&get(&a.at("raw", "still/here")).await.body[..], b"yes");
    assert_eq!(links(&a).await, 0.0);
}

#[actix_web::test]
async fn a_dialer_that_closes_a_link_tells_the_acceptor_why() {
    let z = node("z", &["--fault-injection"]);
    let a = node("a", &["--fault-injection", "--join", &z.addr]);
    wait_for("the link", EVENT_DEADLINE, async || {
        links(&a).await == 1.0 && links(&z).await == 1.0
    })
    .await;
    // Of two links between the same nodes, the one the smaller id dialed
    // stays: a dialed this one. Cut at a, it closes the link with a
    // refusal saying why; z's first word of the link's end is that.
    // (z logs the reason before the link leaves its count, and before any
    // dial of its own that a would refuse for the same reason.)
    cut(&a, &["z"]).await;
    wait_for("z to see the link end", EVENT_DEADLINE, async || {
        links(&z).await == 0.0
    })
    .await;
    let log = z.log();
    let first_close = log.lines().find(|l| l.contains("closed:"));
    assert!(
        first_close.is_some_and(|l| l.contains("refused by the peer: cut by the fault switch")),
        "{log}"
    );
}

/// A client WebSocket frame (masked, as a client must) carrying `payload`
/// as one binary message.
fn masked_binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[actix_web::test]
async fn a_hello_sent_just_before_the_dialer_hangs_up_is_still_read() {
    use spread_actors::cluster::frame::{Hello, PeerFrame, NONCE_BYTES, PROTOCOL_VERSION};
    use std::io::Write;
    let a = node("a", &[]);
    // A dialer of another layout: its hello, then the end of its side of
    // the connection, in one write: the node reads the hello and refuses
    // it for what it says (not "bad WebSocket data").
    let hello = PeerFrame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        cluster: "spread".into(),
        node: "z".into(),
        address: "127.0.0.1:9".into(),
        partitions: 32,
        shard_depth: 2,
        bump: 0,
        incarnation: "i".into(),
        window: 1 << 20,
        nonce: [7; NONCE_BYTES],
    });
    let mut bytes = format!(
        "GET /peer HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        a.addr
    )
    .into_bytes();
    bytes.extend(masked_binary_frame(&hello.encode()));
    let mut socket = std::net::TcpStream::connect(&a.addr).unwrap();
    socket.write_all(&bytes).unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    wait_for("the refusal of the layout", EVENT_DEADLINE, async || {
        a.log().contains("node 'z' has 32 partitions")
    })
    .await;
    assert!(!a.log().contains("bad WebSocket data"), "{}", a.log());
}

#[actix_web::test]
async fn a_node_without_the_secret_accepts_no_peers_and_cannot_join() {
    let single = Server::start(&[]);
    let answer = get(&format!("{}/peer", single.url)).await;
    answer.assert_error(403, "forbidden");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("--cluster-secret"));
    let err = refused_start(&["--join", &single.addr]);
    assert!(err.contains("--join needs --cluster-secret"), "{err}");
    let err = refused_start(&["--cluster-secret", "short"]);
    assert!(err.contains("at least 16 bytes"), "{err}");
    // A write limit over what a peer frame carries is refused at start.
    let most = spread_actors::cluster::MAX_VALUE_BYTES;
    let err = refused_start(&[
        "--cluster-secret",
        SECRET,
        "--max-body-bytes",
        &(most + 1).to_string(),
    ]);
    assert!(err.contains(&format!("at most {most}")), "{err}");
}

/// A self-signed certificate for 127.0.0.1, as PEM files in a temp dir.
struct Cert {
    dir: tempfile::TempDir,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Cert { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

#[actix_web::test]
async fn peers_link_over_tls_checking_the_certificate() {
    let cert = Cert::new();
    let (c, k) = (cert.file("cert.pem"), cert.file("key.pem"));
    // A serves HTTPS only on its main port (plain HTTP on another, for the
    // test's metrics).
    let a = node(
        "a",
        &[
            "--tls-cert",
            &c,
            "--tls-key",
            &k,
            "--listen-plain",
            "127.0.0.1:0",
        ],
    );
    let a_plain = a.next_announced();
    let joined = format!("https://{}", a.addr);
    let b = node("b", &["--join", &joined, "--peer-ca", &c]);
    wait_for("a link over TLS", EVENT_DEADLINE, async || {
        metric_at(&a_plain, "spread_peer_links").await == 1.0 && links(&b).await == 1.0
    })
    .await;
    // A node that trusts another certificate does not link.
    let other = Cert::new();
    let stranger = node(
        "c",
        &["--join", &joined, "--peer-ca", &other.file("cert.pem")],
    );
    wait_for(
        "c's failed TLS handshake in its log",
        EVENT_DEADLINE,
        async || stranger.log().contains("cannot link"),
    )
    .await;
    assert_eq!(links(&stranger).await, 0.0);
    assert_eq!(metric_at(&a_plain, "spread_peer_links").await, 1.0);
    // And a TLS peer without --peer-ca is a start-up error.
    let err = refused_start(&["--cluster-secret", SECRET, "--join", &joined]);
    assert!(err.contains("--peer-ca"), "{err}");
    // And a --peer-ca that holds no certificate is one too.
    let key = cert.file("key.pem");
    let err = refused_start(&[
        "--cluster-secret",
        SECRET,
        "--join",
        &joined,
        "--peer-ca",
        &key,
    ]);
    assert!(
        err.contains("loading --peer-ca") && err.contains("no certificate"),
        "{err}"
    );
}

#[actix_web::test]
async fn two_dialers_to_one_node_keep_one_link_without_churn() {
    let a = node("a", &[]);
    // The same node under two names: the second link is a duplicate, is
    // refused, and is not redialed while the first is up.
    let port = a.addr.rsplit(':').next().unwrap();
    let other_name = format!("localhost:{port}");
    let b = node("b", &["--join", &a.addr, "--join", &other_name]);
    wait_for(
        "one link, and the duplicate refused",
        EVENT_DEADLINE,
        async || {
            links(&b).await == 1.0 && metric(&b, "spread_peer_links_refused_total").await >= 1.0
        },
    )
    .await;
    // Both ends may refuse the duplicate of the first double dial, and the
    // second name is dialed a moment after the first: let the start settle
    // (ten heartbeats' time, and frames heard) before counting. (Frames
    // alone come faster than heartbeats while replication starts.)
    let up = std::time::Instant::now();
    let heard = metric(&b, "spread_peer_frames_total{dir=\"in\"}").await;
    wait_for("heartbeats at b", Duration::from_secs(15), async || {
        up.elapsed() >= Duration::from_secs(1)
            && metric(&b, "spread_peer_frames_total{dir=\"in\"}").await >= heard + 10.0
    })
    .await;
    let refused = metric(&b, "spread_peer_links_refused_total").await;
    // Heartbeats flow for more than a redial period (5 s at most).
    let heard = metric(&b, "spread_peer_frames_total{dir=\"in\"}").await;
    wait_for("heartbeats at b", Duration::from_secs(15), async || {
        metric(&b, "spread_peer_frames_total{dir=\"in\"}").await >= heard + 60.0
    })
    .await;
    assert_eq!(links(&b).await, 1.0);
    assert_eq!(links(&a).await, 1.0);
    assert_eq!(
        metric(&b, "spread_peer_links_refused_total").await,
        refused,
        "no churn: {}",
        b.log()
    );
}

fn all(states: &[(&str, &str)]) -> Vec<(String, String)> {
    states
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

#[actix_web::test]
async fn members_learn_of_each_other_see_a_dead_one_and_its_return() {
    let a = node("a", &[]);
    let b = node("b", &["--join", &a.addr]);
    // c knows only b; a learns of c by gossip, and links with it.
    let mut c = node("c", &["--join", &b.addr]);
    let everyone = all(&[("a", "alive"), ("b", "alive"), ("c", "alive")]);
    for s in [&a, &b, &c] {
        wait_for("three members alive", EVENT_DEADLINE, async || {
            members(s).await == everyone
        })
        .await;
    }
    wait_for("a linked with c", EVENT_DEADLINE, async || {
        links(&a).await == 2.0
    })
    .await;
    let owners = get(&format!("{}/cluster", a.url)).await.json()["partitions"][0]["owners"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(owners, 3, "each partition has three owners");
    assert_eq!(
        get(&format!("{}/cluster", b.url)).await.json()["replication"],
        3,
        "--replication 3 by default"
    );
    // `spread cluster` prints the same view.
    let cli = Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(["cluster", "--server", &a.url])
        .output()
        .expect("run spread cluster");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(printed["members"].as_array().unwrap().len(), 3);
    assert_eq!(printed["node"], "a");
    assert_eq!(metric(&a, "spread_members{state=\"alive\"}").await, 2.0);
    assert!(metric(&a, "spread_membership_changes_total").await >= 2.0);
    c.kill9();
    let without_c = all(&[("a", "alive"), ("b", "alive"), ("c", "dead")]);
    for s in [&a, &b] {
        wait_for("c dead", EVENT_DEADLINE, async || {
            members(s).await == without_c
        })
        .await;
    }
    c.restart();
    for s in [&a, &b, &c] {
        wait_for("c back, under its id", EVENT_DEADLINE, async || {
            members(s).await == everyone
        })
        .await;
    }
}

#[actix_web::test]
async fn a_node_stopped_with_sigterm_leaves_and_is_marked_dead_at_once() {
    // Default timings: without the farewell, a probe (1 s) and then three
    // periods of suspicion (3 s) would pass before `dead`.
    let args = |id: &'static str| vec!["--node-id", id, "--cluster-secret", SECRET];
    let a = Server::start(&args("a"));
    let mut join = args("b");
    join.extend_from_slice(&["--join", &a.addr]);
    let mut b = Server::start(&join);
    let both = all(&[("a", "alive"), ("b", "alive")]);
    wait_for("both alive", EVENT_DEADLINE, async || {
        members(&a).await == both
    })
    .await;
    b.terminate();
    let left = all(&[("a", "alive"), ("b", "dead")]);
    wait_for(
        "b dead well before a failure detector would say so",
        Duration::from_millis(2500),
        async || members(&a).await == left,
    )
    .await;
}

/// Each node's partition count in `/cluster` as `s` sees it, and the owner
/// set of every partition.
async fn ownership(s: &Server) -> (std::collections::BTreeMap<String, usize>, Vec<Vec<String>>) {
    let view = get(&format!("{}/cluster", s.url)).await.json();
    let mut load = std::collections::BTreeMap::new();
    let mut owners = Vec::new();
    for p in view["partitions"].as_array().unwrap() {
        let mut set: Vec<String> = p["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        for o in &set {
            *load.entry(o.clone()).or_insert(0) += 1;
        }
        set.sort();
        owners.push(set);
    }
    (load, owners)
}

#[actix_web::test]
async fn sixteen_nodes_converge_share_partitions_evenly_and_a_17th_moves_few() {
    // Small footprint: one worker, a small cache; 1,024 partitions (64
    // cannot balance 16 nodes).
    let small = [
        "--workers",
        "1",
        "--cache-mb",
        "8",
        "--partitions",
        "1024",
        "--peer-heartbeat-ms",
        "500",
        "--peer-timeout-ms",
        "5000",
    ];
    let ids: Vec<String> = (1..=17).map(|i| format!("node-{i:02}")).collect();
    let start = |i: usize, join: Option<&str>| {
        let mut args = vec!["--node-id", ids[i].as_str(), "--cluster-secret", SECRET];
        args.extend_from_slice(&small);
        if let Some(j) = join {
            args.extend_from_slice(&["--join", j]);
        }
        Server::start(&args)
    };
    let first = start(0, None);
    let seed = first.addr.clone();
    let mut nodes = vec![first];
    let began = std::time::Instant::now();
    for i in 1..16 {
        nodes.push(start(i, Some(&seed)));
    }
    all_alive(&nodes, &ids[..16]).await;
    println!("16 nodes started and converged in {:?}", began.elapsed());
    let (load, before) = ownership(&nodes[5]).await;
    let mean = 1024.0 * 3.0 / 16.0;
    println!("partitions per node: {load:?} (mean {mean})");
    assert_eq!(load.len(), 16);
    let max = *load.values().max().unwrap() as f64;
    assert!(max <= 1.25 * mean, "max {max} over 1.25 x {mean}");
    // All nodes agree on the owners.
    assert_eq!(ownership(&nodes[11]).await.1, before);
    // A 17th node joins: only the partitions it takes change owners.
    nodes.push(start(16, Some(&nodes[7].addr)));
    all_alive(&nodes, &ids).await;
    let after = ownership(&nodes[2]).await.1;
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let bound = 1.2 * 3.0 / 17.0 * 1024.0;
    println!("a 17th node moved the owners of {moved} of 1024 partitions (bound {bound:.0})");
    assert!(moved as f64 <= bound, "{moved} moved, bound {bound}");
    assert!(after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .all(|(a, _)| a.contains(&ids[16])));
}

#[actix_web::test]
async fn two_nodes_that_declared_each_other_dead_find_each_other_again() {
    // Cut apart longer than the suspicion, a and b each declare the other
    // dead. When the link comes back, each holds the other dead, and SWIM
    // sends nothing to a dead member: without a third member to gossip
    // through, they must still find each other.
    let a = node("a", &["--fault-injection"]);
    let b = node("b", &["--fault-injection", "--join", &a.addr]);
    let nodes = [a, b];
    let both = ["a".to_string(), "b".to_string()];
    all_alive(&nodes, &both).await;
    for round in 0..3 {
        cut(&nodes[0], &["b"]).await;
        cut(&nodes[1], &["a"]).await;
        for (s, other) in [(&nodes[0], "b"), (&nodes[1], "a")] {
            let what = format!("{} holds {other} dead (round {round})", s.addr);
            wait_for(&what, EVENT_DEADLINE, async || {
                members(s)
                    .await
                    .contains(&(other.to_string(), "dead".to_string()))
            })
            .await;
        }
        cut(&nodes[0], &[]).await;
        cut(&nodes[1], &[]).await;
        all_alive(&nodes, &both).await;
    }
}
