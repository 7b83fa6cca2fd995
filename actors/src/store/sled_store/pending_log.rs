//! Log entries not yet folded into the partitions' logs: in sled as one
//! record per commit (`Q <first seq>`, which makes them durable), and in
//! memory by partition (which is where readers take them from).
//!
//! A commit appends its record and its entries here; once the pending
//! entries pass [`FOLD_ENTRIES`] or [`FOLD_BYTES`], a commit *folds* them
//! instead: it writes each partition's pending entries (its own included)
//! as one record of that partition's log and removes the pending records,
//! then the memory is cleared. Readers take a partition's pending entries
//! from memory first, then its records from sled: a fold writes sled before
//! it clears the memory, so an entry is always in one or the other (both,
//! for a moment: readers skip seqs they have). When the store opens, the
//! memory is rebuilt from the pending records, leaving out the entries of a
//! partition dropped since (their seqs are at or below its trimmed mark).

use std::collections::HashMap;
use std::sync::Arc;

use super::*;

/// Pending entries past which a commit folds.
pub(super) const FOLD_ENTRIES: usize = 16_384;
/// Bytes of pending event names past which a commit folds.
pub(super) const FOLD_BYTES: usize = 1 << 20;

/// One pending entry: its seq and event name (`path \0 order`).
pub(super) type Entry = (u64, Arc<[u8]>);

/// The pending entries, by partition.
#[derive(Default)]
pub(super) struct PendingLog {
    /// Per partition, its pending entries in seq order.
    pub by_part: HashMap<u16, Vec<Entry>>,
    /// First seqs of the pending records in sled.
    pub records: Vec<u64>,
    /// Entries in all.
    pub entries: usize,
    /// Bytes of names in all.
    pub bytes: usize,
}

impl PendingLog {
    /// Adds a commit's entries (of partitions, in seq order) and its record.
    pub fn append(&mut self, first: u64, logged: &[(u16, Vec<Entry>)]) {
        self.records.push(first);
        for (part, entries) in logged {
            self.entries += entries.len();
            self.bytes += entries.iter().map(|(_, n)| n.len()).sum::<usize>();
            self.by_part
                .entry(*part)
                .or_default()
                .extend(entries.iter().cloned());
        }
    }

    /// True if adding `entries` entries of `bytes` bytes should fold (past
    /// `max_entries` entries, or [`FOLD_BYTES`]).
    pub fn full_with(&self, entries: usize, bytes: usize, max_entries: usize) -> bool {
        self.entries + entries > max_entries || self.bytes + bytes > FOLD_BYTES
    }

    /// Forgets everything (after a fold).
    pub fn clear(&mut self) {
        *self = PendingLog::default();
    }

    /// Forgets partition `part`'s entries (a dropped partition).
    pub fn forget(&mut self, part: u16) {
        if let Some(entries) = self.by_part.remove(&part) {
            self.entries -= entries.len();
            self.bytes -= entries.iter().map(|(_, n)| n.len()).sum::<usize>();
        }
    }

    /// Partition `part`'s entries with `after < seq <= until`.
    pub fn of(&self, part: u16, after: u64, until: u64) -> Vec<Entry> {
        let Some(entries) = self.by_part.get(&part) else {
            return Vec::new();
        };
        let from = entries.partition_point(|(seq, _)| *seq <= after);
        entries[from..]
            .iter()
            .take_while(|(seq, _)| *seq <= until)
            .cloned()
            .collect()
    }
}

impl SledStore {
    /// The pending entries as the pending records in sled hold them,
    /// without those of partitions dropped since.
    pub(super) fn read_pending(&self) -> Result<PendingLog, StoreError> {
        let mut pending = PendingLog::default();
        let range = keys::pending(0)..=keys::pending(u64::MAX);
        for item in self.tree.range(range) {
            let (key, raw) = item?;
            let first = keys::seq_of_pending_key(&key)
                .ok_or_else(|| StoreError::Corrupt("bad pending log key".into()))?;
            let mut logged: HashMap<u16, Vec<Entry>> = HashMap::new();
            for entry in log_record::entries(&raw) {
                let (seq, name) = entry?;
                let (path, _) = keys::split_logged_key(name).ok_or_else(|| {
                    StoreError::Corrupt(format!("pending log entry {seq} is damaged"))
                })?;
                let part = self.layout.partition_of_str(path);
                if seq > self.trimmed_through(part) {
                    logged.entry(part).or_default().push((seq, Arc::from(name)));
                }
            }
            let mut logged: Vec<(u16, Vec<Entry>)> = logged.into_iter().collect();
            logged.sort_by_key(|(part, _)| *part);
            pending.append(first, &logged);
        }
        Ok(pending)
    }

    /// The pending entries, even after a panic elsewhere held them.
    pub(super) fn pending_read(&self) -> std::sync::RwLockReadGuard<'_, PendingLog> {
        self.pending
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pending entries, for a change.
    pub(super) fn pending_write(&self) -> std::sync::RwLockWriteGuard<'_, PendingLog> {
        self.pending
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        (seq, Arc::from(&b"p\0o"[..]))
    }

    #[test]
    fn entries_are_kept_by_partition_and_read_by_range() {
        let mut p = PendingLog::default();
        p.append(1, &[(3, vec![entry(1), entry(2)]), (5, vec![entry(3)])]);
        p.append(4, &[(3, vec![entry(4)])]);
        assert_eq!((p.entries, p.records.clone()), (4, vec![1, 4]));
        let seqs = |v: Vec<Entry>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(p.of(3, 0, 10)), vec![1, 2, 4]);
        assert_eq!(seqs(p.of(3, 1, 2)), vec![2]);
        assert_eq!(seqs(p.of(9, 0, 10)), Vec::<u64>::new());
        assert!(!p.full_with(1, 1, FOLD_ENTRIES));
        assert!(p.full_with(FOLD_ENTRIES, 0, FOLD_ENTRIES));
        assert!(p.full_with(0, FOLD_BYTES, FOLD_ENTRIES));
        p.forget(3);
        assert_eq!(p.entries, 1);
        p.clear();
        assert_eq!((p.entries, p.bytes, p.records.len()), (0, 0, 0));
    }
}
