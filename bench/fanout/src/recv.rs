//! The receiving side, identical for every system: a fixed number of
//! receiver threads, each running its own single-threaded tokio runtime,
//! and one read loop per subscriber over a raw [`TcpStream`].
//!
//! Subscribers are dealt to the threads round-robin. A read loop owns one
//! growable buffer (no allocation per message), cuts it into frames with
//! the system's [`Decoder`], and after the `ready` frame only searches each
//! data frame for the bytes of the write in progress (a precomputed
//! `memmem` finder): no JSON, no copies. Each thread collects its own
//! arrival times and hands them to the driver once all of its subscribers
//! have the write, so the threads share nothing on the hot path but one
//! atomic load per frame.
//!
//! The driver (the main thread, plain blocking code) talks to the threads
//! through [`Receivers`]: it opens subscribers, waits until they are ready,
//! starts a write with [`Receivers::begin`] and collects the arrival times
//! with [`Receivers::wait_round`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A subscriber's read buffer starts this big and doubles when one frame
/// does not fit.
const INITIAL_BUFFER: usize = 1024;
/// Largest frame a subscriber accepts (snapshots of big values).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Locks `m`, ignoring poisoning (a panicking thread ends the run anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The write in progress.
struct Round {
    /// Finds the written value in a frame.
    finder: Finder<'static>,
    /// When the write started.
    start: Instant,
}

/// What the receiver threads tell the driver.
enum Event {
    /// One more subscriber is ready.
    Ready,
    /// A subscriber failed; the run stops.
    Failed(String),
    /// Every subscriber of one thread has write `gen`: their delivery times.
    Arrivals {
        /// The write (see [`Receivers::begin`]).
        gen: u64,
        /// Time from the start of the write to each delivery.
        times: Vec<Duration>,
    },
}

/// State every thread reads.
struct Shared {
    /// Bumped by each [`Receivers::begin`]; a thread whose copy is older
    /// fetches `round`.
    gen: AtomicU64,
    /// The write in progress.
    round: Mutex<Option<Arc<Round>>>,
    /// To the driver.
    events: mpsc::Sender<Event>,
    /// A write is in progress: tickers poll instead of waiting (see [`tick`]).
    polling: AtomicBool,
    /// Wakes the tickers when `polling` turns on.
    poll_wake: tokio::sync::Notify,
}

/// One receiver thread's state, locked by its own tasks only (and by the
/// driver after a timeout).
struct Local {
    /// Subscribers dealt to this thread.
    expected: usize,
    /// The write `round` belongs to.
    gen: u64,
    /// This thread's copy of the write in progress.
    round: Option<Arc<Round>>,
    /// Deliveries of that write on this thread so far.
    arrivals: Vec<Duration>,
}

/// A subscriber's link to its thread and to the driver.
pub struct Sub {
    /// Shared with every thread.
    shared: Arc<Shared>,
    /// This thread's state.
    local: Arc<Mutex<Local>>,
}

impl Sub {
    /// This subscriber is ready to receive writes.
    pub fn mark_ready(&self) {
        let _ = self.shared.events.send(Event::Ready);
    }

    /// A data frame arrived: a delivery if it holds the value of the write
    /// in progress.
    pub fn observe(&self, payload: &[u8]) {
        let mut local = lock(&self.local);
        let gen = self.shared.gen.load(Ordering::Acquire);
        if gen != local.gen {
            local.gen = gen;
            local.round = lock(&self.shared.round).clone();
            local.arrivals.clear();
        }
        let Local {
            expected,
            round,
            arrivals,
            ..
        } = &mut *local;
        let Some(round) = round else {
            return;
        };
        if round.finder.find(payload).is_none() {
            return;
        }
        arrivals.push(round.start.elapsed());
        if arrivals.len() == *expected {
            let times = std::mem::replace(arrivals, Vec::with_capacity(*expected));
            let _ = self.shared.events.send(Event::Arrivals { gen, times });
        }
    }
}

/// A receiver thread as the driver sees it.
struct Worker {
    /// Spawns tasks on the thread's runtime.
    handle: tokio::runtime::Handle,
    /// The thread's state.
    local: Arc<Mutex<Local>>,
    /// Dropping it stops the thread's runtime.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The receiver threads, driven from the main thread.
pub struct Receivers {
    /// Shared with the threads.
    shared: Arc<Shared>,
    /// One per thread.
    workers: Vec<Worker>,
    /// From the threads.
    events: mpsc::Receiver<Event>,
    /// Subscribers opened so far.
    opened: usize,
    /// Subscribers ready so far.
    ready: usize,
    /// How long connecting every subscriber took (set by the driver).
    pub connect_time: Duration,
}

impl Receivers {
    /// Starts `threads` receiver threads (at most one per subscriber) for
    /// `subscribers` subscribers. With a non-zero `poll`, each thread polls
    /// its sockets every `poll` while a write is in progress (see [`tick`]).
    pub fn start(threads: usize, subscribers: usize, poll: Duration) -> anyhow::Result<Receivers> {
        let threads = threads.clamp(1, subscribers.max(1));
        let (tx, events) = mpsc::channel();
        let shared = Arc::new(Shared {
            gen: AtomicU64::new(0),
            round: Mutex::new(None),
            events: tx,
            polling: AtomicBool::new(false),
            poll_wake: tokio::sync::Notify::new(),
        });
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let expected = subscribers / threads + usize::from(i < subscribers % threads);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .context("starting a tokio runtime")?;
            let handle = runtime.handle().clone();
            if !poll.is_zero() {
                handle.spawn(tick(shared.clone(), poll));
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("recv-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .context("starting a receiver thread")?;
            workers.push(Worker {
                handle,
                local: Arc::new(Mutex::new(Local {
                    expected,
                    gen: 0,
                    round: None,
                    arrivals: Vec::with_capacity(expected),
                })),
                _stop: stop,
            });
        }
        Ok(Receivers {
            shared,
            workers,
            events,
            opened: 0,
            ready: 0,
            connect_time: Duration::ZERO,
        })
    }

    /// Receiver threads in use.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Opens subscriber number `opened` on the next thread: `task` gets its
    /// [`Sub`] and runs until it fails (its error ends the run).
    pub fn open<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(usize, Sub) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let index = self.opened;
        let worker = &self.workers[index % self.workers.len()];
        self.opened += 1;
        let sub = Sub {
            shared: self.shared.clone(),
            local: worker.local.clone(),
        };
        let events = self.shared.events.clone();
        let fut = task(index, sub);
        worker.handle.spawn(async move {
            if let Err(e) = fut.await {
                let _ = events.send(Event::Failed(format!("subscriber {index}: {e:#}")));
            }
        });
    }

    /// Waits until `count` subscribers are ready.
    pub fn wait_ready(&mut self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.ready < count {
            match self.next_event(deadline) {
                Some(Event::Ready) => self.ready += 1,
                Some(Event::Failed(reason)) => bail!("a subscriber failed: {reason}"),
                Some(Event::Arrivals { .. }) => {}
                None => bail!(
                    "only {} of {count} subscribers ready after {timeout:?}",
                    self.ready
                ),
            }
        }
        Ok(())
    }

    /// Starts a write of `value`: deliveries are timed from now. Returns
    /// the write's number for [`Receivers::wait_round`].
    pub fn begin(&self, value: &[u8]) -> u64 {
        self.shared.polling.store(true, Ordering::Release);
        self.shared.poll_wake.notify_waiters();
        let round = Arc::new(Round {
            finder: Finder::new(value).into_owned(),
            start: Instant::now(),
        });
        *lock(&self.shared.round) = Some(round);
        self.shared.gen.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Waits until every subscriber has write `gen`; returns the delivery
    /// times (of every thread).
    pub fn wait_round(&mut self, gen: u64, timeout: Duration) -> anyhow::Result<Vec<Duration>> {
        let result = self.collect_round(gen, timeout);
        self.shared.polling.store(false, Ordering::Release);
        result
    }

    /// The work of [`Receivers::wait_round`].
    fn collect_round(&mut self, gen: u64, timeout: Duration) -> anyhow::Result<Vec<Duration>> {
        let deadline = Instant::now() + timeout;
        let mut done = 0;
        let mut all = Vec::with_capacity(self.opened);
        while done < self.workers.len() {
            match self.next_event(deadline) {
                Some(Event::Arrivals { gen: g, times }) if g == gen => {
                    all.extend(times);
                    done += 1;
                }
                Some(Event::Arrivals { .. } | Event::Ready) => {}
                Some(Event::Failed(reason)) => bail!("a subscriber failed: {reason}"),
                None => {
                    let pending: usize = self
                        .workers
                        .iter()
                        .map(|w| {
                            let local = lock(&w.local);
                            let have = if local.gen == gen {
                                local.arrivals.len()
                            } else {
                                0
                            };
                            local.expected - have
                        })
                        .sum();
                    bail!(
                        "{pending} of {} subscribers had not got the write after {timeout:?}",
                        self.opened
                    );
                }
            }
        }
        Ok(all)
    }

    /// The next event, or `None` once `deadline` has passed.
    fn next_event(&self, deadline: Instant) -> Option<Event> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.events.recv_timeout(left).ok()
    }
}

/// A receiver thread's ticker. While a write is in progress it keeps the
/// thread out of `epoll_wait`: it sleeps `every` (a plain `nanosleep`,
/// blocking the runtime), then yields, which makes the runtime poll its
/// sockets without waiting and run the read loops of those that are
/// readable. A thread asleep in `epoll_wait` must be woken for every frame
/// that arrives, and on this VM the sender pays for that wake-up (an
/// inter-processor interrupt, i.e. a VM exit) inside its `write`; with the
/// ticker nobody is waiting, so the sender's `write` only queues the bytes.
/// Deliveries are seen at most `every` late. Between writes (connecting,
/// idle) the ticker sleeps and the thread waits in `epoll_wait` as usual.
async fn tick(shared: Arc<Shared>, every: Duration) {
    loop {
        let mut woken = std::pin::pin!(shared.poll_wake.notified());
        woken.as_mut().enable();
        if shared.polling.load(Ordering::Acquire) {
            std::thread::sleep(every);
            tokio::task::yield_now().await;
        } else {
            woken.await;
        }
    }
}

/// A subscriber's connection: the socket and its read buffer.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Read buffer; `buf[start..end]` is read but not yet consumed.
    buf: Vec<u8>,
    /// First unconsumed byte.
    start: usize,
    /// End of the bytes read.
    end: usize,
}

impl Conn {
    /// Connects to `addr` (no Nagle delay).
    pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Conn {
            stream,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
        })
    }

    /// The bytes read and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` bytes of [`Conn::data`].
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Consumes a ping frame of `used` bytes and sends `pong`, its answer.
    pub async fn answer_ping(&mut self, used: usize, pong: &[u8]) -> anyhow::Result<()> {
        self.consume(used);
        self.stream
            .write_all(pong)
            .await
            .context("answering a ping")
    }

    /// Reads more bytes (moving the unconsumed ones to the front, and
    /// growing the buffer when they fill it). Fails at end of stream.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() >= MAX_FRAME_BYTES + 16 {
                bail!("a frame larger than {MAX_FRAME_BYTES} bytes");
            } else {
                let len = (self.buf.len() * 2).min(MAX_FRAME_BYTES + 16);
                self.buf.resize(len, 0);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .context("reading")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.end += n;
        Ok(())
    }
}

/// One frame cut from a subscriber's stream.
pub enum Frame<'a> {
    /// A message (or a piece of one) that may hold the written value.
    Data(&'a [u8]),
    /// A ping to answer.
    Ping(&'a [u8]),
    /// The server is closing the connection (the payload says why).
    Close(&'a [u8]),
    /// Anything to skip.
    Other,
}

/// The error for a close frame whose payload is `why` (a status code, then
/// the reason).
pub fn closed(why: &[u8]) -> anyhow::Error {
    anyhow::anyhow!(
        "the server closed the session: {}",
        String::from_utf8_lossy(why.get(2..).unwrap_or_default())
    )
}

/// How a system's stream is cut into frames.
pub trait Decoder: Send + 'static {
    /// The whole frame at the start of `buf` and its length in bytes;
    /// `None` while it is incomplete.
    fn decode<'a>(&mut self, buf: &'a [u8]) -> anyhow::Result<Option<(Frame<'a>, usize)>>;

    /// Is this data frame the subscription's "ready" mark? An error report
    /// is an error.
    fn is_ready(&self, data: &[u8]) -> anyhow::Result<bool>;

    /// The bytes answering a ping with this payload.
    fn pong(&mut self, payload: &[u8]) -> Vec<u8>;
}

/// A subscriber's read loop: waits for the ready mark, then reports every
/// data frame to `sub` until the connection fails.
pub async fn read_loop<D: Decoder>(
    mut conn: Conn,
    mut decoder: D,
    sub: &Sub,
) -> anyhow::Result<()> {
    let mut ready = false;
    loop {
        while let Some((frame, used)) = decoder.decode(conn.data())? {
            match frame {
                Frame::Data(payload) => {
                    if ready {
                        sub.observe(payload);
                    } else if decoder.is_ready(payload)? {
                        ready = true;
                        sub.mark_ready();
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
    }
}

/// Does `haystack` contain `needle`? (Off the hot path.)
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deals_subscribers_round_robin() {
        let rx = Receivers::start(2, 5, Duration::ZERO).expect("threads");
        let expected: Vec<usize> = rx.workers.iter().map(|w| lock(&w.local).expected).collect();
        assert_eq!(expected, [3, 2]);
        assert_eq!(
            Receivers::start(4, 1, Duration::ZERO)
                .expect("threads")
                .threads(),
            1
        );
    }

    #[test]
    fn a_round_completes_per_thread() {
        let mut rx = Receivers::start(1, 2, Duration::from_micros(100)).expect("threads");
        let sub = Sub {
            shared: rx.shared.clone(),
            local: rx.workers[0].local.clone(),
        };
        sub.observe(b"before any write");
        let gen = rx.begin(b"v-1");
        sub.observe(b"{\"value\":\"v-0\"}");
        sub.observe(b"{\"value\":\"v-1\"}");
        sub.observe(b"{\"value\":\"v-1\"}");
        let times = rx.wait_round(gen, Duration::from_secs(1)).expect("a round");
        assert_eq!(times.len(), 2);
        let gen = rx.begin(b"v-2");
        sub.observe(b"v-2");
        let err = rx
            .wait_round(gen, Duration::from_millis(10))
            .expect_err("one missing");
        assert!(err.to_string().starts_with("1 of"), "{err}");
    }

    #[test]
    fn finds_the_marker() {
        assert!(contains(b"{\"value\":\"abc\"}", b"abc"));
        assert!(!contains(b"{\"value\":\"ab\"}", b"abc"));
    }
}
