//! Benchmark: time travel on an embedded node (no HTTP in between). Prints
//! one JSON line per measure:
//!
//! - `at_read`: reads of the past (`get_at`, a random time within a path's
//!   history) against reads of the latest value (`get`), over `--paths`
//!   paths of `--versions` versions each;
//! - `playback`: a playback of every event under a prefix (`--playback`
//!   events, 1,000 paths) drained as fast as the stream gives them, with
//!   the process's resident memory before and at its peak;
//! - `compaction`: write latency (p50/p99/max of one writer, `lazy`
//!   durability) on a store of `--history` history events, first with
//!   history kept whole, then while compaction drops all but the latest
//!   version of each path, with resident memory sampled through the sweep.
//!
//! ```text
//! time [--paths 10000] [--versions 20] [--playback 100000] [--history 1000000]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use spread_actors::{Config, Durability, Event, Node, NodeId, Path, StreamItem, Version};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 2023-11-14 in µs: history written at explicit times from here.
const T0: u64 = 1_700_000_000_000_000;

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir);
    config.node_id = Some("bench".into());
    config.durability = Durability::Lazy;
    config.cache_bytes = 256 << 20;
    // A short log: history events leave it soon, so compaction may take them.
    config.log_retention = 10_000;
    config
}

/// Loads `versions` versions of each of `paths` paths under `prefix`, the
/// j-th version of every path at `T0 + j s + i µs`, 100-byte values.
async fn load(node: &Node, prefix: &str, paths: usize, versions: usize) {
    let writer = NodeId::new("writer").expect("id");
    for j in 0..versions {
        let events: Vec<Event> = (0..paths)
            .map(|i| Event {
                path: Path::parse_key(&format!("{prefix}/{}/k{i}", i % 100)).expect("path"),
                version: Version::new(T0 + j as u64 * 1_000_000 + i as u64, writer.clone()),
                value: Some(Bytes::from(vec![b'v'; 100])),
                content_type: None,
                expires_at: None,
                author: None,
            })
            .collect();
        for chunk in events.chunks(1024) {
            for r in join_all(chunk.iter().cloned().map(|e| node.merge(e))).await {
                r.expect("merge");
            }
        }
    }
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples VmRSS every 20 ms until stopped: (min, max) KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    min: Arc<AtomicU64>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(AtomicU64::new(u64::MAX));
        let max = Arc::new(AtomicU64::new(0));
        let (s, lo, hi) = (stop.clone(), min.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = rss_kib();
                lo.fetch_min(now, Ordering::Relaxed);
                hi.fetch_max(now, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            min,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.min.load(Ordering::Relaxed),
            self.max.load(Ordering::Relaxed),
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Random numbers without a dependency (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn at_read(paths: usize, versions: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(config(dir.path())).expect("node");
    actix::System::new().block_on(load(&node, "r", paths, versions));
    let names: Vec<String> = (0..paths).map(|i| format!("r/{}/k{i}", i % 100)).collect();
    let reads = 200_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Warm both paths alike first.
    for name in names.iter().take(paths.min(5000)) {
        node.get(name).expect("get");
    }
    let started = Instant::now();
    for _ in 0..reads {
        let name = &names[(rng.next() % paths as u64) as usize];
        assert!(node.get(name).expect("get").is_some());
    }
    let latest = started.elapsed();
    let started = Instant::now();
    for _ in 0..reads {
        let i = (rng.next() % paths as u64) as usize;
        let j = rng.next() % versions as u64;
        let at = T0 + j * 1_000_000 + i as u64 + 500_000;
        assert!(node.get_at(&names[i], at).expect("get_at").is_some());
    }
    let past = started.elapsed();
    let ns = |d: Duration| d.as_nanos() as f64 / reads as f64;
    println!(
        "{}",
        serde_json::json!({
            "measure": "at_read", "paths": paths, "versions": versions, "reads": reads,
            "latest_ns": ns(latest).round(), "at_ns": ns(past).round(),
            "ratio": (ns(past) / ns(latest) * 100.0).round() / 100.0,
        })
    );
    node.shutdown();
}

fn playback(events: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(config(dir.path())).expect("node");
    let paths = 1000;
    actix::System::new().block_on(async {
        load(&node, "p", paths, events.div_ceil(paths)).await;
        let before = rss_kib();
        let sampler = RssSampler::start();
        let started = Instant::now();
        let mut stream = node.playback("p", 0, None).expect("playback");
        let mut played = 0usize;
        while let Some(item) = stream.next().await {
            match item {
                StreamItem::Played(_) => played += 1,
                StreamItem::Ready { .. } => break,
                StreamItem::Ping { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let took = started.elapsed();
        let (_, peak) = sampler.finish();
        println!(
            "{}",
            serde_json::json!({
                "measure": "playback", "events": played,
                "seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
                "events_per_s": (played as f64 / took.as_secs_f64()).round(),
                "rss_before_mib": before / 1024, "rss_peak_mib": peak / 1024,
            })
        );
    });
    node.shutdown();
}

/// One writer's latencies over `writes` sequential writes.
async fn write_latencies(node: &Node, writes: usize, tag: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(writes);
    for i in 0..writes {
        let started = Instant::now();
        node.set(&format!("w/{tag}/{}", i % 1000), vec![b'w'; 100])
            .await
            .expect("set");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn compaction(history: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = 10_000;
    let versions = history.div_ceil(paths);
    {
        let node = Node::open(config(dir.path())).expect("node");
        actix::System::new().block_on(load(&node, "h", paths, versions));
        node.shutdown();
    }
    let writes = 20_000;
    let report = |label: &str, lat: &[Duration], extra: serde_json::Value| {
        let mut line = serde_json::json!({
            "measure": "compaction", "run": label, "history": paths * versions, "writes": lat.len(),
            "p50_us": percentile(lat, 0.50).round(), "p99_us": percentile(lat, 0.99).round(),
            "max_us": percentile(lat, 1.0).round(),
        });
        if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
            line.extend(extra);
        }
        println!("{line}");
    };
    // History kept whole.
    {
        let node = Node::open(config(dir.path())).expect("node");
        let lat = actix::System::new().block_on(write_latencies(&node, writes, "a"));
        report("kept", &lat, serde_json::json!({}));
        node.shutdown();
    }
    // All but the latest version of each path dropped, while writing.
    let mut c = config(dir.path());
    c.history_keep_versions = Some(1);
    c.compaction_interval = Duration::from_secs(3600);
    let sampler = RssSampler::start();
    let opened = Instant::now();
    let node = Node::open(c).expect("node");
    let lat = actix::System::new().block_on(write_latencies(&node, writes, "b"));
    let during = node.stats().compacted.load(Ordering::Relaxed);
    // The rest of the sweep.
    let deadline = Instant::now() + Duration::from_secs(1800);
    while node.stats().compaction_sweeps.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the sweep never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let swept = opened.elapsed();
    let (min, max) = sampler.finish();
    report(
        "compacting",
        &lat,
        serde_json::json!({
            "dropped_during_writes": during,
            "dropped": node.stats().compacted.load(Ordering::Relaxed),
            "sweep_seconds": (swept.as_secs_f64() * 10.0).round() / 10.0,
            "rss_min_mib": min / 1024, "rss_max_mib": max / 1024,
        }),
    );
    node.shutdown();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    at_read(arg(&args, "--paths", 10_000), arg(&args, "--versions", 20));
    playback(arg(&args, "--playback", 100_000));
    compaction(arg(&args, "--history", 1_000_000));
}
