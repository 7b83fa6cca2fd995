//! The floor: what any server could at best do on this machine with this
//! client. A trivial sender (`floor-server`, this same binary started as a
//! child process) accepts N TCP connections on 127.0.0.1 (TCP_NODELAY) and,
//! for each write, sends one WebSocket text frame of `--message-bytes`
//! bytes holding the value to every socket, one `write` each, from ONE
//! thread: the kernel's loopback TCP cost per core (Redis is
//! single-threaded; Spread has 2 HTTP workers). The subscribers are read by
//! the same machinery as Spread's (the WebSocket frame decoder in
//! [`crate::ws`], minus the HTTP upgrade), so the receiving cost is the same.
//!
//! The sender is a separate process, not a thread of this one, because N
//! socket pairs in one process need 2N file descriptors, and this machine's
//! hard limit is 20 000: with two processes each needs N plus a few, as with
//! a real server. The driver tells it what to send through its stdin and it
//! answers `sent <count> <micros>` (how long its write loop took) on stdout.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::recv::{read_loop, Conn, Receivers};
use crate::stats::Summary;
use crate::ws::{os_seed, server_text_frame, Rng, WsDecoder};
use crate::Common;

/// Default size of one update frame on the wire, WebSocket header
/// included: what Spread sends for the benchmark's ~85-byte value. Measured
/// on Spread's `/wss` (JSON): a 297-byte `update` event (type, cursor, path,
/// version, time, node, seq, deleted, content_type, value) behind a 4-byte
/// header, 301 bytes. (Redis's `message` push for the same value is ~120.)
pub const DEFAULT_MESSAGE_BYTES: usize = 300;

/// Pending connections the sender's listener holds (Spread's actix
/// listener takes 2048, Redis 511).
const BACKLOG: u32 = 2048;

/// The `ready` frame the sender puts on each new connection.
const READY: &[u8] = b"{\"type\":\"ready\",\"path\":\"floor\"}";

/// Starts the sender, connects the subscribers to it, then times
/// `common.repeats` writes.
pub fn run(message_bytes: usize, common: &Common) -> anyhow::Result<Summary> {
    let mut sender = Sender::spawn(message_bytes)?;
    let addr = sender.addr.clone();
    let seed = os_seed();
    let mut rx = Receivers::start(common.threads, common.subscribers, common.poll())?;
    crate::connect_all(&mut rx, common, |rx| {
        rx.open(|index, sub| {
            let addr = addr.clone();
            async move {
                let rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let conn = Conn::connect(&addr).await?;
                read_loop(conn, WsDecoder::new(rng), &sub).await
            }
        })
    })?;
    let mut send_times = Vec::with_capacity(common.warmup + common.repeats);
    let expected = common.subscribers;
    let mut summary = crate::measure(&mut rx, common, |value| {
        let (sent, took) = sender.send(value)?;
        if sent != expected {
            bail!("the sender reached {sent} subscribers, expected {expected}");
        }
        send_times.push(took);
        Ok(())
    })?;
    send_times.drain(..common.warmup.min(send_times.len()));
    send_times.sort_unstable();
    summary.extra.insert(
        "send_loop_p50_ms".into(),
        crate::stats::ms(crate::stats::percentile(&send_times, 50.0)),
    );
    summary
        .extra
        .insert("message_bytes".into(), message_bytes.into());
    sender.stop();
    Ok(summary)
}

/// The sender child process.
struct Sender {
    /// The process.
    child: Child,
    /// Values to send, one per line.
    stdin: Option<ChildStdin>,
    /// `listening ADDR`, then `sent N MICROS` per value.
    stdout: BufReader<ChildStdout>,
    /// Where it listens.
    addr: String,
}

impl Sender {
    /// Starts `<this binary> floor-server` and reads its address.
    fn spawn(message_bytes: usize) -> anyhow::Result<Sender> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut child = Command::new(exe)
            .args([
                "floor-server",
                "--message-bytes",
                &message_bytes.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the floor sender")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the sender's stdout")?;
        let mut sender = Sender {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            addr: String::new(),
        };
        let line = sender.line()?;
        match line.strip_prefix("listening ") {
            Some(addr) => sender.addr = addr.to_string(),
            None => bail!("the floor sender said {line:?}"),
        }
        Ok(sender)
    }

    /// One line from the sender.
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self
            .stdout
            .read_line(&mut line)
            .context("reading from the floor sender")?
            == 0
        {
            bail!("the floor sender exited");
        }
        Ok(line.trim_end().to_string())
    }

    /// Has `value` sent to every connection; returns how many it reached
    /// and how long its write loop took.
    fn send(&mut self, value: &[u8]) -> anyhow::Result<(usize, Duration)> {
        let stdin = self.stdin.as_mut().context("the sender is stopped")?;
        let mut line = value.to_vec();
        line.push(b'\n');
        stdin
            .write_all(&line)
            .context("writing to the floor sender")?;
        stdin.flush().context("writing to the floor sender")?;
        let answer = self.line()?;
        let parsed = answer.strip_prefix("sent ").and_then(|rest| {
            let (n, us) = rest.split_once(' ')?;
            Some((n.parse().ok()?, Duration::from_micros(us.parse().ok()?)))
        });
        parsed.with_context(|| format!("the floor sender said {answer:?}"))
    }

    /// Closes its stdin (it exits) and waits for it.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The update frame for `value`, padded to `total` bytes on the wire
/// (WebSocket header included) when it is shorter. (128 and 129 cannot be
/// made: they become 130, a 126-byte payload behind a 4-byte header.)
pub fn update_frame(value: &[u8], total: usize) -> Vec<u8> {
    let head: &[u8] = b"{\"type\":\"update\",\"path\":\"fan/x\",\"seq\":1,\"pad\":\"";
    let tail: &[u8] = b"\",\"value\":\"";
    let mut payload = Vec::with_capacity(total);
    payload.extend_from_slice(head);
    let bare = head.len() + tail.len() + value.len() + 2;
    let payload_len = if total < 128 {
        total.saturating_sub(2)
    } else {
        (total - 4).max(126)
    };
    let pad = payload_len.saturating_sub(bare);
    payload.resize(head.len() + pad, b'p');
    payload.extend_from_slice(tail);
    payload.extend_from_slice(value);
    payload.extend_from_slice(b"\"}");
    server_text_frame(&payload)
}

/// `floor-server`: the sender side of [`run`] (runs in the child process).
pub fn serve(message_bytes: usize) -> anyhow::Result<()> {
    let listener = listen(BACKLOG)?;
    let addr = listener.local_addr().context("the listening address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    let subscribers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let accepted = subscribers.clone();
    std::thread::Builder::new()
        .name("floor-accept".into())
        .spawn(move || accept(&listener, &accepted))
        .context("starting the accept thread")?;
    for line in std::io::stdin().lock().lines() {
        let value = line.context("reading stdin")?;
        let frame = update_frame(value.as_bytes(), message_bytes);
        let subscribers = subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let mut sent = 0;
        for mut stream in subscribers.iter() {
            if stream.write_all(&frame).is_ok() {
                sent += 1;
            }
        }
        let took = started.elapsed();
        drop(subscribers);
        let mut out = std::io::stdout().lock();
        writeln!(out, "sent {sent} {}", took.as_micros()).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    Ok(())
}

/// A blocking listener on 127.0.0.1 (a free port) with room for `backlog`
/// pending connections (std's `bind` allows 128, fewer than a connect batch:
/// the rest would wait for a SYN retry, a second later).
fn listen(backlog: u32) -> anyhow::Result<TcpListener> {
    // tokio's socket builder sets the backlog; it needs a runtime only to
    // register the listener, which `into_std` undoes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a tokio runtime")?;
    let _entered = runtime.enter();
    let socket = tokio::net::TcpSocket::new_v4().context("a socket")?;
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .context("binding 127.0.0.1:0")?;
    let listener = socket
        .listen(backlog)
        .context("listening")?
        .into_std()
        .context("a std listener")?;
    listener
        .set_nonblocking(false)
        .context("a blocking listener")?;
    Ok(listener)
}

/// Accepts connections forever: each gets the `ready` frame and joins `into`.
fn accept(listener: &TcpListener, into: &Mutex<Vec<TcpStream>>) {
    let ready = server_text_frame(READY);
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("floor-server: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(e) = stream
            .set_nodelay(true)
            .and_then(|()| stream.write_all(&ready))
        {
            eprintln!("floor-server: a new connection: {e}");
            continue;
        }
        into.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recv::{Decoder as _, Frame};

    #[test]
    fn frames_have_the_asked_size() {
        let value = b"fanout-1-2-vvvv";
        assert_eq!(update_frame(value, 128).len(), 130);
        for total in [0, 60, 127, 130, 240, 1000] {
            let frame = update_frame(value, total);
            let minimum = update_frame(value, 0).len();
            assert_eq!(frame.len(), total.max(minimum), "asked {total}");
            let mut d = WsDecoder::new(Rng::new(0));
            let Some((Frame::Data(p), used)) = d.decode(&frame).expect("valid") else {
                panic!("a data frame");
            };
            assert_eq!(used, frame.len());
            assert!(crate::recv::contains(p, value));
            assert!(!d.is_ready(p).expect("not an error"));
        }
        let mut d = WsDecoder::new(Rng::new(0));
        let ready = server_text_frame(READY);
        let Some((Frame::Data(p), _)) = d.decode(&ready).expect("valid") else {
            panic!("a data frame");
        };
        assert!(d.is_ready(p).expect("ready"));
    }
}
