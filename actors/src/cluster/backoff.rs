//! Jittered exponential backoff between attempts to (re)open a peer link.

use std::time::Duration;

/// The delays before successive attempts: each twice the last, up to a
/// ceiling, each drawn at random between half and all of it, so that nodes
/// cut off together do not all come back at once.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starting at `base`, never over `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            next: base,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rand::random::<f64>())
    }

    /// Starts again from `base` (after a link that stayed up).
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_with_jitter_in_the_upper_half() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for c in ceilings {
            let d = b.next_delay();
            assert!(
                d >= ms(c / 2) && d <= ms(c),
                "{d:?} for a ceiling of {c} ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let spread: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(ms(1000), ms(1000)).next_delay())
            .collect();
        assert!(spread.len() > 1, "jittered");
    }
}
