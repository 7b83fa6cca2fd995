//! `storm`: how a connect/disconnect storm of WebSocket subscribers slows
//! writers down.
//!
//! Three phases against one Spread node, each the same writes at the same
//! steady rate (`--rate` writes/s over `--connections` keep-alive HTTP/1.1
//! connections, one write in flight on each, 100-byte values to
//! `<prefix>/live/k<i>`): `baseline` alone, `storm` while `--subscribers`
//! clients each connect a WebSocket to `<storm-prefix>`, read a little and
//! drop it, in a loop, and `after` alone again (how far the machine drifted,
//! and whether the storm left anything behind). Each phase reports the PUT
//! latencies (p50, p99, max: send to answer, and from the write's place in
//! the schedule, which also counts the time a write waited for the one
//! before it); the storm phase also reports how many sessions the storm
//! made per second.
//!
//! The storm runs flat out (each client reconnects as soon as its session
//! ends) or, with `--storm-rate`, at a fixed number of sessions per second.
//! A storm session is one of: drop right after the upgrade; drop after a
//! few snapshot frames; read the snapshot to `ready` (and up to `--frames`
//! frames after it) and drop. The storm prefix holds `--keys` values, written
//! once before the phases; by default it is not where the writers write, so
//! the figures show the cost of sessions coming and going (upgrade, hub
//! registration, snapshot read, teardown), not of fanning the writes out to
//! them (`--storm-prefix <prefix>/live` adds that).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::recv::{closed, Conn, Decoder as _, Frame};
use crate::spread::Put;
use crate::stats::{ms, percentile};
use crate::ws::{handshake, os_seed, Rng, WsDecoder};

/// `storm` subcommand.
#[derive(Args, Debug)]
pub struct StormArgs {
    /// Server address, HOST:PORT (Spread).
    pub addr: String,
    /// Writes go to <prefix>/live/k<i>; the storm's snapshot is <prefix>/snap.
    #[arg(long, default_value = "storm")]
    pub prefix: String,
    /// Where the storm subscribes (default: <prefix>/snap, where nobody writes).
    #[arg(long)]
    pub storm_prefix: Option<String>,
    /// Measured writes per phase.
    #[arg(long, default_value_t = 3000)]
    pub writes: usize,
    /// Writes before the measured ones of each phase (not counted).
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Writes per second, over all writer connections.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Writer connections (keep-alive, one write in flight each).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Paths written in turn, and values in the storm's snapshot.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Value bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Storm clients, each connecting and dropping a WebSocket in a loop.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Storm sessions per second over all clients (client k's session j is
    /// due at (j * subscribers + k) / rate); 0: each client starts its next
    /// session as soon as the last one ends.
    #[arg(long, default_value_t = 0)]
    pub storm_rate: u64,
    /// A storm session that reads to `ready` reads up to this many frames more.
    #[arg(long, default_value_t = 2)]
    pub frames: usize,
    /// Storm client threads (each a single-threaded tokio runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A phase makes no more writes after this many seconds (when the
    /// writers cannot keep the rate, a phase would otherwise last until all
    /// its writes are done); its figures then cover fewer writes.
    #[arg(long, default_value_t = 30)]
    pub max_phase_secs: u64,
    /// Give up on a write, a storm session's read, or the storm's ramp-up
    /// after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

/// Runs the three phases; returns the result as one JSON object.
pub fn run(args: &StormArgs) -> anyhow::Result<serde_json::Value> {
    let prefix = args.prefix.trim_matches('/').to_string();
    if prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    if args.writes == 0 || args.rate == 0 || args.connections == 0 || args.keys == 0 {
        bail!("--writes, --rate, --connections and --keys must be at least 1");
    }
    let storm_prefix = args
        .storm_prefix
        .clone()
        .unwrap_or_else(|| format!("{prefix}/snap"));
    let storm_prefix = storm_prefix.trim_matches('/').to_string();
    let timeout = Duration::from_millis(args.timeout_ms);
    let value = vec![b'v'; args.value_bytes];

    // The storm's snapshot, and every path the writers write, once.
    let mut put = Put::new(&args.addr, timeout);
    for k in 0..args.keys {
        put.send(&format!("/raw/{storm_prefix}/k{k}"), &value)?;
        put.send(&format!("/raw/{prefix}/live/k{k}"), &value)?;
    }
    drop(put);

    let writes = Writes {
        addr: &args.addr,
        prefix: &prefix,
        keys: args.keys,
        value: &value,
        rate: args.rate,
        connections: args.connections,
        warmup: args.warmup,
        measured: args.writes,
        max_phase: Duration::from_secs(args.max_phase_secs.max(1)),
        timeout,
    };
    eprintln!(
        "storm: baseline: {} writes at {}/s over {} connection(s)",
        args.writes, args.rate, args.connections
    );
    let baseline = writes.run().context("baseline writes")?;
    eprintln!("storm: baseline: {}", baseline.to_json());

    let storm = Storm::start(args, &storm_prefix)?;
    let ramp = storm.ramp_up(args.subscribers as u64, timeout);
    let before = storm.counts();
    let phase = Instant::now();
    let stormy = ramp.and_then(|()| writes.run().context("writes during the storm"));
    let after_storm = storm.counts();
    let phase = phase.elapsed().as_secs_f64().max(1e-9);
    let first_error = storm.stop(timeout);
    let mut during = stormy?.to_json();
    let sessions = after_storm.sessions - before.sessions;
    let readies = after_storm.readies - before.readies;
    let errors = after_storm.errors - before.errors;
    during["sessions"] = sessions.into();
    // Over the whole phase, warm-up writes included.
    during["storm_secs"] = ((phase * 1000.0).round() / 1000.0).into();
    during["sessions_per_s"] = round1(sessions as f64 / phase).into();
    during["ready_sessions_per_s"] = round1(readies as f64 / phase).into();
    during["storm_errors"] = errors.into();
    during["first_storm_error"] = first_error.into();
    eprintln!("storm: during the storm: {during}");

    let after = writes.run().context("writes after the storm")?;
    eprintln!("storm: after: {}", after.to_json());

    let base = baseline.to_json();
    let ratio = |field: &str| -> serde_json::Value {
        match (during[field].as_f64(), base[field].as_f64()) {
            (Some(d), Some(b)) if b > 0.0 => ((d / b * 100.0).round() / 100.0).into(),
            _ => serde_json::Value::Null,
        }
    };
    Ok(serde_json::json!({
        "writes": args.writes,
        "warmup": args.warmup,
        "rate": args.rate,
        "connections": args.connections,
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "subscribers": args.subscribers,
        "threads": args.threads,
        "storm_prefix": storm_prefix,
        "storm_rate": args.storm_rate,
        "p50_ratio": ratio("p50_ms"),
        "p99_ratio": ratio("p99_ms"),
        "baseline": base,
        "storm": during,
        "after": after.to_json(),
    }))
}

/// One decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The writes of one phase.
struct Writes<'a> {
    addr: &'a str,
    prefix: &'a str,
    keys: usize,
    value: &'a [u8],
    rate: u64,
    connections: usize,
    warmup: usize,
    measured: usize,
    max_phase: Duration,
    timeout: Duration,
}

/// The latencies of one phase's measured writes.
struct Latencies {
    /// Send to answer.
    service: Vec<Duration>,
    /// The write's place in the schedule to its answer.
    scheduled: Vec<Duration>,
    /// First to last measured write.
    took: Duration,
}

impl Writes<'_> {
    /// Write `i` (of all connections) is due `i / rate` seconds after the
    /// start; connection `c` makes writes `c, c + C, c + 2C, ...`, each once
    /// it is due and the one before has been answered, until `max_phase`.
    fn run(&self) -> anyhow::Result<Latencies> {
        let total = self.warmup + self.measured;
        let start = Instant::now() + Duration::from_millis(20);
        let interval = Duration::from_secs_f64(1.0 / self.rate as f64);
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.connections)
                .map(|c| {
                    scope.spawn(
                        move || -> anyhow::Result<Vec<(usize, Instant, Instant, Instant)>> {
                            let mut put = Put::new(self.addr, self.timeout);
                            let mut out = Vec::with_capacity(total / self.connections + 1);
                            for i in (c..total).step_by(self.connections) {
                                let due = start + interval.mul_f64(i as f64);
                                let now = Instant::now();
                                if now > start + self.max_phase {
                                    break;
                                }
                                if due > now {
                                    std::thread::sleep(due - now);
                                }
                                let path = format!("/raw/{}/live/k{}", self.prefix, i % self.keys);
                                let sent = Instant::now();
                                put.send(&path, self.value)
                                    .with_context(|| format!("write {i}"))?;
                                out.push((i, due, sent, Instant::now()));
                            }
                            Ok(out)
                        },
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer thread panicked")))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let mut service = Vec::with_capacity(self.measured);
        let mut scheduled = Vec::with_capacity(self.measured);
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for (i, due, sent, answered) in results.into_iter().flatten() {
            if i < self.warmup {
                continue;
            }
            service.push(answered - sent);
            scheduled.push(answered.saturating_duration_since(due));
            first = Some(first.map_or(sent, |f| f.min(sent)));
            last = Some(last.map_or(answered, |l| l.max(answered)));
        }
        service.sort_unstable();
        scheduled.sort_unstable();
        let took = match (first, last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        };
        Ok(Latencies {
            service,
            scheduled,
            took,
        })
    }
}

impl Latencies {
    fn to_json(&self) -> serde_json::Value {
        let n = self.service.len();
        let mean = if n == 0 {
            None
        } else {
            Some(self.service.iter().sum::<Duration>() / n as u32)
        };
        let secs = self.took.as_secs_f64();
        serde_json::json!({
            "writes": n,
            "p50_ms": ms(percentile(&self.service, 50.0)),
            "p99_ms": ms(percentile(&self.service, 99.0)),
            "p999_ms": ms(percentile(&self.service, 99.9)),
            "max_ms": ms(self.service.last().copied()),
            "mean_ms": ms(mean),
            "scheduled_p50_ms": ms(percentile(&self.scheduled, 50.0)),
            "scheduled_p99_ms": ms(percentile(&self.scheduled, 99.0)),
            "scheduled_max_ms": ms(self.scheduled.last().copied()),
            "secs": (secs * 1000.0).round() / 1000.0,
            "writes_per_s": round1(if secs > 0.0 { n as f64 / secs } else { 0.0 }),
        })
    }
}

/// Counters of the storm, shared by its clients.
#[derive(Default)]
struct Counters {
    /// Sessions ended (by the client, as planned).
    sessions: AtomicU64,
    /// Sessions that reached `ready`.
    readies: AtomicU64,
    /// Sessions that failed (refused, closed by the server, ...).
    errors: AtomicU64,
    /// The first failure.
    first_error: Mutex<Option<String>>,
    /// Set to end the storm.
    stop: AtomicBool,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy)]
struct Counts {
    sessions: u64,
    readies: u64,
    errors: u64,
}

/// The storm clients, on their threads.
struct Storm {
    counters: Arc<Counters>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Storm {
    /// Starts `args.subscribers` clients on `args.threads` threads.
    fn start(args: &StormArgs, prefix: &str) -> anyhow::Result<Storm> {
        let counters = Arc::new(Counters::default());
        let threads = args.threads.clamp(1, args.subscribers.max(1));
        let seed = os_seed();
        let path = format!("/wss/{prefix}");
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .context("starting a tokio runtime")?;
            let clients: Vec<usize> = (t..args.subscribers).step_by(threads).collect();
            let counters = counters.clone();
            let addr = args.addr.clone();
            let path = path.clone();
            let (frames, keys, clients_in_all) = (args.frames, args.keys, args.subscribers);
            let every = (args.storm_rate > 0)
                .then(|| Duration::from_secs_f64(1.0 / args.storm_rate as f64));
            let start = tokio::time::Instant::now();
            let timeout = Duration::from_millis(args.timeout_ms);
            let handle = std::thread::Builder::new()
                .name(format!("storm-{t}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    for index in clients {
                        let counters = counters.clone();
                        let addr = addr.clone();
                        let path = path.clone();
                        local.spawn_local(async move {
                            let mut rng =
                                Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                            let mut cycle = 0usize;
                            while !counters.stop.load(Ordering::Acquire) {
                                if let Some(every) = every {
                                    let slot = (cycle * clients_in_all + index) as f64;
                                    tokio::time::sleep_until(start + every.mul_f64(slot)).await;
                                }
                                let plan = Plan::of(index, cycle, frames, keys);
                                let session = tokio::time::timeout(
                                    timeout,
                                    storm_session(&addr, &path, &mut rng, plan),
                                );
                                match session.await {
                                    Ok(Ok(ready)) => {
                                        counters.sessions.fetch_add(1, Ordering::Relaxed);
                                        counters
                                            .readies
                                            .fetch_add(u64::from(ready), Ordering::Relaxed);
                                    }
                                    failed => {
                                        let why = match failed {
                                            Ok(Err(e)) => format!("{e:#}"),
                                            _ => format!("no progress in {timeout:?}"),
                                        };
                                        counters.errors.fetch_add(1, Ordering::Relaxed);
                                        counters
                                            .first_error
                                            .lock()
                                            .unwrap_or_else(PoisonError::into_inner)
                                            .get_or_insert(why);
                                        // Do not spin on a refusing server.
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                }
                                cycle += 1;
                            }
                        });
                    }
                    runtime.block_on(local);
                })
                .context("starting a storm thread")?;
            handles.push(handle);
        }
        Ok(Storm {
            counters,
            threads: handles,
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            sessions: self.counters.sessions.load(Ordering::Relaxed),
            readies: self.counters.readies.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
        }
    }

    /// Waits until the storm has made `sessions` sessions.
    fn ramp_up(&self, sessions: u64, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let c = self.counts();
            if c.sessions >= sessions {
                eprintln!(
                    "storm: {} sessions in {:.2}s before the writes ({} errors)",
                    c.sessions,
                    started.elapsed().as_secs_f64(),
                    c.errors
                );
                return Ok(());
            }
            if started.elapsed() > timeout {
                let first = self
                    .counters
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                bail!(
                    "the storm made {} of {sessions} sessions in {timeout:?} ({} errors; first: {})",
                    c.sessions,
                    c.errors,
                    first.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients (each ends after its current session); returns the
    /// first error any of them met.
    fn stop(self, timeout: Duration) -> Option<String> {
        self.counters.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        for handle in self.threads {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        self.counters
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What one storm session does before dropping its connection.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Drops right after the upgrade.
    AtOnce,
    /// Drops after this many frames (within the snapshot).
    Frames(usize),
    /// Reads to `ready`, then up to this many frames more (waiting at most
    /// a moment for them).
    Ready(usize),
}

impl Plan {
    /// Client `index`'s plan for its session number `cycle`.
    fn of(index: usize, cycle: usize, frames: usize, keys: usize) -> Plan {
        match (index + cycle) % 3 {
            0 => Plan::AtOnce,
            1 => Plan::Frames(1 + (index + cycle) % keys.max(1)),
            _ => Plan::Ready(cycle % (frames + 1)),
        }
    }
}

/// How long a `Plan::Ready` session waits for frames after `ready`.
const LINGER: Duration = Duration::from_millis(50);

/// One storm session: connect, upgrade, read as planned, drop. True if it
/// reached `ready`.
async fn storm_session(addr: &str, path: &str, rng: &mut Rng, plan: Plan) -> anyhow::Result<bool> {
    let mut conn = Conn::connect(addr).await?;
    handshake(&mut conn, addr, path, rng)
        .await
        .with_context(|| format!("upgrading {path}"))?;
    let mut decoder = WsDecoder::new(Rng::new(rng.next_u64()));
    let (mut left, mut ready) = match plan {
        Plan::AtOnce => return Ok(false),
        Plan::Frames(n) => (n, false),
        Plan::Ready(_) => (usize::MAX, false),
    };
    let mut linger_until = None;
    loop {
        while let Some((frame, used)) = decoder.decode(conn.data())? {
            match frame {
                Frame::Data(payload) => {
                    if !ready && decoder.is_ready(payload)? {
                        ready = true;
                        match plan {
                            Plan::Ready(more) => {
                                left = more;
                                linger_until = Some(tokio::time::Instant::now() + LINGER);
                            }
                            // The snapshot was shorter than planned.
                            _ => return Ok(true),
                        }
                    } else {
                        left = left.saturating_sub(1);
                    }
                    if left == 0 {
                        return Ok(ready);
                    }
                }
                Frame::Ping(payload) => {
                    let pong = decoder.pong(payload);
                    conn.answer_ping(used, &pong).await?;
                    continue;
                }
                Frame::Close(why) => return Err(closed(why)),
                Frame::Other => {}
            }
            conn.consume(used);
        }
        match linger_until {
            Some(until) => match tokio::time::timeout_at(until, conn.fill()).await {
                Ok(filled) => filled?,
                Err(_) => return Ok(ready), // nothing more came: done
            },
            None => conn.fill().await?,
        }
    }
}
