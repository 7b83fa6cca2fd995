//! Compaction: dropping the history a retention rule lets go, a bounded
//! step at a time, between commits (see `Store::compact`).
//!
//! For each path the step finds the *cut*: the order of the oldest event
//! to keep — the newest `keep_versions`-th event, and the newest event
//! before `keep_after` (the value as it stood then), whichever is later.
//! Records of pages and of the open page below the cut go (the latest
//! record never does: the cut is at or below it), except those whose seq
//! the partition's change log still holds (their log entries name them; a
//! later sweep takes them). The path's floor becomes the cut's
//! time: a read before it cannot be answered, and says so. Dropped events'
//! names are queued in the merkle key space for the folder to take out of
//! the tree. All of a step's writes go in one sled batch.
//!
//! Reclaiming an expired value's space is the same drop with another cut:
//! the path's expiry (its latest event), whatever the retention, for the
//! paths the expiry thread queued; the floor is then the time the value
//! expired, since it stood until then.

use std::ops::Bound;

use super::*;
use crate::merkle::tree::{dropped_id, dropped_key, push_dropped, DROPPED};
use crate::model::AsOf;
use crate::store::{Budget, Compacted, Resume, Retention};

impl SledStore {
    /// Every partition's floor mark, from meta.
    pub(super) fn read_floors(&self) -> Result<Vec<AtomicU64>, StoreError> {
        self.read_marks("floor/")
    }

    /// The floor of `path`, if compaction dropped some of its history.
    pub(super) fn floor_of(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        Ok(self.dropped_span(path)?.map(|(_, floor)| floor))
    }

    /// The times `[from, floor)` of `path`'s history compaction dropped,
    /// if it dropped some: what the path held then is no longer known.
    /// Before `from` nothing was dropped (0 in a floor key written before
    /// it was recorded: unknown, so everything before the floor).
    pub(super) fn dropped_span(&self, path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
        let part = self.layout.partition_of(path);
        let Some(raw) = self.tree.get(keys::floor(part, path.as_str()))? else {
            return Ok(None);
        };
        Ok(match raw.len() {
            8 => u64_of(&raw).map(|floor| (0, floor)),
            // `floor from`: the floor first, as keys of earlier releases.
            16 => u64_of(&raw[8..]).zip(u64_of(&raw[..8])),
            _ => None,
        })
    }

    /// One step of compacting partition `part` (see `Store::compact`).
    pub(super) fn compact_step(
        &self,
        part: u16,
        resume: &Resume,
        retention: &Retention,
        budget: Budget,
    ) -> Result<Compacted, StoreError> {
        let budget_work = budget.work;
        let mut state = self.between_commits()?;
        let Some((start, end)) = resumed_range(keys::LATEST, part, resume) else {
            return Ok(Compacted {
                dropped: 0,
                resume: Resume::Done,
            });
        };
        let in_log = self.trimmed_through(part);
        let mut step = Step::new(self.partition_floor_of(part));
        let mut resume = Resume::Done;
        for item in self.tree.range::<Vec<u8>, _>((start, end)) {
            let (key, raw) = item?;
            let text = keys::path_of_latest(&key)
                .ok_or_else(|| StoreError::Corrupt("latest key is not UTF-8".into()))?;
            let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let done =
                self.compact_path(part, &path, raw, retention, in_log, budget_work, &mut step)?;
            step.work += 1;
            if !done {
                resume = Resume::At(text.to_string());
                break;
            }
            if step.work >= budget_work || std::time::Instant::now() >= budget.until {
                resume = Resume::After(text.to_string());
                break;
            }
        }
        let dropped = self.finish(part, step, &mut state)?;
        Ok(Compacted { dropped, resume })
    }

    /// One step of reclaiming expired values' history in partition `part`
    /// (see `Store::reclaim`).
    pub(super) fn reclaim_step(
        &self,
        part: u16,
        resume: &Resume,
        budget: Budget,
    ) -> Result<Compacted, StoreError> {
        let done = Compacted {
            dropped: 0,
            resume: Resume::Done,
        };
        let Some((start, end)) = resumed_range(keys::RECLAIM, part, resume) else {
            return Ok(done);
        };
        // Most partitions have nothing queued: no need to hold up commits.
        if self
            .tree
            .range::<Vec<u8>, _>((start.clone(), end.clone()))
            .next()
            .is_none()
        {
            return Ok(done);
        }
        let mut state = self.between_commits()?;
        let in_log = self.trimmed_through(part);
        let mut step = Step::new(self.partition_floor_of(part));
        let mut resume = Resume::Done;
        // Each key looked at once per sweep: one whose expiry is still in
        // the log waits for the next sweep, and does not hold up the rest.
        for item in self.tree.range::<Vec<u8>, _>((start, end)) {
            let (key, _) = item?;
            step.work += 1;
            let text = std::str::from_utf8(&key[3..])
                .map_err(|_| StoreError::Corrupt("a reclaim key is not UTF-8".into()))?;
            let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self.reclaim_path(part, &path, in_log, budget.work, &mut step)? {
                Reclaim::Done => step.forget.push(key.to_vec()),
                Reclaim::Later => {}
                Reclaim::Unfinished => {
                    resume = Resume::At(text.to_string());
                    break;
                }
            }
            if step.work >= budget.work || std::time::Instant::now() >= budget.until {
                resume = Resume::After(text.to_string());
                break;
            }
        }
        let dropped = self.finish(part, step, &mut state)?;
        Ok(Compacted { dropped, resume })
    }

    /// Reclaims the history of `path` before its expiry, if its latest
    /// event is still that expiry and it has left the change log.
    fn reclaim_path(
        &self,
        part: u16,
        path: &Path,
        in_log: u64,
        budget: usize,
        step: &mut Step,
    ) -> Result<Reclaim, StoreError> {
        let Some(raw) = self.tree.get(keys::latest(part, path.as_str()))? else {
            return Ok(Reclaim::Done);
        };
        let latest = pages::items(path, raw)?;
        let Some(newest) = latest.last() else {
            return Ok(Reclaim::Done);
        };
        let newest = decode(path.clone(), newest.record.clone())?;
        let Some(expired_at) = newest
            .event
            .expires_at
            .filter(|_| newest.event.value.is_none())
        else {
            // Written since it expired: its history stays as the retention
            // says.
            return Ok(Reclaim::Done);
        };
        if newest.seq.is_some_and(|seq| seq > in_log) {
            return Ok(Reclaim::Later);
        }
        let cut = keys::order(&newest.event.version, &newest.digest);
        step.held = 0;
        let done = self.drop_below(
            part,
            path,
            &latest,
            (&cut, expired_at),
            in_log,
            budget,
            step,
        )?;
        Ok(match (done, step.held) {
            (false, _) => Reclaim::Unfinished,
            // Late events below the expiry still in the log.
            (true, held) if held > 0 => Reclaim::Later,
            (true, _) => Reclaim::Done,
        })
    }

    /// The commit lock, so that no commit runs meanwhile (the committer
    /// calls compaction between commits; the lock makes sure), unless an
    /// earlier commit failed partway.
    fn between_commits(&self) -> Result<std::sync::MutexGuard<'_, CommitState>, StoreError> {
        let state = self.state();
        if self.torn.load(Ordering::Relaxed) {
            return Err(StoreError::Failed(
                "an earlier commit failed partway; reopen the store to compact".into(),
            ));
        }
        Ok(state)
    }

    /// Writes what `step` gathered in partition `part`: its drops, the
    /// dropped events' names for the merkle folder and the raised floors
    /// in one batch (and the reclaim keys it is done with); answers the
    /// events dropped.
    fn finish(
        &self,
        part: u16,
        mut step: Step,
        state: &mut std::sync::MutexGuard<'_, CommitState>,
    ) -> Result<u64, StoreError> {
        if step.dropped == 0 {
            // One by one: a batch would take sled's process-wide lock.
            for key in step.forget {
                self.tree.remove(key)?;
            }
            return Ok(0);
        }
        // The dropped events' names, for the merkle folder, under an id
        // above any queued before in this partition.
        let last = self
            .tree
            .range(keys::merkle(part, &[DROPPED])..keys::merkle(part, &[DROPPED + 1]))
            .next_back()
            .transpose()?
            .and_then(|(k, _)| dropped_id(&k[3..]))
            .unwrap_or(0);
        let id = last
            .saturating_add(1)
            .max(crate::model::version::wall_micros());
        step.batch.insert(
            keys::merkle(part, &dropped_key(id)),
            std::mem::take(&mut step.names),
        );
        // A replayed intent of the last commit (which returned, so is
        // whole) could write back a page dropped here.
        step.batch.remove(keys::meta(keys::INTENT_META));
        if step.raised {
            step.batch.insert(
                keys::meta(&keys::floor_meta(part)),
                &step.floor.to_be_bytes()[..],
            );
        }
        for key in step.forget {
            step.batch.remove(key);
        }
        self.tree.apply_batch(step.batch)?;
        // The next commit reads the latest keys rewritten here from sled.
        for key in &step.rewritten {
            state.latest.take(key);
        }
        if let Some(mark) = self.floors.get(usize::from(part)) {
            mark.fetch_max(step.floor, Ordering::AcqRel);
        }
        Ok(step.dropped)
    }

    pub(super) fn partition_floor_of(&self, part: u16) -> u64 {
        self.floors
            .get(usize::from(part))
            .map_or(0, |m| m.load(Ordering::Acquire))
    }

    /// Compacts one path into `step`; false if it has more to drop than
    /// the budget allowed (the next step starts with it again).
    #[allow(clippy::too_many_arguments)]
    fn compact_path(
        &self,
        part: u16,
        path: &Path,
        latest: IVec,
        retention: &Retention,
        in_log: u64,
        budget: usize,
        step: &mut Step,
    ) -> Result<bool, StoreError> {
        let latest = pages::items(path, latest)?;
        if latest.is_empty() {
            return Ok(true);
        }
        let view = pages::PathView::new(&self.tree, part, path);
        let mut cut: Option<Vec<u8>> = None;
        if let Some(n) = retention.keep_versions {
            cut = cut.max(self.nth_newest(&view, path, &latest, n.max(1))?);
        }
        if let Some(after) = retention.keep_after.filter(|t| *t > 0) {
            let bound = keys::order_bound(&AsOf::time(after - 1));
            let raw = self.tree.get(keys::latest(part, path.as_str()))?;
            if let Some(record) = pages::record_at(&self.tree, part, path, &bound, raw)? {
                let stood = decode(path.clone(), record)?;
                let order = keys::order(&stood.event.version, &stood.digest);
                cut = cut.max(Some(order));
            }
        }
        let Some(mut cut) = cut else {
            return Ok(true);
        };
        // An expiry takes effect at its `expires_at`, not at its version's
        // time (see `node::expiry`): as a cut it would drop the value it
        // ends while that value still stood. The cut goes to that value.
        let raw = self.tree.get(keys::latest(part, path.as_str()))?;
        if let Some(record) = pages::record_at(&self.tree, part, path, &cut, raw.clone())? {
            let at_cut = decode(path.clone(), record)?;
            if at_cut.event.value.is_none() && at_cut.event.expires_at.is_some() {
                let before = AsOf::time(at_cut.event.version.time.saturating_sub(1));
                let bound = keys::order_bound(&before);
                if let Some(record) = pages::record_at(&self.tree, part, path, &bound, raw)? {
                    let ended = decode(path.clone(), record)?;
                    cut = keys::order(&ended.event.version, &ended.digest);
                }
            }
        }
        self.drop_below(part, path, &latest, (&cut, 0), in_log, budget, step)
    }

    /// Drops `path`'s events below `cut` (`latest`: its open page) that
    /// have left the change log, and raises its floor to the cut's time,
    /// or to `at_least` if later; false if it has more to drop than the
    /// budget allowed (the next step starts with it again).
    #[allow(clippy::too_many_arguments)]
    fn drop_below(
        &self,
        part: u16,
        path: &Path,
        latest: &[pages::Item],
        (cut, at_least): (&[u8], u64),
        in_log: u64,
        budget: usize,
        step: &mut Step,
    ) -> Result<bool, StoreError> {
        let Some(open_first) = latest.first().map(|i| i.order.to_vec()) else {
            return Ok(true);
        };
        let view = pages::PathView::new(&self.tree, part, path);
        let mut dropped_here = 0;
        for (pages_here, page) in view.pages_from_time(0).enumerate() {
            if step.work >= budget {
                if pages_here > 0 && dropped_here == 0 {
                    // Pages this path's change log still holds: nothing to
                    // drop yet, and the next step would read them again.
                    // The next sweep looks at the path again.
                    return Ok(true);
                }
                self.raise_floor(part, path, (cut, at_least), dropped_here, step)?;
                return Ok(false);
            }
            let (key, raw) = page?;
            let items = pages::items(path, raw)?;
            if items.first().is_none_or(|i| i.order[..] >= cut[..]) {
                break;
            }
            let (keep, dropped) = self.sift(path, &items, cut, in_log, step)?;
            // Each dropped event costs the batch a write too.
            step.work += 1 + dropped as usize;
            if dropped > 0 {
                step.batch.remove(key.clone());
                if let Some(last) = keep.last() {
                    step.batch
                        .insert(view.page_key(&last.order), pages::encode(&keep)?);
                }
                dropped_here += dropped;
            }
            if items.last().is_some_and(|i| i.order[..] >= cut[..]) {
                break;
            }
        }
        // The open page, kept with the latest value.
        if open_first[..] < cut[..] {
            let (keep, dropped) = self.sift(path, latest, cut, in_log, step)?;
            if dropped > 0 {
                let key = keys::latest(part, path.as_str());
                step.batch.insert(key.clone(), pages::encode(&keep)?);
                step.rewritten.push(key);
                step.work += 1 + dropped as usize;
                dropped_here += dropped;
            }
        }
        self.raise_floor(part, path, (cut, at_least), dropped_here, step)?;
        Ok(true)
    }

    /// The records of `items` to keep, and how many go: those below `cut`
    /// that left the change log (`in_log`), whose names are queued for the
    /// merkle tree in `step`.
    fn sift(
        &self,
        path: &Path,
        items: &[pages::Item],
        cut: &[u8],
        in_log: u64,
        step: &mut Step,
    ) -> Result<(Vec<pages::Item>, u64), StoreError> {
        let mut keep = Vec::with_capacity(items.len());
        let mut dropped = 0;
        for item in items {
            let goes = item.order[..] < *cut
                && decode(path.clone(), item.record.clone())?
                    .seq
                    .is_none_or(|seq| seq <= in_log);
            if goes {
                step.newest_dropped = step.newest_dropped.max(item.time());
                step.oldest_dropped = step.oldest_dropped.min(item.time());
                push_dropped(&mut step.names, &keys::logged(path, &item.order));
                dropped += 1;
            } else {
                if item.order[..] < *cut {
                    step.held += 1;
                }
                keep.push(item.clone());
            }
        }
        Ok((keep, dropped))
    }

    /// After dropping `dropped` events of `path` below `cut`: its floor is
    /// the cut's time, or `at_least` if later (floors only rise).
    fn raise_floor(
        &self,
        part: u16,
        path: &Path,
        (cut, at_least): (&[u8], u64),
        dropped: u64,
        step: &mut Step,
    ) -> Result<(), StoreError> {
        if dropped == 0 {
            return Ok(());
        }
        // Events at the cut's own microsecond may be among those dropped
        // (ordered below it by node id or digest): then that microsecond is
        // no longer whole, and the floor is the next one.
        let cut_time = pages::time_of_order(cut);
        let floor = if step.newest_dropped >= cut_time {
            cut_time + 1
        } else {
            cut_time
        };
        step.newest_dropped = 0;
        let oldest_dropped = std::mem::replace(&mut step.oldest_dropped, u64::MAX);
        let (from, known) = self.dropped_span(path)?.unwrap_or((u64::MAX, 0));
        let floor = floor.max(at_least).max(known);
        let from = from.min(oldest_dropped);
        let mut value = floor.to_be_bytes().to_vec();
        value.extend_from_slice(&from.to_be_bytes());
        step.batch.insert(keys::floor(part, path.as_str()), value);
        step.dropped += dropped;
        if floor > step.floor {
            step.floor = floor;
            step.raised = true;
        }
        Ok(())
    }

    /// The order of `path`'s `n`-th newest event, if it has that many.
    fn nth_newest(
        &self,
        view: &pages::PathView<'_>,
        path: &Path,
        latest: &[pages::Item],
        n: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut seen = 0;
        for item in latest.iter().rev() {
            seen += 1;
            if seen == n {
                return Ok(Some(item.order.to_vec()));
            }
        }
        for page in view.pages_from_time(0).rev() {
            let (_, raw) = page?;
            for item in pages::items(path, raw)?.iter().rev() {
                seen += 1;
                if seen == n {
                    return Ok(Some(item.order.to_vec()));
                }
            }
        }
        Ok(None)
    }
}

/// A range of keys: where it starts, where it ends.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The keys of namespace `ns` (keyed `ns part path`) in partition `part`
/// that a step resuming at `resume` reads; `None` once the partition is
/// done.
fn resumed_range(ns: u8, part: u16, resume: &Resume) -> Option<KeyRange> {
    let key = |path: &str| {
        let mut k = keys::partition_start(ns, part).to_vec();
        k.extend_from_slice(path.as_bytes());
        k
    };
    let start = match resume {
        Resume::Done => return None,
        Resume::Start => Bound::Included(key("")),
        Resume::At(p) => Bound::Included(key(p)),
        Resume::After(p) => Bound::Excluded(key(p)),
    };
    Some((start, Bound::Excluded(keys::partition_end(ns, part))))
}

/// Where reclaiming one path stands after a step.
enum Reclaim {
    /// Nothing more to do: its key goes.
    Done,
    /// Not yet (its expiry, or events below it, still in the log): a later
    /// sweep looks again.
    Later,
    /// Over the step's budget: the next step starts with it again.
    Unfinished,
}

/// What a compaction step has gathered.
struct Step {
    batch: sled::Batch,
    dropped: u64,
    /// Paths and pages looked at.
    work: usize,
    /// The partition's floor, raised as paths are compacted.
    floor: u64,
    raised: bool,
    /// Latest keys rewritten (their open page lost records).
    rewritten: Vec<Vec<u8>>,
    /// The dropped events' names (see `merkle::tree::push_dropped`).
    names: Vec<u8>,
    /// The newest time among the events of the current path dropped.
    newest_dropped: u64,
    /// The oldest time among them (`u64::MAX`: none yet).
    oldest_dropped: u64,
    /// Events of the current path below its cut kept because the change
    /// log still holds them.
    held: u64,
    /// Reclaim keys done with.
    forget: Vec<Vec<u8>>,
}

impl Step {
    fn new(floor: u64) -> Step {
        Step {
            batch: sled::Batch::default(),
            dropped: 0,
            work: 0,
            floor,
            raised: false,
            rewritten: Vec::new(),
            names: Vec::new(),
            newest_dropped: 0,
            oldest_dropped: u64::MAX,
            held: 0,
            forget: Vec::new(),
        }
    }
}
