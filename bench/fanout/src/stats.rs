//! The summary of a run: per-write first and last delivery times and
//! their percentiles, as one JSON object.

use std::time::Duration;

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
    /// Receiver threads of the client.
    pub threads: usize,
    /// More fields for the JSON object (system-specific).
    pub extra: serde_json::Map<String, serde_json::Value>,
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
            threads: 1,
            extra: serde_json::Map::new(),
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
        let mut json = serde_json::json!({
            "subscribers": self.subscribers,
            "repeats": self.last.len(),
            "p50_ms": ms(percentile(&last, 50.0)),
            "p99_ms": ms(percentile(&last, 99.0)),
            "max_ms": ms(last.last().copied()),
            "min_ms": ms(last.first().copied()),
            "first_p50_ms": ms(percentile(&first, 50.0)),
            "delivery_p50_ms": ms(percentile(&all, 50.0)),
            "first_p99_ms": ms(percentile(&first, 99.0)),
            "connect_s": (self.connect.as_secs_f64() * 1000.0).round() / 1000.0,
            "threads": self.threads,
        });
        if let Some(object) = json.as_object_mut() {
            object.extend(self.extra.clone());
        }
        json
    }
}

/// Nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with three decimals, or `null`.
pub fn ms(d: Option<Duration>) -> serde_json::Value {
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
}
