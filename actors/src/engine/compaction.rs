//! When history is compacted: sweeps over every partition, every
//! `--compaction-interval`, made of bounded steps the committer runs
//! between commits (`Store::compact` does the work), so writes never wait
//! for more than one step. A sweep fixes its time window when it starts.
//!
//! Every sweep also reclaims the space of values that expired
//! (`Store::reclaim`), whatever the retention: with no `--history-keep-*`
//! a sweep does only that, over the paths the expiry thread queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::merkle::maintain::Marks;
use crate::model::version::wall_micros;
use crate::store::{Resume, Retention, Store};

/// Paths, pages and dropped events one step handles, at most: its sled
/// batch (page removals, rewritten latest keys, new floor keys) is most of
/// its cost, about 20 µs per entry.
const STEP_BUDGET: usize = 32;
/// About the longest a step runs: a write that arrives meanwhile waits no
/// longer.
const STEP_TIME: Duration = Duration::from_micros(200);
/// The least time between two steps of a sweep.
const STEP_GAP: Duration = Duration::from_millis(2);
/// A step due this long runs even while writes keep the committer busy.
const STARVED: Duration = Duration::from_millis(100);
/// Microseconds in a day.
const DAY_MICROS: u64 = 86_400 * 1_000_000;

/// A sweep under way: its retention pass (when a rule drops history),
/// then its reclaim pass, partition by partition.
struct Sweep {
    part: u16,
    resume: Resume,
    /// `None` once the retention pass is done (or when there is none).
    retention: Option<Retention>,
}

/// The compaction schedule and its counters.
pub(crate) struct Compaction {
    keep_versions: Option<usize>,
    keep_days: Option<u64>,
    interval: Duration,
    partitions: u32,
    sweep: Option<Sweep>,
    next: Instant,
    compacted: Arc<AtomicU64>,
    sweeps: Arc<AtomicU64>,
}

impl Compaction {
    /// The schedule for `config`.
    pub fn new(
        config: &Config,
        partitions: u32,
        compacted: Arc<AtomicU64>,
        sweeps: Arc<AtomicU64>,
    ) -> Compaction {
        Compaction {
            keep_versions: config.history_keep_versions.map(|n| n.max(1)),
            keep_days: config.history_keep_days,
            interval: config.compaction_interval,
            partitions,
            sweep: None,
            // The first sweep starts soon after the node opens.
            next: Instant::now() + STEP_GAP,
            compacted,
            sweeps,
        }
    }

    /// When the next step is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// True when a step has been due for long: it runs even though writes
    /// wait.
    pub fn starved(&self) -> bool {
        self.next + STARVED <= Instant::now()
    }

    /// Runs one step (starting a sweep if none is under way).
    pub fn step(&mut self, store: &dyn Store, marks: &Marks) {
        let (keep_versions, keep_days) = (self.keep_versions, self.keep_days);
        let sweep = self.sweep.get_or_insert_with(|| Sweep {
            part: 0,
            resume: Resume::Start,
            retention: (keep_versions.is_some() || keep_days.is_some()).then(|| Retention {
                keep_versions,
                keep_after: keep_days
                    .map(|days| wall_micros().saturating_sub(days.saturating_mul(DAY_MICROS))),
            }),
        });
        let budget = crate::store::Budget {
            work: STEP_BUDGET,
            until: Instant::now() + STEP_TIME,
        };
        let done = match &sweep.retention {
            Some(retention) => store.compact(sweep.part, &sweep.resume, retention, budget),
            None => store.reclaim(sweep.part, &sweep.resume, budget),
        };
        match done {
            Ok(done) => {
                if done.dropped > 0 {
                    self.compacted.fetch_add(done.dropped, Ordering::Relaxed);
                    marks.dropped(sweep.part);
                }
                sweep.resume = done.resume;
                if sweep.resume == Resume::Done {
                    sweep.part += 1;
                    sweep.resume = Resume::Start;
                }
                if u32::from(sweep.part) >= self.partitions {
                    if sweep.retention.take().is_some() {
                        // On to the reclaim pass.
                        sweep.part = 0;
                    } else {
                        self.sweep = None;
                        self.sweeps.fetch_add(1, Ordering::Relaxed);
                        self.next = Instant::now() + self.interval;
                        return;
                    }
                }
            }
            Err(e) => {
                log::error!("compaction of partition {} failed: {e}", sweep.part);
                self.sweep = None;
                self.next = Instant::now() + self.interval;
                return;
            }
        }
        self.next = Instant::now() + STEP_GAP;
    }
}
