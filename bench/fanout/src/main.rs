//! Fan-out benchmark client for `bench/run.sh`.
//!
//! Measures how long one write takes to reach *every* subscriber of a
//! server, and lets the caller read the server's memory while the
//! subscribers sit idle.
//!
//! - `spread ADDR`: N WebSocket sessions on `ws://ADDR/wss/<prefix>`; each
//!   write is a `PUT /raw/<prefix>/x` over HTTP.
//! - `redis ADDR`: N RESP connections that `SUBSCRIBE <channel>`; each write
//!   is a `PUBLISH` on one more connection.
//!
//! Every connection is driven by one single-threaded actix runtime, each
//! read loop a local task. Progress goes to stderr; stdout carries a line
//! `idle <N>` once every subscriber is ready (with `--pause-stdin` the client
//! then waits for a line on stdin, so a script can read the server's RSS),
//! and finally one JSON object with the per-repeat "last delivery" times.

mod redis;
mod spread;
mod stats;

use std::io::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::stats::{Fanout, Summary};

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
    };
    if common.subscribers == 0 || common.repeats == 0 || common.batch == 0 {
        bail!("--subscribers, --repeats and --batch must be at least 1");
    }
    let summary = actix_web::rt::System::new().block_on(async move {
        match cli.cmd {
            Cmd::Spread(a) => spread::run(&a.addr, &a.prefix, &a.common).await,
            Cmd::Redis(a) => redis::run(&a.addr, &a.channel, &a.common).await,
        }
    })?;
    let mut json = summary.to_json();
    json["system"] = serde_json::Value::from(system);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").context("writing the result")?;
    out.flush().context("writing the result")?;
    Ok(())
}

/// Opens `common.subscribers` subscribers through `open` (one local task
/// each, `common.batch` at a time), waits until all are ready, then pauses
/// as asked (`idle <N>` on stdout). Returns when every one is ready.
pub async fn connect_all<F>(fanout: &Rc<Fanout>, common: &Common, mut open: F) -> anyhow::Result<()>
where
    F: FnMut(Rc<Fanout>),
{
    let started = Instant::now();
    let mut opened = 0;
    while opened < common.subscribers {
        let n = common.batch.min(common.subscribers - opened);
        for _ in 0..n {
            open(fanout.clone());
        }
        opened += n;
        fanout
            .wait_ready(opened, common.timeout())
            .await
            .with_context(|| format!("connecting subscribers {}..{opened}", opened - n))?;
    }
    eprintln!(
        "fanout: {} subscribers ready in {:.2}s",
        common.subscribers,
        started.elapsed().as_secs_f64()
    );
    fanout.set_connect_time(started.elapsed());
    idle(common).await
}

/// The pause once every subscriber is ready: prints `idle <N>`, then waits
/// for a line on stdin (`--pause-stdin`) and/or `--idle-ms`.
async fn idle(common: &Common) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "idle {}", common.subscribers).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    if common.pause_stdin {
        // A blocking read on its own thread keeps the read loops (and their
        // pongs) running while we wait.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        // A closed channel (the thread died) also means "go on".
        let _ = rx.await;
    }
    if common.idle_ms > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(common.idle_ms)).await;
    }
    Ok(())
}

/// Runs the warm-up and measured writes: for each, records the start,
/// calls `publish(value)` and waits until every subscriber has seen `value`.
pub async fn measure<F, Fut>(
    fanout: &Rc<Fanout>,
    common: &Common,
    mut publish: F,
) -> anyhow::Result<Summary>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let nonce = std::process::id();
    let mut summary = Summary::new(common.subscribers);
    for round in 0..common.warmup + common.repeats {
        let value = format!("fanout-{nonce}-{round}-{}", "v".repeat(64)).into_bytes();
        fanout.begin(value.clone());
        publish(value)
            .await
            .with_context(|| format!("write {round}"))?;
        let arrivals = fanout
            .wait_round(common.timeout())
            .await
            .with_context(|| format!("write {round}"))?;
        if round >= common.warmup {
            summary.add(arrivals);
        }
        actix_web::rt::time::sleep(Duration::from_millis(common.gap_ms)).await;
    }
    summary.connect = fanout.connect_time();
    Ok(summary)
}
