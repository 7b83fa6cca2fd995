//! Fan-out benchmark client for `bench/run.sh`.
//!
//! Measures how long one write takes to reach *every* subscriber of a
//! server, and lets the caller read the server's memory while the
//! subscribers sit idle.
//!
//! - `spread ADDR`: N WebSocket sessions on `ws://ADDR/wss/<prefix>`; each
//!   write is a `PUT /raw/<prefix>/x` over HTTP/1.1.
//! - `redis ADDR`: N RESP connections that `SUBSCRIBE <channel>`; each write
//!   is a `PUBLISH` on one more connection.
//! - `floor`: no server: a child process sends one frame to each of N
//!   loopback TCP connections from one thread, the best any server could do
//!   on this machine with this client (see [`floor`]).
//! - `storm ADDR`: not fan-out but its cost to writers: PUT latency at a
//!   steady rate, alone and while N WebSocket subscribers connect and
//!   disconnect in a loop (see [`storm`]); prints one JSON object.
//! - `latency spread|redis|nats ADDR`: not fan-out but one subscriber: the time
//!   from a write to its delivery, per write, at a steady rate (see
//!   [`latency`]); `fdatasync DIR`: one fdatasync's cost on DIR's disk.
//!   Each prints one JSON object.
//!
//! The receiving side is the same for all three ([`recv`]): `--threads`
//! receiver threads, each a single-threaded tokio runtime, one read loop per
//! subscriber on a raw socket with a minimal protocol decoder. The main
//! thread is plain blocking code: it opens the subscribers, makes the writes
//! on its own connection and collects the times. Progress goes to stderr;
//! stdout carries a line `idle <N>` once every subscriber is ready (with
//! `--pause-stdin` the client then waits for a line on stdin, so a script can
//! read the server's RSS), and finally one JSON object with the per-write
//! "last delivery" times.

mod floor;
mod latency;
mod nats;
mod recv;
mod redis;
mod spread;
mod stats;
mod storm;
mod ws;

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::recv::Receivers;
use crate::stats::Summary;

/// File descriptors kept free besides one per subscriber (stdio, the
/// publisher's connection, the runtimes' epoll and wake-up fds, a child).
const SPARE_FDS: usize = 64;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "spread-bench-fanout",
    about = "Fan-out latency and memory benchmark client"
)]
struct Cli {
    /// Which server to measure.
    #[command(subcommand)]
    cmd: Cmd,
}

/// The systems under test.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Spread: WebSocket subscribers on /wss/<prefix>, writes with PUT /raw/<prefix>/x.
    Spread(SpreadArgs),
    /// Redis: SUBSCRIBE on N connections, PUBLISH from one more.
    Redis(RedisArgs),
    /// No server: one thread of a child process writes a frame to each of N
    /// loopback TCP connections (the kernel's floor on this machine).
    Floor(FloorArgs),
    /// The sender of `floor` (started by it; values to send on stdin).
    #[command(hide = true)]
    FloorServer(FloorServerArgs),
    /// Spread: PUT latency at a steady rate, alone, then while N WebSocket
    /// subscribers connect and disconnect in a loop, then alone again.
    Storm(storm::StormArgs),
    /// Spread or Redis: write -> subscriber latency, one subscriber, writes
    /// at a steady rate on another connection.
    Latency(latency::LatencyArgs),
    /// fdatasync latency on a directory's filesystem.
    Fdatasync(latency::FsyncArgs),
}

/// `spread` subcommand.
#[derive(Args, Debug)]
struct SpreadArgs {
    /// Server address, HOST:PORT.
    addr: String,
    /// Path prefix the subscribers follow; the write goes to <prefix>/x.
    #[arg(long, default_value = "fan")]
    prefix: String,
    /// Settings shared with the other systems.
    #[command(flatten)]
    common: Common,
}

/// `redis` subcommand.
#[derive(Args, Debug)]
struct RedisArgs {
    /// Server address, HOST:PORT.
    addr: String,
    /// Pub/sub channel.
    #[arg(long, default_value = "fan")]
    channel: String,
    /// Settings shared with the other systems.
    #[command(flatten)]
    common: Common,
}

/// `floor` subcommand.
#[derive(Args, Debug)]
struct FloorArgs {
    /// Bytes of one update frame on the wire (WebSocket header included);
    /// the default is the size of Spread's update frame for the test value.
    #[arg(long, default_value_t = floor::DEFAULT_MESSAGE_BYTES)]
    message_bytes: usize,
    /// Settings shared with the other systems.
    #[command(flatten)]
    common: Common,
}

/// `floor-server` subcommand.
#[derive(Args, Debug)]
struct FloorServerArgs {
    /// Bytes of one update frame on the wire.
    #[arg(long, default_value_t = floor::DEFAULT_MESSAGE_BYTES)]
    message_bytes: usize,
}

/// Settings shared by every system.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Measured writes.
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
    /// Writes before the measured ones (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Receiver threads (each a single-threaded runtime; subscribers are
    /// dealt to them round-robin). One by default: at 10k subscribers on the
    /// 2-core VM, 2 threads gave the same floor, a slower Spread (its 2
    /// workers compete with them) and a ~15% faster Redis.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// While a write is in progress, each receiver thread polls its sockets
    /// every this many microseconds instead of sleeping in epoll_wait
    /// (0: never; see `tick` in recv.rs). Spares the sender a cross-CPU
    /// wake-up per frame (floor and Redis at 10k: 10-25% faster; Spread:
    /// same); deliveries are seen at most this late.
    #[arg(long, default_value_t = 100)]
    pub poll_us: u64,
    /// Connections opened at once; the next batch waits until these are ready.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Pause between writes, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub gap_ms: u64,
    /// Give up on a write (or on connecting a batch) after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Once every subscriber is ready, print `idle <N>` and wait for a line on stdin.
    #[arg(long)]
    pub pause_stdin: bool,
    /// Once every subscriber is ready, stay idle this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub idle_ms: u64,
}

impl Common {
    /// `--poll-us` as a duration.
    pub fn poll(&self) -> Duration {
        Duration::from_micros(self.poll_us)
    }

    /// `--timeout-ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (system, common) = match &cli.cmd {
        Cmd::Spread(a) => ("spread", a.common.clone()),
        Cmd::Redis(a) => ("redis", a.common.clone()),
        Cmd::Floor(a) => ("floor", a.common.clone()),
        Cmd::FloorServer(a) => return floor::serve(a.message_bytes),
        Cmd::Storm(a) => {
            check_fd_limit("storm", a.subscribers)?;
            let mut json = storm::run(a)?;
            json["system"] = serde_json::Value::from("spread");
            writeln!(std::io::stdout().lock(), "{json}").context("writing the result")?;
            return Ok(());
        }
        Cmd::Latency(a) => {
            let json = latency::run(a)?;
            writeln!(std::io::stdout().lock(), "{json}").context("writing the result")?;
            // The subscriber thread is still reading: leave without it.
            std::process::exit(0)
        }
        Cmd::Fdatasync(a) => {
            let json = latency::fdatasync(a)?;
            writeln!(std::io::stdout().lock(), "{json}").context("writing the result")?;
            return Ok(());
        }
    };
    if common.subscribers == 0 || common.repeats == 0 || common.batch == 0 || common.threads == 0 {
        bail!("--subscribers, --repeats, --batch and --threads must be at least 1");
    }
    check_fd_limit(system, common.subscribers)?;
    let summary = match &cli.cmd {
        Cmd::Spread(a) => spread::run(&a.addr, &a.prefix, &a.common)?,
        Cmd::Redis(a) => redis::run(&a.addr, &a.channel, &a.common)?,
        Cmd::Floor(a) => floor::run(a.message_bytes, &a.common)?,
        Cmd::FloorServer(_) | Cmd::Storm(_) | Cmd::Latency(_) | Cmd::Fdatasync(_) => {
            unreachable!("handled above")
        }
    };
    let mut json = summary.to_json();
    json["system"] = serde_json::Value::from(system);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").context("writing the result")?;
    out.flush().context("writing the result")?;
    // Leave without tearing down thousands of connections one by one.
    std::process::exit(0)
}

/// Fails with a clear message if `ulimit -n` is too low for `subscribers`
/// connections (and, for `floor`, as many in its sender process).
fn check_fd_limit(system: &str, subscribers: usize) -> anyhow::Result<()> {
    let Some(limit) = open_files_limit() else {
        return Ok(()); // unknown: let connect() report it
    };
    let needed = subscribers + SPARE_FDS;
    if needed > limit {
        let also = if system == "floor" {
            " (and as many in the floor sender, a child process)"
        } else {
            ""
        };
        bail!(
            "{subscribers} subscribers need about {needed} open files in this process{also}, \
             but the limit (ulimit -n) is {limit}: raise it (bench/run.sh raises it to the hard \
             limit) or use fewer subscribers"
        );
    }
    Ok(())
}

/// This process's soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Opens `common.subscribers` subscribers through `open` (which calls
/// [`Receivers::open`] once), `common.batch` at a time, waits until all are
/// ready, then pauses as asked (`idle <N>` on stdout).
pub fn connect_all<F>(rx: &mut Receivers, common: &Common, mut open: F) -> anyhow::Result<()>
where
    F: FnMut(&mut Receivers),
{
    let started = Instant::now();
    let mut opened = 0;
    while opened < common.subscribers {
        let n = common.batch.min(common.subscribers - opened);
        for _ in 0..n {
            open(rx);
        }
        opened += n;
        rx.wait_ready(opened, common.timeout())
            .with_context(|| format!("connecting subscribers {}..{opened}", opened - n))?;
    }
    let took = started.elapsed();
    eprintln!(
        "fanout: {} subscribers ready in {:.2}s ({} receiver thread{})",
        common.subscribers,
        took.as_secs_f64(),
        rx.threads(),
        if rx.threads() == 1 { "" } else { "s" }
    );
    rx.connect_time = took;
    idle(common)
}

/// The pause once every subscriber is ready: prints `idle <N>`, then waits
/// for a line on stdin (`--pause-stdin`) and/or `--idle-ms`. The receiver
/// threads keep answering pings meanwhile.
fn idle(common: &Common) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "idle {}", common.subscribers).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    if common.pause_stdin {
        // End of input also means "go on".
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    if common.idle_ms > 0 {
        std::thread::sleep(Duration::from_millis(common.idle_ms));
    }
    Ok(())
}

/// Runs the warm-up and measured writes: for each, starts the clock, calls
/// `publish(value)` and waits until every subscriber has seen `value`.
pub fn measure<F>(rx: &mut Receivers, common: &Common, mut publish: F) -> anyhow::Result<Summary>
where
    F: FnMut(&[u8]) -> anyhow::Result<()>,
{
    let nonce = std::process::id();
    let mut summary = Summary::new(common.subscribers);
    for round in 0..common.warmup + common.repeats {
        let value = format!("fanout-{nonce}-{round}-{}", "v".repeat(64)).into_bytes();
        let gen = rx.begin(&value);
        publish(&value).with_context(|| format!("write {round}"))?;
        let arrivals = rx
            .wait_round(gen, common.timeout())
            .with_context(|| format!("write {round}"))?;
        if round >= common.warmup {
            summary.add(arrivals);
        }
        std::thread::sleep(Duration::from_millis(common.gap_ms));
    }
    summary.connect = rx.connect_time;
    summary.threads = rx.threads();
    summary
        .extra
        .insert("poll_us".into(), common.poll_us.into());
    Ok(summary)
}
