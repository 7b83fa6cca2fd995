//! Interest: the prefixes this node's clients subscribe to, counted, so the
//! cluster can keep local copies of what is watched here (a node whose
//! client watches a prefix it does not own follows that prefix at an
//! owner). The first subscription to a prefix and the end of the last one
//! are told to an observer (the cluster's replicator).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use actix::prelude::*;

use crate::model::Path;

/// A prefix became watched here, or stopped being.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct InterestChanged {
    /// The prefix.
    pub prefix: Path,
    /// True: the first subscription to it began; false: the last ended.
    pub watched: bool,
}

/// The prefixes watched by this node's clients.
#[derive(Default)]
pub struct Interest {
    counts: Mutex<HashMap<Path, usize>>,
    observer: OnceLock<Recipient<InterestChanged>>,
}

impl Interest {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Path, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells `observer` of every change from now on (once).
    pub fn attach(&self, observer: Recipient<InterestChanged>) {
        let _ = self.observer.set(observer);
    }

    fn tell(&self, prefix: &Path, watched: bool) {
        if let Some(observer) = self.observer.get() {
            observer.do_send(InterestChanged {
                prefix: prefix.clone(),
                watched,
            });
        }
    }

    /// One more subscription to `prefix`.
    pub fn add(&self, prefix: &Path) {
        let first = {
            let mut counts = self.counts();
            let n = counts.entry(prefix.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            self.tell(prefix, true);
        }
    }

    /// One subscription to `prefix` fewer.
    pub fn remove(&self, prefix: &Path) {
        let last = {
            let mut counts = self.counts();
            match counts.get_mut(prefix) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    counts.remove(prefix);
                    true
                }
                None => false,
            }
        };
        if last {
            self.tell(prefix, false);
        }
    }

    /// True if a prefix watched here covers `path` (so this node keeps a
    /// copy of it).
    pub fn covers(&self, path: &Path) -> bool {
        let counts = self.counts();
        !counts.is_empty() && counts.keys().any(|p| p.covers(path))
    }

    /// The prefixes watched now.
    pub fn watched(&self) -> Vec<Path> {
        let mut out: Vec<Path> = self.counts().keys().cloned().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_watched_from_the_first_subscription_to_the_end_of_the_last() {
        let interest = Interest::default();
        let p = Path::parse("rooms/1").unwrap();
        interest.add(&p);
        interest.add(&p);
        assert_eq!(interest.watched(), vec![p.clone()]);
        interest.remove(&p);
        assert_eq!(interest.watched(), vec![p.clone()]);
        interest.remove(&p);
        interest.remove(&p);
        assert!(interest.watched().is_empty());
    }
}
