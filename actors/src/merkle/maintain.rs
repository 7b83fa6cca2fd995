//! Keeping the trees up to date: a background thread folds each
//! partition's change log into its tree (every event that enters the store
//! has a log entry, so the log is the tree's to-do list, and the tree's
//! cursor says how far it got). Writers pay one atomic per event: the
//! committer marks a partition's highest seq before its commit is written
//! ([`Marks`]).
//!
//! A pass that folded something is followed by the next one a second later
//! at the soonest, so that under load one pass folds many commits and the
//! nodes they share are written once for all of them (measured: folding
//! after every commit cost durable PUTs 4.7× their throughput, every 100 ms
//! about 20%, every 500 ms 6–10%, every second about 4%); a digest trails
//! the writes by that much.
//!
//! The log must not be trimmed past what the trees folded: the committer
//! asks [`Marks::safe_trim`], which a fold pass raises as it goes. So after a
//! crash a tree resumes from its cursor (folded events and the cursor move
//! in one atomic write), and no start-up scan is needed. A store whose
//! trees are not known complete (made by a build without them, or whose
//! log was trimmed past a cursor) has them rebuilt from history when it is
//! opened ([`rebuild_all`]), before any write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::tree::{NodeStore, Tree};
use crate::store::{KeyOps, KeyValues, Store, StoreError};

/// Meta name: `complete` when every partition's tree holds every event
/// through its cursor.
pub const TREES_META: &str = "merkle";
/// The value of [`TREES_META`] for complete trees.
const COMPLETE: &[u8] = b"complete";

/// Names folded per write of a tree.
const FOLD_CHUNK: usize = 4096;

/// The least time between two passes that fold something.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// How long the folder sleeps when nothing is marked.
const IDLE: Duration = Duration::from_millis(200);

/// What the committer tells the folder, and the folder the committer.
pub struct Marks {
    /// Per partition, the highest seq a commit gave it (set before the
    /// commit is written).
    marked: Vec<AtomicU64>,
    /// Per partition: compaction queued dropped events to take out.
    dropped: Vec<AtomicBool>,
    /// Log entries below this seq are folded in every tree.
    safe: AtomicU64,
    /// The head of the last commit that returned (the store's own head is
    /// written before a commit's entries can all be read).
    head: AtomicU64,
    /// Per partition, a seq its tree holds every entry through (the
    /// folder's cursor, or the head of a pass that found nothing to fold,
    /// published after each look at the partition).
    folded: Vec<AtomicU64>,
    /// Per partition: the partition was dropped whole through this seq
    /// (0: not since the folder last looked), so its tree is empty and
    /// folded through it.
    reset: Vec<AtomicU64>,
    /// Held while a partition is folded, and while one is dropped: a drop
    /// never interleaves with a fold's writes to its tree.
    folding: Mutex<()>,
    wake: (Mutex<bool>, Condvar),
    /// Passes ended, counted, so a question waits for the next one.
    passes: (Mutex<u64>, Condvar),
    stop: AtomicBool,
    /// Tests hold the folder still.
    #[cfg(test)]
    paused: AtomicBool,
    /// Rests begun, so a test knows the folder waits in one.
    #[cfg(test)]
    rests: AtomicU64,
}

impl Marks {
    /// Marks for `partitions` partitions of a store whose log ends at
    /// `head`.
    pub fn new(partitions: usize, head: u64) -> Marks {
        Marks {
            marked: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            // After a restart, every partition is looked at once.
            dropped: (0..partitions).map(|_| AtomicBool::new(true)).collect(),
            safe: AtomicU64::new(0),
            head: AtomicU64::new(head),
            reset: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            folded: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            folding: Mutex::new(()),
            wake: (Mutex::new(false), Condvar::new()),
            passes: (Mutex::new(0), Condvar::new()),
            stop: AtomicBool::new(false),
            #[cfg(test)]
            paused: AtomicBool::new(false),
            #[cfg(test)]
            rests: AtomicU64::new(0),
        }
    }

    /// Holds the folder still (`true`) or lets it go on.
    #[cfg(test)]
    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.wake();
    }

    /// Partition `part` takes an event with `seq` in the next commit (call
    /// before the commit is written).
    pub fn mark(&self, part: u16, seq: u64) {
        if let Some(m) = self.marked.get(usize::from(part)) {
            m.fetch_max(seq, Ordering::Release);
        }
    }

    /// Compaction queued dropped events of partition `part`: take them out
    /// of its tree soon.
    pub fn dropped(&self, part: u16) {
        if let Some(d) = self.dropped.get(usize::from(part)) {
            d.store(true, Ordering::Release);
        }
        self.wake();
    }

    /// Runs `drop` (which empties partition `part` and its tree, folded
    /// through `head`) while no fold runs, and has the folder go on from
    /// `head` for that partition.
    pub fn dropping<T, E>(
        &self,
        part: u16,
        head: u64,
        drop: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let _folding = self.folding.lock().unwrap_or_else(|p| p.into_inner());
        let done = drop()?;
        // (A failed drop leaves the folder where it was: what it did not
        // remove is still folded.)
        if let Some(r) = self.reset.get(usize::from(part)) {
            r.fetch_max(head, Ordering::Release);
        }
        Ok(done)
    }

    /// A commit through `head` returned: fold it soon.
    pub fn committed(&self, head: u64) {
        self.head.fetch_max(head, Ordering::Release);
        self.wake();
    }

    /// Sets the wake flag, and wakes the folder only if it was not set:
    /// commits call this each time, and while the folder rests between
    /// passes (or has a wake pending) they must not wake its thread each
    /// time for nothing.
    fn wake(&self) {
        let (flag, cv) = &self.wake;
        let mut woken = flag.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            *woken = true;
            cv.notify_one();
        }
    }

    /// True if partition `part`'s tree holds every entry of its log
    /// through `seq`: folded that far, or nothing marked past what is
    /// folded (every entry committed is marked first).
    pub fn folded_through(&self, part: u16, seq: u64) -> bool {
        let (Some(folded), Some(marked)) = (
            self.folded.get(usize::from(part)),
            self.marked.get(usize::from(part)),
        ) else {
            return false;
        };
        let folded = folded.load(Ordering::Acquire);
        folded >= seq || marked.load(Ordering::Acquire) <= folded
    }

    /// Waits (blocking, at most `wait`) until every partition of `parts`
    /// is [`Marks::folded_through`] `seq`; false if not by then. Woken by
    /// each pass's end, not by polling.
    pub fn wait_folded_through(&self, parts: &[u16], seq: u64, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        let (count, cv) = &self.passes;
        let mut passes = count.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // (Checked under the lock a pass's end takes to count itself:
            // a pass that ends after this check wakes the wait below.)
            if parts.iter().all(|&p| self.folded_through(p, seq)) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.stop.load(Ordering::Acquire) {
                return false;
            }
            let seen = *passes;
            passes = cv
                .wait_timeout_while(passes, deadline - now, |p| *p == seen)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A pass ended (its fold points are published): wake the waits.
    fn pass_ended(&self) {
        let (count, cv) = &self.passes;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        cv.notify_all();
    }

    /// Log entries below this seq may be trimmed: every tree has them.
    pub fn safe_trim(&self) -> u64 {
        self.safe.load(Ordering::Acquire)
    }

    /// Ends the folder's thread after its pass.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        // Always notified (a rest ends only for this): `wake` does not
        // notify when a wake is pending already.
        let (flag, cv) = &self.wake;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Waits `period`, or less if the folder is stopped meanwhile.
    fn rest(&self, period: Duration) {
        let (flag, cv) = &self.wake;
        let woken = flag.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(test)]
        self.rests.fetch_add(1, Ordering::Release);
        let _ = cv
            .wait_timeout_while(woken, period, |_| !self.stop.load(Ordering::Acquire))
            .unwrap_or_else(|p| p.into_inner());
    }

    fn wait(&self) -> bool {
        let (flag, cv) = &self.wake;
        let mut woken = flag.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = cv
                .wait_timeout(woken, IDLE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *woken = false;
        !self.stop.load(Ordering::Acquire)
    }
}

/// Folds the partitions' logs into their trees.
pub struct Folder {
    store: Arc<dyn Store>,
    marks: Arc<Marks>,
    /// Per partition, the seq its tree is folded through.
    cursors: Vec<u64>,
}

impl Folder {
    /// The folder of `store`'s trees (which [`rebuild_all`] made complete).
    pub fn new(store: Arc<dyn Store>, marks: Arc<Marks>) -> Result<Folder, StoreError> {
        let partitions = store.layout().partitions();
        let tree = Tree::new(store.as_ref());
        let cursors = (0..partitions)
            .map(|p| tree.cursor(p as u16).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?;
        // What the last run committed and did not fold (a crash, or a stop
        // mid-pass) is folded first: every tree behind the head looks at its
        // log once.
        let head = marks.head.load(Ordering::Acquire);
        for (part, &cursor) in cursors.iter().enumerate() {
            marks.folded[part].store(cursor, Ordering::Release);
            if cursor < head {
                marks.mark(part as u16, head);
            }
        }
        Ok(Folder {
            store,
            marks,
            cursors,
        })
    }

    /// One pass: folds every marked partition through the log head, then
    /// raises the safe trim point. Answers the events folded.
    pub fn pass(&mut self) -> Result<usize, StoreError> {
        #[cfg(test)]
        if self.marks.paused.load(Ordering::Acquire) {
            return Ok(0);
        }
        let head = self.marks.head.load(Ordering::Acquire);
        let mut folded = 0;
        let mut safe = head;
        for part in 0..self.cursors.len() {
            // A partition is folded or dropped, not both at once.
            let marks = self.marks.clone();
            let _folding = marks.folding.lock().unwrap_or_else(|p| p.into_inner());
            let reset = self.marks.reset[part].swap(0, Ordering::AcqRel);
            if reset > self.cursors[part] {
                // Dropped whole: its tree is empty through `reset`.
                self.cursors[part] = reset;
            }
            let marked = self.marks.marked[part].load(Ordering::Acquire);
            if marked > self.cursors[part] {
                // One partition failing does not hold the others back; its
                // cursor holds the safe trim point below.
                match self.fold(part as u16, head) {
                    Ok(n) => folded += n,
                    Err(e) => log::error!("merkle tree of partition {part}: {e}"),
                }
            }
            // A partition marked past its cursor still has entries to fold
            // (its commit may not be in `head` yet); one that is not has
            // every entry through `head` in its tree (marks come first), so
            // it counts as folded through `head` even if its last entry is
            // far older: a later mark (a seq past `head`) must not make a
            // question about `head` wait for the next pass.
            let through = if self.marks.marked[part].load(Ordering::Acquire) > self.cursors[part] {
                safe = safe.min(self.cursors[part]);
                self.cursors[part]
            } else {
                head.max(self.cursors[part])
            };
            self.marks.folded[part].store(through, Ordering::Release);
            if self.marks.dropped[part].swap(false, Ordering::AcqRel) {
                match self.take_out(part as u16) {
                    Ok(n) => folded += n,
                    Err(e) => {
                        self.marks.dropped[part].store(true, Ordering::Release);
                        log::error!("merkle tree of partition {part}: {e}");
                    }
                }
            }
        }
        self.marks.safe.store(safe + 1, Ordering::Release);
        self.marks.pass_ended();
        Ok(folded)
    }

    /// Folds partition `part`'s log from its cursor through `head`.
    fn fold(&mut self, part: u16, head: u64) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let tree = Tree::new(store.as_ref());
        let mut folded = 0;
        loop {
            let after = self.cursors[usize::from(part)];
            if after >= head {
                return Ok(folded);
            }
            let page = self
                .store
                .partition_log_names(part, after, head, FOLD_CHUNK)?;
            if page.trimmed {
                // Never expected (trims wait for the trees): say so, and
                // have the trees rebuilt when the store is next opened.
                self.store.remove_meta(TREES_META)?;
                return Err(StoreError::Failed(format!(
                    "partition {part}'s log was trimmed past its merkle tree (seq {after}); \
                     the trees are rebuilt when the node restarts"
                )));
            }
            let names: Vec<&[u8]> = page.names.iter().map(|(_, n)| n.as_slice()).collect();
            tree.add(part, &names, page.through)?;
            folded += names.len();
            self.cursors[usize::from(part)] = page.through;
        }
    }

    /// Takes the events compaction dropped from partition `part` out of its
    /// tree. (They were folded in before: compaction drops only events
    /// whose log entries are trimmed, and trims wait for the trees.)
    fn take_out(&mut self, part: u16) -> Result<usize, StoreError> {
        let tree = Tree::new(self.store.as_ref());
        let (from, to) = ([super::tree::DROPPED], [super::tree::DROPPED + 1]);
        let mut taken = 0;
        loop {
            // (A list holds one step's events: a few hundred.)
            let queued = self.store.merkle_range(part, &from, &to, 16)?;
            if queued.is_empty() {
                return Ok(taken);
            }
            let mut names = Vec::new();
            for (_, list) in &queued {
                names.extend(super::tree::dropped_names(list)?);
            }
            tree.remove(
                part,
                &names,
                queued.iter().map(|(k, _)| k.clone()).collect(),
            )?;
            taken += names.len();
        }
    }

    /// Runs passes until [`Marks::stop`], on the calling thread.
    pub fn run(mut self) {
        let marks = self.marks.clone();
        loop {
            match self.pass() {
                // A pass that folded something is followed by the next one
                // [`FOLD_EVERY`] later at the soonest: under load a pass
                // folds many commits at once, and the nodes they share (the
                // root, the prefixes) are written once for all of them.
                Ok(n) if n > 0 => marks.rest(FOLD_EVERY),
                Ok(_) => {}
                Err(e) => log::error!("merkle trees: {e}"),
            }
            if !marks.wait() {
                // A last pass, so a clean stop leaves nothing to fold.
                if let Err(e) = self.pass() {
                    log::error!("merkle trees: {e}");
                }
                return;
            }
        }
    }
}

/// Makes every partition's tree complete if the store does not say they
/// are: each is cleared and rebuilt from the partition's history, with its
/// cursor at the log head. Call before any write (when the store opens).
pub fn rebuild_all(store: &dyn Store) -> Result<bool, StoreError> {
    if store.meta(TREES_META)?.as_deref() == Some(COMPLETE) {
        return Ok(false);
    }
    let head = store.log_head()?.seq;
    let partitions = store.layout().partitions();
    let tree = Tree::new(store);
    for part in 0..partitions as u16 {
        store.merkle_clear(part)?;
        let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(FOLD_CHUNK);
        let mut failed = None;
        store.partition_event_names(part, &mut |name| {
            chunk.push(name.to_vec());
            if chunk.len() >= FOLD_CHUNK {
                if let Err(e) = tree.add(part, &chunk, head) {
                    failed = Some(e);
                    return false;
                }
                chunk.clear();
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        tree.add(part, &chunk, head)?;
    }
    store.set_meta(TREES_META, COMPLETE)?;
    store.flush()?;
    Ok(true)
}

impl<S: Store + ?Sized> NodeStore for S {
    fn get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.merkle_get(part, key)
    }

    fn range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        self.merkle_range(part, from, to, limit)
    }

    fn apply(&self, part: u16, ops: KeyOps) -> Result<(), StoreError> {
        self.merkle_apply(part, ops)
    }
}

#[cfg(test)]
mod wake_tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use super::Marks;

    /// Commits leave a wake pending without notifying again; a stop must
    /// still end the folder's rest at once, or a node's shutdown would
    /// wait out the rest.
    #[test]
    fn a_stop_ends_a_rest_even_with_a_wake_pending() {
        let marks = Arc::new(Marks::new(4, 0));
        marks.committed(1);
        let resting = {
            let marks = marks.clone();
            std::thread::spawn(move || marks.rest(Duration::from_secs(120)))
        };
        // Counted under the lock the rest releases only as it waits: once
        // `committed` takes it, the rest waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while marks.rests.load(std::sync::atomic::Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < deadline, "the rest never began");
            std::thread::yield_now();
        }
        marks.committed(2);
        marks.stop();
        let (ended, rested) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = resting.join();
            let _ = ended.send(());
        });
        assert!(
            rested.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the rest went on after the stop"
        );
    }
}
