//! Interest: the prefixes this node's clients subscribe to, counted, so the
//! cluster can keep local copies of what is watched here (a node whose
//! client watches a prefix it does not own follows that prefix at an
//! owner). The first subscription to a prefix and the end of the last one
//! are told to an observer (the cluster's replicator).
//!
//! In a cluster a watched prefix is first *unready*: the copy this node
//! holds may lack what the owners have. The replicator marks it ready once
//! the copy is complete (every partition it covers is owned here or an
//! owner's snapshot of it has been kept); a client's snapshot waits for
//! that (up to a deadline, after which it gets what the node holds), and
//! reads are answered from the copy only once it is ready. A single node
//! has no observer, and every prefix is ready at once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

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

/// One watched prefix.
#[derive(Default)]
struct Watched {
    /// Subscriptions to it.
    count: usize,
    /// The copy under it is complete.
    ready: bool,
    /// Subscriptions waiting for `ready`.
    waiters: Vec<oneshot::Sender<()>>,
}

/// What a new subscription waits for before its snapshot.
pub enum Readiness {
    /// Nothing: the copy is complete (or this node is not in a cluster).
    Now,
    /// The copy of the prefix to be complete, at most this long.
    Wait(oneshot::Receiver<()>, Duration),
}

/// The observer of interest and how long a subscription waits for a
/// prefix's copy.
struct Observer {
    recipient: Recipient<InterestChanged>,
    ready_timeout: Duration,
}

/// The prefixes watched by this node's clients.
#[derive(Default)]
pub struct Interest {
    watched: Mutex<HashMap<Path, Watched>>,
    observer: OnceLock<Observer>,
}

impl Interest {
    fn watched_now(&self) -> std::sync::MutexGuard<'_, HashMap<Path, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells `observer` of every change from now on (once), and makes new
    /// prefixes wait for it to mark them ready (at most `ready_timeout`).
    pub fn attach(&self, observer: Recipient<InterestChanged>, ready_timeout: Duration) {
        let _ = self.observer.set(Observer {
            recipient: observer,
            ready_timeout,
        });
    }

    fn tell(&self, prefix: &Path, watched: bool) {
        if let Some(observer) = self.observer.get() {
            observer.recipient.do_send(InterestChanged {
                prefix: prefix.clone(),
                watched,
            });
        }
    }

    /// One more subscription to `prefix`; what it waits for before its
    /// snapshot.
    pub fn add(&self, prefix: &Path) -> Readiness {
        let observer = self.observer.get();
        let (first, readiness) = {
            let mut watched = self.watched_now();
            let entry = watched.entry(prefix.clone()).or_default();
            entry.count += 1;
            let first = entry.count == 1;
            if first && observer.is_none() {
                entry.ready = true;
            }
            let readiness = match observer {
                Some(o) if !entry.ready => {
                    let (tx, rx) = oneshot::channel();
                    entry.waiters.push(tx);
                    Readiness::Wait(rx, o.ready_timeout)
                }
                _ => Readiness::Now,
            };
            (first, readiness)
        };
        if first {
            self.tell(prefix, true);
        }
        readiness
    }

    /// One subscription to `prefix` fewer.
    pub fn remove(&self, prefix: &Path) {
        let last = {
            let mut watched = self.watched_now();
            match watched.get_mut(prefix) {
                Some(w) if w.count > 1 => {
                    w.count -= 1;
                    false
                }
                Some(_) => {
                    watched.remove(prefix);
                    true
                }
                None => false,
            }
        };
        if last {
            self.tell(prefix, false);
        }
    }

    /// The copy under `prefix` is complete: its waiting subscriptions go
    /// on, and reads under it are answered here. (No-op if not watched.)
    pub fn set_ready(&self, prefix: &Path) {
        let mut watched = self.watched_now();
        if let Some(w) = watched.get_mut(prefix) {
            w.ready = true;
            for waiter in w.waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// True if `prefix` is watched and its copy is complete.
    pub fn is_ready(&self, prefix: &Path) -> bool {
        self.watched_now().get(prefix).is_some_and(|w| w.ready)
    }

    /// True if a prefix watched here whose copy is complete covers `path`
    /// (so this node answers reads of it from its copy).
    pub fn serves(&self, path: &Path) -> bool {
        let watched = self.watched_now();
        watched.iter().any(|(p, w)| w.ready && p.covers(path))
    }

    /// The prefixes watched now.
    pub fn watched(&self) -> Vec<Path> {
        let mut out: Vec<Path> = self.watched_now().keys().cloned().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observer that takes the changes and drops them.
    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<InterestChanged> for Sink {
        type Result = ();

        fn handle(&mut self, _: InterestChanged, _: &mut Self::Context) {}
    }

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

    #[test]
    fn without_a_cluster_every_prefix_is_ready_at_once() {
        let interest = Interest::default();
        let p = Path::parse("rooms").unwrap();
        assert!(matches!(interest.add(&p), Readiness::Now));
        assert!(interest.serves(&Path::parse("rooms/1").unwrap()));
    }

    #[test]
    fn in_a_cluster_a_prefix_waits_until_marked_ready_and_again_after_its_last_subscription() {
        actix::System::new().block_on(async {
            let interest = Interest::default();
            interest.attach(Sink.start().recipient(), Duration::from_secs(5));
            let p = Path::parse("rooms").unwrap();
            let inner = Path::parse("rooms/1").unwrap();
            let Readiness::Wait(first, _) = interest.add(&p) else {
                panic!("a new prefix in a cluster must wait");
            };
            let Readiness::Wait(second, _) = interest.add(&p) else {
                panic!("a prefix not ready yet must wait");
            };
            assert!(!interest.serves(&inner));
            interest.set_ready(&p);
            first.await.unwrap();
            second.await.unwrap();
            assert!(interest.serves(&inner));
            assert!(matches!(interest.add(&p), Readiness::Now));
            for _ in 0..3 {
                interest.remove(&p);
            }
            assert!(!interest.serves(&inner));
            assert!(matches!(interest.add(&p), Readiness::Wait(..)));
        });
    }
}
