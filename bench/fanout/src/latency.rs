//! `latency`: how long one write takes to reach one subscriber on one node,
//! at a steady rate, for Spread (a WebSocket subscriber on `/wss/<prefix>`,
//! writes with `PUT /raw/<prefix>/x`), for Redis (`SUBSCRIBE <prefix>`,
//! writes with `PUBLISH <prefix>`) and for NATS (`SUB <prefix>`, writes
//! with `PUB <prefix>`; with `--sub-addr`, across a cluster's routes).
//!
//! One subscriber connection, read by its own thread (a single-threaded
//! tokio runtime waiting in `epoll_wait`, no polling: every frame wakes it,
//! as it would wake any real subscriber), with the crate's raw-socket
//! decoders ([`WsDecoder`], [`RespDecoder`]). One writer connection on the
//! main thread: write `i` is due `i / rate` seconds after the start (an
//! open-loop schedule: the writer does not wait for deliveries), and is sent
//! once it is due and the write before it has been answered (one write in
//! flight; a write sent late is counted in `late_writes`).
//!
//! Each value carries a tag of this run and the write's number
//! (`lat-<pid>-<i>-vvv…`); the subscriber takes the time as soon as a read
//! returns and reports which write each frame held. Per measured write:
//! the delivery latency, from just before the write is sent to the read
//! that brought it to the subscriber, and the ack latency, from the same
//! moment to the answer of the write (HTTP status / `PUBLISH` reply).
//!
//! `fdatasync DIR`: what one `fdatasync` costs on DIR's filesystem (a small
//! append then `fdatasync`, at a steady pace), the unit of the `flush`
//! durability budget: "p50 of Spread `flush` ≤ Redis + one fdatasync".

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use memchr::memmem::Finder;
use tokio::io::AsyncWriteExt as _;

use crate::recv::{closed, Conn, Decoder, Frame};
use crate::redis::{encode_command, Publisher, RespDecoder};
use crate::spread::Put;
use crate::stats::{ms, percentile};
use crate::ws::{handshake, os_seed, Rng, WsDecoder};

/// The system under test.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum System {
    /// Spread: WebSocket /wss/<prefix>, PUT /raw/<prefix>/x.
    Spread,
    /// Redis: SUBSCRIBE <prefix>, PUBLISH <prefix>.
    Redis,
    /// NATS: SUB <prefix>, PUB <prefix> (then PING, waiting for PONG).
    Nats,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Spread => "spread",
            System::Redis => "redis",
            System::Nats => "nats",
        }
    }
}

/// `latency` subcommand.
#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Which server.
    #[arg(value_enum)]
    pub system: System,
    /// Server address, HOST:PORT.
    pub addr: String,
    /// Subscribe at this address instead (HOST:PORT; Spread: another node of
    /// the cluster, to measure propagation between nodes).
    #[arg(long)]
    pub sub_addr: Option<String>,
    /// Spread: the subscription prefix (writes go to <prefix>/x); Redis:
    /// the channel.
    #[arg(long, default_value = "lat")]
    pub prefix: String,
    /// Measured writes.
    #[arg(long, default_value_t = 10_000)]
    pub writes: usize,
    /// Writes before the measured ones, at the same rate (not counted).
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Writes per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Bytes of each value (at least the tag, ~24 bytes).
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Give up connecting, or on a write's answer, after this many
    /// milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// After the last write, wait this long at most for missing deliveries.
    #[arg(long, default_value_t = 3_000)]
    pub drain_ms: u64,
}

/// `fdatasync` subcommand.
#[derive(Args, Debug)]
pub struct FsyncArgs {
    /// A directory on the filesystem to measure (a probe file is made and
    /// removed in it).
    pub dir: PathBuf,
    /// Measured fdatasyncs of each kind.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Bytes written before each fdatasync.
    #[arg(long, default_value_t = 128)]
    pub bytes: usize,
    /// Pause between two, microseconds (as between the writes of `latency`).
    #[arg(long, default_value_t = 1000)]
    pub gap_us: u64,
}

/// What the subscriber thread tells the writer.
enum Event {
    /// The subscription is live.
    Ready,
    /// A frame holding write `seq` was read at this moment.
    Arrival(usize, Instant),
    /// The subscriber failed.
    Failed(String),
}

/// The write connection.
enum Writer {
    /// The client, and the path written.
    Spread(Put, String),
    Redis(Publisher, String),
    Nats(crate::nats::Publisher, String),
}

impl Writer {
    /// Sends one value and waits for its answer (2xx / `:1`).
    fn send(&mut self, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Writer::Spread(put, path) => put.send(path, value),
            Writer::Redis(publisher, channel) => {
                let reply = publisher
                    .call(&[b"PUBLISH", channel.as_bytes(), value])
                    .context("PUBLISH")?;
                if reply != ":1" {
                    bail!("PUBLISH answered {reply:?}, expected :1 (one subscriber)");
                }
                Ok(())
            }
            Writer::Nats(publisher, subject) => publisher.publish(subject, value),
        }
    }
}

/// Runs the writes; returns the result as one JSON object.
pub fn run(args: &LatencyArgs) -> anyhow::Result<serde_json::Value> {
    let prefix = args.prefix.trim_matches('/').to_string();
    if prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    if args.writes == 0 || args.rate == 0 {
        bail!("--writes and --rate must be at least 1");
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let tag = format!("lat-{}-", std::process::id()).into_bytes();
    let total = args.warmup + args.writes;

    // The subscriber, on its own thread.
    let (tx, events) = mpsc::channel();
    {
        let addr = args.sub_addr.clone().unwrap_or_else(|| args.addr.clone());
        let (system, prefix, tag) = (args.system, prefix.clone(), tag.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting a tokio runtime")?;
        std::thread::Builder::new()
            .name("subscriber".into())
            .spawn(move || {
                runtime.block_on(async {
                    if let Err(e) = subscribe(system, &addr, &prefix, &tag, &tx).await {
                        let _ = tx.send(Event::Failed(format!("{e:#}")));
                    }
                });
            })
            .context("starting the subscriber thread")?;
    }
    match events.recv_timeout(timeout) {
        Ok(Event::Ready) => {}
        Ok(Event::Failed(why)) => bail!("the subscriber failed: {why}"),
        Ok(Event::Arrival(..)) => bail!("a delivery before any write"),
        Err(_) => bail!("the subscriber was not ready after {timeout:?}"),
    }

    let mut writer = match args.system {
        System::Spread => Writer::Spread(Put::new(&args.addr, timeout), format!("/raw/{prefix}/x")),
        System::Redis => Writer::Redis(Publisher::open(&args.addr, timeout)?, prefix.clone()),
        System::Nats => Writer::Nats(
            crate::nats::Publisher::open(&args.addr, timeout)?,
            prefix.clone(),
        ),
    };
    eprintln!(
        "latency: {}: {} writes (+{} warm-up) at {}/s, {}-byte values, one subscriber",
        args.system.name(),
        args.writes,
        args.warmup,
        args.rate,
        args.value_bytes
    );

    let mut sent = Vec::with_capacity(total);
    let mut acked = Vec::with_capacity(total);
    let mut arrived: Vec<Option<Instant>> = vec![None; total];
    let mut duplicates = 0usize;
    let mut late_writes = 0usize;
    let mut take = |event: Event, arrived: &mut Vec<Option<Instant>>| -> anyhow::Result<()> {
        match event {
            Event::Arrival(seq, at) => match arrived.get_mut(seq) {
                Some(slot @ None) => *slot = Some(at),
                Some(Some(_)) => duplicates += 1,
                None => bail!("a delivery of write {seq}, which was never made"),
            },
            Event::Failed(why) => bail!("the subscriber failed: {why}"),
            Event::Ready => {}
        }
        Ok(())
    };

    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now() + Duration::from_millis(10);
    let mut value = Vec::with_capacity(args.value_bytes.max(64));
    for i in 0..total {
        value.clear();
        value.extend_from_slice(&tag);
        write!(value, "{i}-").context("formatting a value")?;
        value.resize(value.len().max(args.value_bytes), b'v');
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > interval {
            late_writes += usize::from(i >= args.warmup);
        }
        let t0 = Instant::now();
        writer.send(&value).with_context(|| format!("write {i}"))?;
        let t1 = Instant::now();
        sent.push(t0);
        acked.push(t1);
        // Off the clock: what the subscriber reported so far (no syscall).
        while let Ok(event) = events.try_recv() {
            take(event, &mut arrived)?;
        }
    }
    let finished = Instant::now();
    let drain_until = finished + Duration::from_millis(args.drain_ms);
    while arrived[args.warmup..].iter().any(Option::is_none) {
        let left = drain_until.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => take(event, &mut arrived)?,
            Err(_) => break,
        }
    }

    let mut delivery = Vec::with_capacity(args.writes);
    let mut ack = Vec::with_capacity(args.writes);
    let mut after_ack_us = Vec::with_capacity(args.writes);
    let mut before_ack = 0usize;
    for i in args.warmup..total {
        ack.push(acked[i] - sent[i]);
        if let Some(at) = arrived[i] {
            delivery.push(at.saturating_duration_since(sent[i]));
            if at < acked[i] {
                before_ack += 1;
                after_ack_us.push(-((acked[i] - at).as_secs_f64() * 1e6));
            } else {
                after_ack_us.push((at - acked[i]).as_secs_f64() * 1e6);
            }
        }
    }
    let delivered = delivery.len();
    if delivered == 0 {
        bail!(
            "the subscriber got none of the {} measured writes",
            args.writes
        );
    }
    delivery.sort_unstable();
    ack.sort_unstable();
    after_ack_us.sort_unstable_by(f64::total_cmp);
    let mean = delivery.iter().sum::<Duration>() / delivered as u32;
    let secs = (acked[total - 1] - sent[args.warmup]).as_secs_f64();
    let missed = args.writes - delivered;
    eprintln!(
        "latency: {}: delivery p50 {} / p99 {} / max {} ms; ack p50 {} ms; {missed} missed",
        args.system.name(),
        ms(percentile(&delivery, 50.0)),
        ms(percentile(&delivery, 99.0)),
        ms(delivery.last().copied()),
        ms(percentile(&ack, 50.0)),
    );
    Ok(serde_json::json!({
        "system": args.system.name(),
        "writes": args.writes,
        "warmup": args.warmup,
        "rate": args.rate,
        "value_bytes": value.len(),
        "delivered": delivered,
        "missed": missed,
        "duplicates": duplicates,
        "p50_ms": ms(percentile(&delivery, 50.0)),
        "p99_ms": ms(percentile(&delivery, 99.0)),
        "p999_ms": ms(percentile(&delivery, 99.9)),
        "max_ms": ms(delivery.last().copied()),
        "min_ms": ms(delivery.first().copied()),
        "mean_ms": ms(Some(mean)),
        "ack_p50_ms": ms(percentile(&ack, 50.0)),
        "ack_p99_ms": ms(percentile(&ack, 99.0)),
        "ack_p999_ms": ms(percentile(&ack, 99.9)),
        "ack_max_ms": ms(ack.last().copied()),
        // Delivery minus ack (negative: the subscriber had it first).
        "after_ack_p50_ms": signed_ms(signed_percentile(&after_ack_us, 50.0)),
        "after_ack_p99_ms": signed_ms(signed_percentile(&after_ack_us, 99.0)),
        "before_ack": ((before_ack as f64 / delivered as f64) * 1000.0).round() / 1000.0,
        "late_writes": late_writes,
        "secs": (secs * 1000.0).round() / 1000.0,
        "writes_per_s": ((args.writes as f64 / secs.max(1e-9)) * 10.0).round() / 10.0,
    }))
}

/// Nearest-rank percentile of sorted microseconds.
fn signed_percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Microseconds as milliseconds with three decimals, or `null`.
fn signed_ms(us: Option<f64>) -> serde_json::Value {
    us.map_or(serde_json::Value::Null, |us| (us.round() / 1e3).into())
}

/// Connects the subscriber and reads its frames until it fails.
async fn subscribe(
    system: System,
    addr: &str,
    prefix: &str,
    tag: &[u8],
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    match system {
        System::Spread => {
            let mut rng = Rng::new(os_seed());
            let path = format!("/wss/{prefix}");
            handshake(&mut conn, addr, &path, &mut rng)
                .await
                .with_context(|| format!("upgrading {path}"))?;
            listen(conn, WsDecoder::new(rng), tag, tx).await
        }
        System::Redis => {
            conn.stream
                .write_all(&encode_command(&[b"SUBSCRIBE", prefix.as_bytes()]))
                .await
                .context("sending SUBSCRIBE")?;
            listen(conn, RespDecoder, tag, tx).await
        }
        System::Nats => {
            conn.stream
                .write_all(&crate::nats::subscribe_command(prefix))
                .await
                .context("sending SUB")?;
            listen(conn, crate::nats::NatsDecoder, tag, tx).await
        }
    }
}

/// The subscriber's read loop (as [`crate::recv::read_loop`], but each data
/// frame after `ready` is reported with the write it holds and the moment
/// the read that brought it returned).
async fn listen<D: Decoder>(
    mut conn: Conn,
    mut decoder: D,
    tag: &[u8],
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let finder = Finder::new(tag);
    let mut ready = false;
    let mut read_at = Instant::now();
    loop {
        while let Some((frame, used)) = decoder.decode(conn.data())? {
            match frame {
                Frame::Data(payload) => {
                    if ready {
                        if let Some(seq) = sequence_in(&finder, tag.len(), payload) {
                            let _ = tx.send(Event::Arrival(seq, read_at));
                        }
                    } else if decoder.is_ready(payload)? {
                        ready = true;
                        let _ = tx.send(Event::Ready);
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
        conn.fill().await?;
        read_at = Instant::now();
    }
}

/// The write number after the tag in `payload`, if it holds one.
fn sequence_in(finder: &Finder<'_>, tag_len: usize, payload: &[u8]) -> Option<usize> {
    let at = finder.find(payload)? + tag_len;
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Measures `fdatasync` on `args.dir`'s filesystem: appends of `args.bytes`
/// (the file grows, as a log does: the size is part of what is synced) and
/// overwrites in place, each followed by `fdatasync`, `args.gap_us` apart.
pub fn fdatasync(args: &FsyncArgs) -> anyhow::Result<serde_json::Value> {
    if args.count == 0 || args.bytes == 0 {
        bail!("--count and --bytes must be at least 1");
    }
    let path = args
        .dir
        .join(format!(".fdatasync-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = (|| -> anyhow::Result<serde_json::Value> {
        let block = vec![b'f'; args.bytes];
        let gap = Duration::from_micros(args.gap_us);
        let warmup = 20.min(args.count);
        let mut append = Vec::with_capacity(args.count);
        for i in 0..warmup + args.count {
            std::thread::sleep(gap);
            let t0 = Instant::now();
            file.write_all(&block).context("appending")?;
            file.sync_data().context("fdatasync")?;
            if i >= warmup {
                append.push(t0.elapsed());
            }
        }
        let mut overwrite = Vec::with_capacity(args.count);
        for i in 0..warmup + args.count {
            std::thread::sleep(gap);
            let t0 = Instant::now();
            file.write_all_at(&block, 0).context("overwriting")?;
            file.sync_data().context("fdatasync")?;
            if i >= warmup {
                overwrite.push(t0.elapsed());
            }
        }
        append.sort_unstable();
        overwrite.sort_unstable();
        Ok(serde_json::json!({
            "dir": args.dir.display().to_string(),
            "count": args.count,
            "bytes": args.bytes,
            "gap_us": args.gap_us,
            "p50_ms": ms(percentile(&append, 50.0)),
            "p99_ms": ms(percentile(&append, 99.0)),
            "max_ms": ms(append.last().copied()),
            "overwrite_p50_ms": ms(percentile(&overwrite, 50.0)),
            "overwrite_p99_ms": ms(percentile(&overwrite, 99.0)),
            "overwrite_max_ms": ms(overwrite.last().copied()),
        }))
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_write_number() {
        let finder = Finder::new(b"lat-7-");
        assert_eq!(
            sequence_in(&finder, 6, b"{\"value\":\"lat-7-1234-vvv\"}"),
            Some(1234)
        );
        assert_eq!(
            sequence_in(&finder, 6, b"$13\r\nlat-7-0-vvvvv\r\n"),
            Some(0)
        );
        assert_eq!(sequence_in(&finder, 6, b"lat-8-12-"), None);
        assert_eq!(sequence_in(&finder, 6, b"lat-7-x"), None);
    }

    #[test]
    fn signed_percentiles() {
        let v = [-3.0, -1.0, 2.0, 5.0];
        assert_eq!(signed_percentile(&v, 50.0), Some(-1.0));
        assert_eq!(signed_percentile(&v, 99.0), Some(5.0));
        assert_eq!(signed_ms(Some(-1234.4)), serde_json::Value::from(-1.234));
    }
}
