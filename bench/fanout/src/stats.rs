//! State shared by the subscriber tasks and the driver, and the summary of
//! a run.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Notify;

/// What the subscriber tasks report to the driver (single-threaded: shared
/// through `Rc`).
pub struct Fanout {
    /// Subscribers expected per write.
    expected: usize,
    /// Subscribers that are ready (initial snapshot or subscribe reply seen).
    ready: Cell<usize>,
    /// Wakes the driver when `ready` moves or a subscriber fails.
    ready_changed: Notify,
    /// The value of the write in progress, if any.
    marker: RefCell<Option<Vec<u8>>>,
    /// When the write in progress started.
    started: Cell<Option<Instant>>,
    /// Time from `started` to each delivery of the write in progress.
    arrivals: RefCell<Vec<Duration>>,
    /// Wakes the driver when every subscriber has the write in progress.
    round_done: Notify,
    /// The first subscriber failure.
    failure: RefCell<Option<String>>,
    /// How long connecting every subscriber took.
    connect: Cell<Duration>,
}

impl Fanout {
    /// State for `expected` subscribers.
    pub fn new(expected: usize) -> Fanout {
        Fanout {
            expected,
            ready: Cell::new(0),
            ready_changed: Notify::new(),
            marker: RefCell::new(None),
            started: Cell::new(None),
            arrivals: RefCell::new(Vec::with_capacity(expected)),
            round_done: Notify::new(),
            failure: RefCell::new(None),
            connect: Cell::new(Duration::ZERO),
        }
    }

    /// A subscriber is ready to receive writes.
    pub fn mark_ready(&self) {
        self.ready.set(self.ready.get() + 1);
        self.ready_changed.notify_one();
    }

    /// A subscriber failed; the run stops with this reason.
    pub fn fail(&self, reason: String) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(reason);
        }
        drop(failure);
        self.ready_changed.notify_one();
        self.round_done.notify_one();
    }

    fn failed(&self) -> anyhow::Result<()> {
        match &*self.failure.borrow() {
            Some(reason) => bail!("a subscriber failed: {reason}"),
            None => Ok(()),
        }
    }

    /// Waits until `count` subscribers are ready.
    pub async fn wait_ready(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.failed()?;
            if self.ready.get() >= count {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "only {} of {count} subscribers ready after {timeout:?}",
                    self.ready.get()
                );
            }
            let _ = actix_web::rt::time::timeout(left, self.ready_changed.notified()).await;
        }
    }

    /// Starts a write of `value`: deliveries are timed from now.
    pub fn begin(&self, value: Vec<u8>) {
        self.arrivals.borrow_mut().clear();
        *self.marker.borrow_mut() = Some(value);
        self.started.set(Some(Instant::now()));
    }

    /// A subscriber received `payload`: a delivery if it holds the value of
    /// the write in progress.
    pub fn observe(&self, payload: &[u8]) {
        let Some(started) = self.started.get() else {
            return;
        };
        let marker = self.marker.borrow();
        let Some(marker) = marker.as_deref() else {
            return;
        };
        if !contains(payload, marker) {
            return;
        }
        let elapsed = started.elapsed();
        let mut arrivals = self.arrivals.borrow_mut();
        arrivals.push(elapsed);
        if arrivals.len() == self.expected {
            self.round_done.notify_one();
        }
    }

    /// Waits until every subscriber has the write in progress; returns the
    /// delivery times and ends the write.
    pub async fn wait_round(&self, timeout: Duration) -> anyhow::Result<Vec<Duration>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.failed()?;
            if self.arrivals.borrow().len() >= self.expected {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "only {} of {} subscribers got the write within {timeout:?}",
                    self.arrivals.borrow().len(),
                    self.expected
                );
            }
            let _ = actix_web::rt::time::timeout(left, self.round_done.notified()).await;
        }
        *self.marker.borrow_mut() = None;
        self.started.set(None);
        Ok(std::mem::take(&mut *self.arrivals.borrow_mut()))
    }

    /// Records how long connecting every subscriber took.
    pub fn set_connect_time(&self, took: Duration) {
        self.connect.set(took);
    }

    /// How long connecting every subscriber took.
    pub fn connect_time(&self) -> Duration {
        self.connect.get()
    }
}

/// Does `haystack` contain `needle`?
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The delivery times of every measured write.
pub struct Summary {
    /// Subscribers per write.
    subscribers: usize,
    /// Per write: when the last subscriber had it.
    last: Vec<Duration>,
    /// Per write: when the first subscriber had it.
    first: Vec<Duration>,
    /// Every delivery of every write.
    all: Vec<Duration>,
    /// How long connecting every subscriber took.
    pub connect: Duration,
}

impl Summary {
    /// An empty summary for `subscribers` subscribers.
    pub fn new(subscribers: usize) -> Summary {
        Summary {
            subscribers,
            last: Vec::new(),
            first: Vec::new(),
            all: Vec::new(),
            connect: Duration::ZERO,
        }
    }

    /// Adds one write's delivery times.
    pub fn add(&mut self, arrivals: Vec<Duration>) {
        if let (Some(min), Some(max)) = (arrivals.iter().min(), arrivals.iter().max()) {
            self.first.push(*min);
            self.last.push(*max);
        }
        self.all.extend(arrivals);
    }

    /// `{"subscribers", "repeats", "p50_ms", "p99_ms", "max_ms", ...}`: the
    /// percentiles are over the per-write last-delivery times.
    pub fn to_json(&self) -> serde_json::Value {
        let mut last = self.last.clone();
        let mut first = self.first.clone();
        let mut all = self.all.clone();
        last.sort_unstable();
        first.sort_unstable();
        all.sort_unstable();
        serde_json::json!({
            "subscribers": self.subscribers,
            "repeats": self.last.len(),
            "p50_ms": ms(percentile(&last, 50.0)),
            "p99_ms": ms(percentile(&last, 99.0)),
            "max_ms": ms(last.last().copied()),
            "min_ms": ms(last.first().copied()),
            "first_p50_ms": ms(percentile(&first, 50.0)),
            "delivery_p50_ms": ms(percentile(&all, 50.0)),
            "connect_s": (self.connect.as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with three decimals, or `null`.
fn ms(d: Option<Duration>) -> serde_json::Value {
    match d {
        Some(d) => serde_json::Value::from((d.as_secs_f64() * 1e6).round() / 1e3),
        None => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 99.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn finds_the_marker() {
        assert!(contains(b"{\"value\":\"abc\"}", b"abc"));
        assert!(!contains(b"{\"value\":\"ab\"}", b"abc"));
        assert!(!contains(b"abc", b""));
    }
}
