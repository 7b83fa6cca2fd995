//! Reading the change log: one partition's, or the seq-ordered merge of
//! several (a prefix shallower than the shard depth covers them all).
//!
//! A partition's entries are in its records (`G part <last seq>`), then
//! among the pending entries in memory (see `pending_log`). A fold writes
//! the records first and then clears the pending entries, so a reader takes
//! the pending entries *first* and the records after: if the fold came
//! before its read, the records are already there for the scan; if after,
//! the pending entries it took still hold them. Duplicates are skipped by
//! seq.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::pending_log;
use super::*;

/// Entries looked at per returned entry, at most, before a read of a
/// narrow prefix returns what it has (and how far it got).
const EXAMINED_PER_ENTRY: usize = 8;

/// Where one partition's log is being read.
struct PartitionLog {
    part: u16,
    /// The pending entries, taken before the records; read once the records
    /// are done.
    open: Option<Vec<pending_log::Entry>>,
    sealed: sled::Iter,
    /// Entries read and not yet merged: `(seq, name)`.
    pending: VecDeque<(u64, Vec<u8>)>,
    /// The highest seq queued.
    last: u64,
    until: u64,
    /// Nothing more to read.
    done: bool,
}

impl PartitionLog {
    fn new(store: &SledStore, part: u16, after: u64, until: u64) -> Result<Self, StoreError> {
        let open = Some(store.pending_read().of(part, after, until));
        let from = keys::log(part, after.saturating_add(1));
        let sealed = store.tree.range(from..=keys::log(part, u64::MAX));
        Ok(PartitionLog {
            part,
            open,
            sealed,
            pending: VecDeque::new(),
            last: after,
            until,
            done: false,
        })
    }

    /// The next entry, if any.
    fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        while self.pending.is_empty() && !self.done {
            let Some(item) = self.sealed.next() else {
                // Every entry up to `until` was committed before the pending
                // entries were taken: they or a record had it.
                self.done = true;
                for (seq, name) in self.open.take().unwrap_or_default() {
                    if seq > self.last {
                        self.last = seq;
                        self.pending.push_back((seq, name.to_vec()));
                    }
                }
                break;
            };
            let raw = item?.1;
            for entry in log_record::entries(&raw) {
                let (seq, name) = entry?;
                if seq > self.until {
                    self.done = true;
                    break;
                }
                if seq > self.last {
                    self.last = seq;
                    self.pending.push_back((seq, name.to_vec()));
                }
            }
        }
        Ok(self.pending.pop_front())
    }
}

impl SledStore {
    /// Entries of `parts` with `after < seq <= until`, merged in seq order,
    /// of paths under `filter` when given, at most `limit`.
    pub(super) fn read_log(
        &self,
        parts: impl Iterator<Item = u16>,
        filter: Option<&Path>,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let mut page = LogPage {
            entries: Vec::new(),
            through: after,
            trimmed: false,
        };
        let parts: Vec<u16> = parts.collect();
        if after >= until || limit == 0 {
            page.trimmed = self.trimmed_any(&parts, after);
            return Ok(page);
        }
        let mut logs = Vec::with_capacity(parts.len());
        let mut heads = BinaryHeap::with_capacity(parts.len());
        for &part in &parts {
            let mut log = PartitionLog::new(self, part, after, until)?;
            if let Some((seq, name)) = log.next()? {
                heads.push(Reverse((seq, logs.len(), name)));
            }
            logs.push(log);
        }
        let budget = limit.saturating_mul(EXAMINED_PER_ENTRY);
        let mut examined = 0;
        let mut exhausted = true;
        while let Some(Reverse((seq, at, name))) = heads.pop() {
            if page.entries.len() >= limit || examined >= budget {
                exhausted = false;
                break;
            }
            examined += 1;
            page.through = seq;
            let part = logs[at].part;
            let wanted = match filter {
                None => true,
                Some(prefix) => keys::split_logged_key(&name)
                    .is_some_and(|(path, _)| crate::model::path::covers(prefix.as_str(), path)),
            };
            if wanted {
                match self.logged_event(part, seq, &name) {
                    Ok(stored) => page.entries.push(stored),
                    // Trimmed since its name was read, and its event then
                    // compacted: the read is not whole, as for any trim.
                    Err(_) if self.trimmed_through(part) >= seq => {
                        page.trimmed = true;
                        return Ok(page);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some((seq, name)) = logs[at].next()? {
                heads.push(Reverse((seq, at, name)));
            }
        }
        if exhausted {
            page.through = until;
        }
        // After the read: a trim raises the mark before its records go.
        page.trimmed = self.trimmed_any(&parts, after);
        Ok(page)
    }

    /// The names of partition `part`'s log entries in `(after, until]`
    /// (see `Store::partition_log_names`).
    pub(super) fn log_names(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<crate::store::NamePage, StoreError> {
        let mut page = crate::store::NamePage {
            names: Vec::new(),
            through: after,
            trimmed: false,
        };
        if after < until && limit > 0 {
            let mut log = PartitionLog::new(self, part, after, until)?;
            let mut exhausted = true;
            while let Some((seq, name)) = log.next()? {
                page.through = seq;
                page.names.push((seq, name));
                if page.names.len() >= limit {
                    exhausted = false;
                    break;
                }
            }
            if exhausted {
                page.through = until;
            }
        }
        // After the read: a trim raises the mark before its records go.
        page.trimmed = self.trimmed_any(&[part], after);
        Ok(page)
    }

    /// True if any of `parts` had entries after `after` trimmed away.
    fn trimmed_any(&self, parts: &[u16], after: u64) -> bool {
        parts.iter().any(|&p| self.trimmed_through(p) > after)
    }

    /// Latest events of `parts` whose paths are at or after `from` and start
    /// with `within`, merged in path order, appended to `out` up to `limit`
    /// entries in all.
    pub(super) fn merge_latest(
        &self,
        parts: impl Iterator<Item = u16>,
        from: Bound<&str>,
        within: &str,
        limit: usize,
        out: &mut Vec<Stored>,
    ) -> Result<(), StoreError> {
        if out.len() >= limit {
            return Ok(());
        }
        let mut iters = Vec::new();
        let mut heads = BinaryHeap::new();
        for part in parts {
            let start = match from {
                Bound::Included(p) => Bound::Included(keys::latest(part, p)),
                Bound::Excluded(p) => Bound::Excluded(keys::latest(part, p)),
                Bound::Unbounded => Bound::Included(keys::latest(part, "")),
            };
            let end = match within {
                "" => keys::partition_end(keys::LATEST, part),
                _ => {
                    // Just past every path starting with `within`.
                    let mut end = keys::latest(part, within);
                    *end.last_mut().expect("a non-empty prefix") += 1;
                    end
                }
            };
            let mut iter = self.tree.range::<Vec<u8>, _>((start, Bound::Excluded(end)));
            if let Some(item) = iter.next() {
                let (key, raw) = item?;
                heads.push(Reverse((
                    key.subslice(3, key.len() - 3),
                    iters.len(),
                    key,
                    raw,
                )));
            }
            iters.push(iter);
        }
        // Ordered by path (the key after namespace and partition).
        while let Some(Reverse((_, at, key, raw))) = heads.pop() {
            if out.len() >= limit {
                break;
            }
            out.push(Self::decode_latest(&key, raw)?);
            if let Some(item) = iters[at].next() {
                let (key, raw) = item?;
                heads.push(Reverse((key.subslice(3, key.len() - 3), at, key, raw)));
            }
        }
        Ok(())
    }
}
