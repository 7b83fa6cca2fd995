//! The embedded engine against raw sled, on the same data.
//!
//! Every group works on 10 000 keys `bench/k{i}` holding 100-byte values,
//! loaded both into a [`Node`] and into a plain sled database opened with
//! `sled::Config::new().path(dir).open()`.
//!
//! - `get`: `Node::get` of a stored key (a synchronous read of the latest
//!   record, decoded into a `Stored`) against `sled::Db::get` of the same key.
//! - `set_lazy`: `Node::set` with `Durability::Lazy`, so the cost is the engine
//!   itself (partition actor, committer, history and change log, hub) rather
//!   than fsync, against `sled::Db::insert`. `node_set` waits for each write
//!   before the next (one round trip per op, driven by an actix
//!   `SystemRunner::block_on`); `node_set_x64` keeps 64 writes in flight and
//!   reports the cost per write, which is closer to the engine's throughput.
//! - `set_durable`: one acknowledged write at a time with `Durability::Batch`
//!   (the ack waits for the next group flush, `batch_interval` = 2 ms) and
//!   `Durability::Flush`, against sled `insert` followed by `flush`.
//!
//! Run with `cargo bench -p spread-actors --bench embedded`; pass a filter
//! (e.g. `-- get`) to run a single group.

use std::hint::black_box;
use std::time::Duration;

use actix::SystemRunner;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spread_actors::{Config, Durability, Node};
use tempfile::TempDir;

const KEYS: usize = 10_000;
const VALUE_LEN: usize = 100;
const IN_FLIGHT: usize = 64;

/// The key set, shared by the node and the raw sled database.
fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("bench/k{i}")).collect()
}

/// A 100-byte value that differs per key.
fn value(i: usize) -> Bytes {
    let mut v = vec![b'v'; VALUE_LEN];
    let tag = i.to_string();
    v[..tag.len()].copy_from_slice(tag.as_bytes());
    Bytes::from(v)
}

/// Cycles through the keys so consecutive operations touch different keys.
struct Cycle {
    next: usize,
}

impl Cycle {
    fn new() -> Cycle {
        Cycle { next: 0 }
    }

    fn step(&mut self) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % KEYS;
        i
    }
}

/// A node in a fresh directory, loaded with every key.
fn loaded_node(rt: &SystemRunner, durability: Durability) -> (TempDir, Node) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::new(dir.path());
    cfg.durability = durability;
    let node = Node::open(cfg).expect("open node");
    let keys = keys();
    rt.block_on(async {
        // Load with many writes in flight: much faster than one by one.
        for (chunk, start) in keys.chunks(256).zip((0..).step_by(256)) {
            let writes = chunk
                .iter()
                .enumerate()
                .map(|(j, k)| node.set(k, value(start + j)));
            for report in futures_util::future::join_all(writes).await {
                report.expect("load write");
            }
        }
    });
    (dir, node)
}

/// A raw sled database in a fresh directory, loaded with the same data.
fn loaded_sled() -> (TempDir, sled::Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("open sled");
    for (i, k) in keys().iter().enumerate() {
        db.insert(k.as_bytes(), value(i).as_ref())
            .expect("sled insert");
    }
    db.flush().expect("sled flush");
    (dir, db)
}

fn bench_get(c: &mut Criterion) {
    let rt = actix::System::new();
    let (_node_dir, node) = loaded_node(&rt, Durability::Lazy);
    let (_sled_dir, db) = loaded_sled();
    let keys = keys();

    // Both sides must hold the same bytes.
    for i in [0, KEYS / 2, KEYS - 1] {
        let stored = node.get(&keys[i]).expect("get").expect("stored");
        let raw = db.get(keys[i].as_bytes()).expect("sled get").expect("raw");
        assert_eq!(stored.event.value.as_deref(), Some(raw.as_ref()));
    }

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    let mut cycle = Cycle::new();
    group.bench_function("node_get", |b| {
        b.iter(|| black_box(node.get(&keys[cycle.step()]).expect("get")))
    });
    let mut cycle = Cycle::new();
    group.bench_function("sled_get", |b| {
        b.iter(|| black_box(db.get(keys[cycle.step()].as_bytes()).expect("sled get")))
    });
    group.finish();
    node.shutdown();
}

fn bench_set_lazy(c: &mut Criterion) {
    let rt = actix::System::new();
    let (_node_dir, node) = loaded_node(&rt, Durability::Lazy);
    let (_sled_dir, db) = loaded_sled();
    let keys = keys();
    let values: Vec<Bytes> = (0..KEYS).map(|i| value(i + 1)).collect();

    let mut group = c.benchmark_group("set_lazy");
    group.throughput(Throughput::Elements(1));
    let mut cycle = Cycle::new();
    group.bench_function("node_set", |b| {
        b.iter(|| {
            let i = cycle.step();
            black_box(
                rt.block_on(node.set(&keys[i], values[i].clone()))
                    .expect("set"),
            )
        })
    });
    let mut cycle = Cycle::new();
    group.bench_function("sled_insert", |b| {
        b.iter(|| {
            let i = cycle.step();
            black_box(
                db.insert(keys[i].as_bytes(), values[i].as_ref())
                    .expect("sled insert"),
            )
        })
    });
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    let mut cycle = Cycle::new();
    group.bench_function("node_set_x64", |b| {
        b.iter(|| {
            let writes = (0..IN_FLIGHT).map(|_| {
                let i = cycle.step();
                node.set(&keys[i], values[i].clone())
            });
            for report in rt.block_on(futures_util::future::join_all(writes)) {
                black_box(report.expect("set"));
            }
        })
    });
    group.finish();
    node.shutdown();
}

fn bench_set_durable(c: &mut Criterion) {
    let rt = actix::System::new();
    let keys = keys();
    let values: Vec<Bytes> = (0..KEYS).map(|i| value(i + 2)).collect();

    let mut group = c.benchmark_group("set_durable");
    group.throughput(Throughput::Elements(1));
    for durability in [Durability::Batch, Durability::Flush] {
        let (_dir, node) = loaded_node(&rt, durability);
        let mut cycle = Cycle::new();
        group.bench_function(format!("node_set_{durability}"), |b| {
            b.iter(|| {
                let i = cycle.step();
                black_box(
                    rt.block_on(node.set(&keys[i], values[i].clone()))
                        .expect("set"),
                )
            })
        });
        node.shutdown();
    }
    let (_sled_dir, db) = loaded_sled();
    let mut cycle = Cycle::new();
    group.bench_function("sled_insert_flush", |b| {
        b.iter(|| {
            let i = cycle.step();
            db.insert(keys[i].as_bytes(), values[i].as_ref())
                .expect("sled insert");
            black_box(db.flush().expect("sled flush"))
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_get, bench_set_lazy, bench_set_durable
}
criterion_main!(benches);
