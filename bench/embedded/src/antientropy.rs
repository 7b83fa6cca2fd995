//! Benchmark: what anti-entropy costs to find and repair k differing events
//! among N, on two embedded nodes in one process (the walk of
//! `merkle::diff` between their trees, B answering each question in the
//! form a peer link carries: the bytes and questions are what the link
//! would carry, the time has no network in it). Prints one JSON line per (N, k): bytes the walk's answers and
//! the missing events weigh, against the minimum (the k events alone);
//! questions (round trips); the walk's time; and the trees' bytes per key.
//!
//! ```text
//! antientropy [--n 10000,100000,1000000] [--k 1,100,10000]
//! ```
//!
//! Each N loads N events of 100 bytes (paths `bench/<i % 1000>/k<i>`) into
//! both nodes; then, for each k in increasing order, node A alone takes
//! newer versions of paths until it holds k events B lacks.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use spread_actors::cluster::differ::question::answer;
use spread_actors::cluster::differ::sides::{LocalSide, RemoteSide};
use spread_actors::merkle::diff;
use spread_actors::{Config, Durability, Event, Node, NodeId, Path, Version};

fn list(args: &[String], flag: &str, default: &[usize]) -> Vec<usize> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn open(dir: &std::path::Path, id: &str) -> Node {
    let mut config = Config::new(dir);
    config.node_id = Some(id.into());
    config.durability = Durability::Lazy;
    config.cache_bytes = 256 << 20;
    Node::open(config).expect("node opens")
}

fn event(i: usize, time: u64) -> Event {
    Event {
        path: Path::parse_key(&format!("bench/{}/k{i}", i % 1000)).expect("path"),
        version: Version::new(time, NodeId::new("writer").expect("id")),
        value: Some(Bytes::from(vec![b'v'; 100])),
        content_type: None,
        expires_at: None,
        author: None,
    }
}

/// What an event weighs on a link, about (as the walk counts it).
fn weight(e: &Event) -> usize {
    e.path.as_str().len() + e.value.as_ref().map_or(0, |v| v.len()) + 64
}

/// Merges `events` into `node`, 512 at a time.
async fn load(node: &Node, events: impl Iterator<Item = Event>) {
    let events: Vec<Event> = events.collect();
    for chunk in events.chunks(512) {
        for r in join_all(chunk.iter().cloned().map(|e| node.merge(e))).await {
            r.expect("merge");
        }
    }
}

/// Waits until `node`'s trees hold every committed event.
fn settle(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while node.merkle_unfolded() > 0 {
        assert!(Instant::now() < deadline, "the trees never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ns = list(&args, "--n", &[10_000, 100_000]);
    let ks = list(&args, "--k", &[1, 100, 10_000]);
    for &n in &ns {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
        let started = Instant::now();
        actix::System::new().block_on(async {
            load(&a, (0..n).map(|i| event(i, 1_000_000 + i as u64))).await;
            load(&b, (0..n).map(|i| event(i, 1_000_000 + i as u64))).await;
        });
        settle(&a);
        settle(&b);
        let load_s = started.elapsed().as_secs_f64();
        let tree_bytes = a.merkle_bytes().expect("tree bytes");
        let mut extra = 0;
        for &k in &ks {
            if k > n {
                continue;
            }
            // A alone takes newer versions of paths until k events differ.
            let newer: Vec<Event> = (extra..k)
                .map(|j| event(j * (n / k.max(1)).max(1) % n, 3_000_000 + j as u64))
                .collect();
            let minimum: usize = (0..k)
                .map(|j| weight(&event(j * (n / k.max(1)).max(1) % n, 3_000_000 + j as u64)))
                .sum();
            actix::System::new().block_on(load(&a, newer.into_iter()));
            extra = k;
            settle(&a);
            // B answers as over a link: its answers go through the wire
            // forms (fingerprints cut to 128 bits, pages of children).
            let b2 = b.clone();
            let left = LocalSide { node: a.clone() };
            let right = RemoteSide {
                ask: Box::new(move |part, q| answer(&b2, part, q).map_err(|e| format!("{e:?}"))),
            };
            let t0 = Instant::now();
            // One question for every partition's root, then the walks of
            // those that differ.
            let parts = a.partitions() as u16;
            let mut questions = 1;
            let mut bytes = usize::from(parts) * spread_actors::merkle::fingerprint::WIRE_BYTES;
            let mut found = 0;
            for part in 0..parts {
                if a.partition_root(part).unwrap() == b.partition_root(part).unwrap() {
                    continue;
                }
                let walk = diff(&left, &right, part, "").expect("walk");
                questions += walk.questions;
                bytes += walk.bytes;
                found += walk.only_left.len() + walk.only_right.len();
                // The events B lacks cross the link too.
                for stored in a.events_named(&walk.only_left).expect("events") {
                    bytes += weight(&stored.event);
                }
            }
            let walk_ms = t0.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(found, k, "the walk found every difference");
            println!(
                "{{\"n\": {n}, \"k\": {k}, \"bytes\": {bytes}, \"minimum_bytes\": {minimum}, \"ratio\": {:.2}, \"questions\": {questions}, \"walk_ms\": {walk_ms:.1}, \"tree_bytes_per_key\": {:.1}, \"load_s\": {load_s:.1}}}",
                bytes as f64 / minimum as f64,
                tree_bytes as f64 / n as f64,
            );
        }
        a.shutdown();
        b.shutdown();
    }
}
