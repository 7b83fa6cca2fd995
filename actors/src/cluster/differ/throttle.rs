//! The anti-entropy throttle: a token bucket over the bytes of events a
//! node's sessions send and answer with, so repairs never take more than
//! `--anti-entropy-mb-per-sec` of the links and of the peers' disks,
//! whatever the size of the difference. Writes and the live streams are not
//! counted: they never wait for it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest one send or answer waits: one larger than this much of the
/// rate goes faster than the rate rather than outlast the peer's patience
/// (it waits 30 s for an answer).
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// A token bucket: `rate` bytes a second, up to one second's worth saved.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes a second; 0: no limit.
    rate: u64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now (negative: owed by those already let go).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Throttle {
    /// A throttle of `rate` bytes a second (0: none).
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate as f64,
                at: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket; how long the caller must wait before
    /// sending them (zero when the bucket had them).
    pub fn take(&self, bytes: usize) -> Duration {
        self.take_at(bytes, Instant::now())
    }

    fn take_at(&self, bytes: usize, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = self.rate as f64;
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let earned = now.saturating_duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + earned).min(rate);
        b.at = now;
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_bytes_goes_at_once_then_the_rest_waits_its_share() {
        let t = Throttle::new(1000);
        let t0 = Instant::now();
        assert_eq!(t.take_at(600, t0), Duration::ZERO);
        assert_eq!(t.take_at(400, t0), Duration::ZERO);
        // The bucket is empty: 500 bytes more wait half a second, and the
        // next 500 a second (they queue behind).
        assert_eq!(t.take_at(500, t0), Duration::from_millis(500));
        assert_eq!(t.take_at(500, t0), Duration::from_millis(1000));
        // Two seconds on, the debt is paid and nothing waits.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(t.take_at(0, later), Duration::ZERO);
        // Idle time saves at most one second's worth.
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(t.take_at(1000, much_later), Duration::ZERO);
        assert_eq!(t.take_at(1, much_later), Duration::from_millis(1));
    }

    #[test]
    fn no_rate_means_no_wait() {
        let t = Throttle::new(0);
        assert_eq!(t.take(usize::MAX), Duration::ZERO);
    }
}
