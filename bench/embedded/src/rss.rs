//! Resident memory of the embedded engine for N keys, next to raw sled.
//!
//! ```text
//! cargo run --release -p spread-bench-embedded --bin rss -- spread|sled \
//!     [--keys 1000000] [--value-bytes 100] [--reads 100000] [--in-flight 256] \
//!     [--cache-mib 256] [--order scattered|sequential] [--dir DIR]
//! ```
//!
//! Both modes write the keys `bench/k<i>` (`i` in `0..keys`), each holding a
//! distinct `value-bytes` value, in `--order` (default `scattered`: a fixed
//! pseudo-random permutation of `0..keys`, so writes land all over the key
//! space and the partitions, as a real load does; `sequential`: `0, 1, …`),
//! into a fresh directory (a temp dir, removed
//! at the end, unless `--dir` names an empty or missing one, which is kept):
//!
//! - `spread`: a [`Node`] with `Config::new(dir)` defaults (the defaults
//!   `spread serve` starts from: 64 partitions, shard depth 2, log retention
//!   1M, sled cache `Config::cache_bytes` = 256 MiB) except `lazy` durability,
//!   so the load measures the engine rather than fsync. Writes go through
//!   `Node::set` with up to `--in-flight` of them pending, on an actix system.
//!   Every key costs the store its latest record, a history record and a
//!   change-log entry.
//! - `sled`: the same keys and values inserted one by one into a plain
//!   `sled::Db` opened the way Spread's store opens its own (same cache
//!   capacity, `Mode::HighThroughput`): the "raw sled on the same data" reference.
//!
//! Measured, in this order: VmRSS after opening (the baseline); the load (time
//! until the last write is acknowledged); VmRSS after it; `--reads` reads of
//! keys spread over the whole range, checked against what was written, and
//! VmRSS after them (reads grow it when the data outgrows sled's cache: pages
//! come back from disk, and sled keeps more than `cache_capacity` resident);
//! then what makes the data durable (`Node::shutdown`, which flushes, or
//! `Db::flush`) and VmRSS after it. VmHWM is the peak over the whole run; disk bytes are the file sizes
//! under the data dir once durable. One JSON object goes to stdout, progress
//! to stderr. `rss_per_key_bytes` is `(rss_loaded - rss_open) / keys`,
//! `disk_per_key_bytes` the durable files' size over `keys`.
//!
//! The process allocator is mimalloc, as in the `spread` binary; set
//! `RSS_ALLOC=system` in the environment to measure with the system
//! allocator instead (what an embedder gets by default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use spread_actors::{Config, Durability, Node};

/// The global allocator: mimalloc, or the system allocator when the
/// environment has `RSS_ALLOC=system`.
///
/// The choice is made at the first allocation (before `main`, on the only
/// thread) with libc's `getenv`, which does not allocate, and never changes,
/// so every block is freed by the allocator that gave it out.
struct SwitchAlloc;

/// 0: not chosen yet, 1: mimalloc, 2: system.
static ALLOC_CHOICE: AtomicU8 = AtomicU8::new(0);

extern "C" {
    fn getenv(name: *const c_char) -> *const c_char;
}

/// Whether the system allocator is in use (decided once).
fn use_system_alloc() -> bool {
    let mut choice = ALLOC_CHOICE.load(Ordering::Relaxed);
    if choice == 0 {
        // SAFETY: the name is a NUL-terminated literal; the result is NULL or
        // a NUL-terminated string owned by the environment, read right away.
        let system = unsafe {
            let value = getenv(c"RSS_ALLOC".as_ptr());
            !value.is_null() && CStr::from_ptr(value) == c"system"
        };
        choice = if system { 2 } else { 1 };
        ALLOC_CHOICE.store(choice, Ordering::Relaxed);
    }
    choice == 2
}

// SAFETY: every call goes to one allocator, fixed before the first block.
unsafe impl GlobalAlloc for SwitchAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if use_system_alloc() {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if use_system_alloc() {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if use_system_alloc() {
            System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if use_system_alloc() {
            System.realloc(ptr, layout, new_size)
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

#[global_allocator]
static ALLOCATOR: SwitchAlloc = SwitchAlloc;

const USAGE: &str = "\
usage: rss spread|sled [--keys N] [--value-bytes N] [--reads N] [--in-flight N]
                       [--cache-mib N] [--dir DIR]
  spread           load a spread_actors::Node (lazy durability, default config)
  sled             load a raw sled::Db with Spread's cache capacity
  --keys N         keys to write (default 1000000)
  --value-bytes N  bytes per value, at least 8 (default 100)
  --reads N        keys read back after the load (default 100000)
  --in-flight N    spread: writes pending at once (default 256)
  --cache-mib N    sled page cache, MiB (default: Spread's, Config::cache_bytes)
  --order O        scattered (default: a pseudo-random permutation of the keys)
                   or sequential (k0, k1, ...)
  --dir DIR        data dir, empty or missing, kept afterwards
                   (default: a temp dir, removed at the end)
  RSS_ALLOC=system in the environment: the system allocator instead of mimalloc";

/// What to load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Spread,
    Sled,
}

/// The command line.
struct Args {
    mode: Mode,
    keys: usize,
    value_bytes: usize,
    reads: usize,
    in_flight: usize,
    cache_bytes: u64,
    scattered: bool,
    dir: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = match args.next().as_deref() {
        Some("spread") => Mode::Spread,
        Some("sled") => Mode::Sled,
        Some("-h" | "--help") => return Err(String::new()),
        Some(other) => return Err(format!("unknown mode '{other}' (spread or sled)")),
        None => return Err("missing the mode (spread or sled)".into()),
    };
    let mut parsed = Args {
        mode,
        keys: 1_000_000,
        value_bytes: 100,
        reads: 100_000,
        in_flight: 256,
        cache_bytes: Config::new(PathBuf::new()).cache_bytes,
        scattered: true,
        dir: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag, None),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        let number = || -> Result<usize, String> {
            value
                .replace('_', "")
                .parse::<usize>()
                .map_err(|_| format!("{name}: '{value}' is not a whole number"))
        };
        match name.as_str() {
            "--keys" => parsed.keys = number()?,
            "--value-bytes" => parsed.value_bytes = number()?,
            "--reads" => parsed.reads = number()?,
            "--in-flight" => parsed.in_flight = number()?,
            "--cache-mib" => {
                parsed.cache_bytes = (number()? as u64)
                    .checked_mul(1 << 20)
                    .ok_or_else(|| format!("--cache-mib: {value} is too large"))?
            }
            "--dir" => parsed.dir = Some(PathBuf::from(value)),
            "--order" => {
                parsed.scattered = match value.as_str() {
                    "scattered" => true,
                    "sequential" => false,
                    _ => return Err(format!("--order: '{value}' (scattered or sequential)")),
                }
            }
            _ => return Err(format!("unknown option '{name}'")),
        }
    }
    if parsed.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if parsed.value_bytes < 8 {
        return Err("--value-bytes must be at least 8 (values carry their key's number)".into());
    }
    if parsed.in_flight == 0 {
        return Err("--in-flight must be at least 1".into());
    }
    parsed.reads = parsed.reads.min(parsed.keys);
    Ok(parsed)
}

/// The order keys are written in: `0..keys`, or a fixed permutation of it
/// (`i * step mod keys`, with `step` near `keys` × the golden ratio and
/// coprime to `keys`).
fn write_order(keys: usize, scattered: bool) -> impl Iterator<Item = usize> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut step = ((keys as f64 * 0.618_033_988_75) as usize).max(1);
    while gcd(step, keys) != 1 {
        step += 1;
    }
    let step = if scattered { step } else { 1 };
    (0..keys).map(move |i| ((i as u128 * step as u128) % keys as u128) as usize)
}

/// The key of number `i`.
fn key(i: usize) -> String {
    format!("bench/k{i}")
}

/// A `len`-byte value that differs per key: `i` in hex, then padding.
fn value(i: usize, len: usize) -> Bytes {
    let mut v = vec![b'v'; len];
    let tag = format!("{i:x}");
    let n = tag.len().min(len);
    v[..n].copy_from_slice(&tag.as_bytes()[..n]);
    Bytes::from(v)
}

/// VmRSS and VmHWM of this process, KiB.
fn memory_kib() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// VmRSS of this process, KiB.
fn rss_kib() -> Result<u64, String> {
    memory_kib().map(|(rss, _)| rss)
}

/// Sizes (apparent, and allocated blocks) of every file under `dir`.
fn disk_usage(dir: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if meta.is_dir() {
            let (a, b) = disk_usage(&entry.path())?;
            apparent += a;
            allocated += b;
        } else {
            apparent += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((apparent, allocated))
}

/// The indices of `reads` keys spread evenly over `0..keys`.
fn sample(keys: usize, reads: usize) -> impl Iterator<Item = usize> {
    (0..reads).map(move |j| j * keys / reads)
}

/// Figures of one run, filled in as it goes.
#[derive(Default)]
struct Figures {
    rss_open_kib: u64,
    load_secs: f64,
    rss_loaded_kib: u64,
    read_secs: f64,
    rss_read_kib: u64,
    durable_secs: f64,
    rss_durable_kib: u64,
}

/// Prints progress every tenth of the keys.
struct Progress {
    keys: usize,
    step: usize,
    next: usize,
    start: Instant,
}

impl Progress {
    fn new(keys: usize) -> Progress {
        let step = (keys / 10).max(1);
        Progress {
            keys,
            step,
            next: step,
            start: Instant::now(),
        }
    }

    fn done(&mut self, n: usize) {
        if n >= self.next || n == self.keys {
            self.next = n + self.step;
            let secs = self.start.elapsed().as_secs_f64();
            eprintln!(
                "  {n}/{} keys, {secs:.1} s, {:.0} writes/s, RSS {} MiB",
                self.keys,
                n as f64 / secs.max(1e-9),
                rss_kib().unwrap_or(0) / 1024
            );
        }
    }
}

fn run_spread(args: &Args, dir: &Path) -> Result<Figures, String> {
    let mut figures = Figures::default();
    let mut config = Config::new(dir);
    config.durability = Durability::Lazy;
    config.cache_bytes = args.cache_bytes;
    eprintln!(
        "spread: Node in {} (lazy durability, sled cache {} MiB, {} partitions)",
        dir.display(),
        config.cache_bytes >> 20,
        config.partitions
    );
    let node = Node::open(config).map_err(|e| format!("cannot open the node: {e}"))?;
    figures.rss_open_kib = rss_kib()?;

    let system = actix::System::new();
    let start = Instant::now();
    let mut progress = Progress::new(args.keys);
    let value_bytes = args.value_bytes;
    let node_ref = &node;
    system.block_on(async {
        let mut writes = futures_util::stream::iter(write_order(args.keys, args.scattered))
            .map(|i| async move {
                node_ref
                    .set(&key(i), value(i, value_bytes))
                    .await
                    .map_err(|e| format!("write of {} failed: {e}", key(i)))
            })
            .buffer_unordered(args.in_flight);
        let mut done = 0;
        while let Some(report) = writes.next().await {
            report?;
            done += 1;
            progress.done(done);
        }
        Ok::<(), String>(())
    })?;
    figures.load_secs = start.elapsed().as_secs_f64();
    figures.rss_loaded_kib = rss_kib()?;

    let start = Instant::now();
    for i in sample(args.keys, args.reads) {
        let stored = node
            .get(&key(i))
            .map_err(|e| format!("read of {} failed: {e}", key(i)))?
            .ok_or_else(|| format!("{} is missing after the load", key(i)))?;
        if stored.event.value.as_deref() != Some(&value(i, value_bytes)[..]) {
            return Err(format!("{} does not hold what was written", key(i)));
        }
    }
    figures.read_secs = start.elapsed().as_secs_f64();
    figures.rss_read_kib = rss_kib()?;

    let start = Instant::now();
    node.shutdown();
    figures.durable_secs = start.elapsed().as_secs_f64();
    figures.rss_durable_kib = rss_kib()?;
    drop(node);
    drop(system);
    Ok(figures)
}

fn run_sled(args: &Args, dir: &Path) -> Result<Figures, String> {
    let mut figures = Figures::default();
    let cache_bytes = args.cache_bytes;
    eprintln!(
        "sled: sled::Db in {} (cache {} MiB, HighThroughput)",
        dir.display(),
        cache_bytes >> 20
    );
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| format!("cannot open sled: {e}"))?;
    figures.rss_open_kib = rss_kib()?;

    let start = Instant::now();
    let mut progress = Progress::new(args.keys);
    for (n, i) in write_order(args.keys, args.scattered).enumerate() {
        db.insert(key(i).as_bytes(), value(i, args.value_bytes).as_ref())
            .map_err(|e| format!("insert of {} failed: {e}", key(i)))?;
        progress.done(n + 1);
    }
    figures.load_secs = start.elapsed().as_secs_f64();
    figures.rss_loaded_kib = rss_kib()?;

    let start = Instant::now();
    for i in sample(args.keys, args.reads) {
        let raw = db
            .get(key(i).as_bytes())
            .map_err(|e| format!("read of {} failed: {e}", key(i)))?
            .ok_or_else(|| format!("{} is missing after the load", key(i)))?;
        if raw.as_ref() != &value(i, args.value_bytes)[..] {
            return Err(format!("{} does not hold what was written", key(i)));
        }
    }
    figures.read_secs = start.elapsed().as_secs_f64();
    figures.rss_read_kib = rss_kib()?;

    let start = Instant::now();
    db.flush().map_err(|e| format!("flush failed: {e}"))?;
    figures.durable_secs = start.elapsed().as_secs_f64();
    figures.rss_durable_kib = rss_kib()?;
    drop(db);
    Ok(figures)
}

/// Creates `dir` if missing; refuses a non-empty one.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty: give an empty or missing directory",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            prepare_dir(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("spread-rss.")
                .tempdir()
                .map_err(|e| format!("cannot create a temp dir: {e}"))?;
            temp.path().join("data")
        }
    };
    let (system, figures) = match args.mode {
        Mode::Spread => ("spread", run_spread(args, &dir)?),
        Mode::Sled => ("sled", run_sled(args, &dir)?),
    };
    let (_, hwm_kib) = memory_kib()?;
    let (disk_bytes, disk_allocated_bytes) = disk_usage(&dir)?;
    let keys = args.keys as f64;
    let per_key = (figures.rss_loaded_kib as f64 - figures.rss_open_kib as f64) * 1024.0 / keys;
    let round = |x: f64, d: f64| (x * d).round() / d;
    eprintln!(
        "{system}: {} keys in {:.1} s ({:.0} writes/s); RSS {} -> {} MiB ({per_key:.0} B/key), \
         after reads {} MiB, durable {} MiB, peak {} MiB; disk {} MiB",
        args.keys,
        figures.load_secs,
        keys / figures.load_secs.max(1e-9),
        figures.rss_open_kib / 1024,
        figures.rss_loaded_kib / 1024,
        figures.rss_read_kib / 1024,
        figures.rss_durable_kib / 1024,
        hwm_kib / 1024,
        disk_bytes >> 20
    );
    Ok(serde_json::json!({
        "system": system,
        "allocator": if use_system_alloc() { "system" } else { "mimalloc" },
        "keys": args.keys,
        "order": if args.scattered { "scattered" } else { "sequential" },
        "value_bytes": args.value_bytes,
        "cache_bytes": args.cache_bytes,
        "load_secs": round(figures.load_secs, 1000.0),
        "writes_per_sec": round(keys / figures.load_secs.max(1e-9), 1.0),
        "rss_open_kib": figures.rss_open_kib,
        "rss_kib": figures.rss_loaded_kib,
        "rss_per_key_bytes": round(per_key, 10.0),
        "reads": args.reads,
        "read_secs": round(figures.read_secs, 1000.0),
        "rss_after_reads_kib": figures.rss_read_kib,
        "durable_secs": round(figures.durable_secs, 1000.0),
        "rss_durable_kib": figures.rss_durable_kib,
        "hwm_kib": hwm_kib,
        "disk_bytes": disk_bytes,
        "disk_allocated_bytes": disk_allocated_bytes,
        "disk_per_key_bytes": round(disk_bytes as f64 / keys, 10.0),
    }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rss: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rss: {e}");
            ExitCode::FAILURE
        }
    }
}
