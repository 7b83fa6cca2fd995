//! Writing a commit: the keys it sets and removes (values, history pages,
//! its pending log record or a fold of the pending entries, log trims), its
//! intent, then the keys one by one (one batch for a commit too big for an
//! intent).

use super::pending_log::{self, PendingLog};
use super::*;

/// Most sealed log records one partition's trim removes per commit.
const MAX_TRIM_RECORDS: usize = 256;

/// What a commit does to the pending log entries once it is written.
pub(super) enum LogChange {
    /// Its entries join them (its pending record has this first seq).
    Append(u64, Vec<(u16, Vec<pending_log::Entry>)>),
    /// They were folded into the partitions' logs, its own with them.
    Fold,
}

/// What one commit writes, and what the store learns once it is written.
pub(super) struct Planned {
    /// Keys set and removed, in the order they are written.
    pub ops: Vec<intent::Op>,
    /// Latest keys rewritten, with their records (for the cache).
    pub latest: pages::LatestWrites,
    /// The change to the pending log entries.
    pub log: Option<LogChange>,
    /// Partitions whose trimmed mark rises, and to what.
    pub trims: Vec<(u16, u64)>,
}

impl SledStore {
    /// What `commit` writes, in the order it writes it. Reads the latest
    /// keys it rewrites from `state` first, and the pending log entries
    /// from `pending`; changes neither.
    pub(super) fn ops_of(
        &self,
        commit: &Commit,
        state: &mut CommitState,
        pending: &PendingLog,
    ) -> Result<Planned, StoreError> {
        let CommitState { latest, trim_next } = state;
        let mut overlay = pages::Overlay::new(&self.tree, self.layout, latest);
        // Each partition's new log entries, in seq order; and all of them
        // in seq order, as the pending record holds them.
        let mut logged: std::collections::BTreeMap<u16, Vec<pending_log::Entry>> =
            Default::default();
        let mut record = LogRecordBuilder::default();
        let mut bytes = 0;
        let mut expiries = Vec::new();
        for entry in &commit.entries {
            let event = &entry.event;
            let order = keys::order(&event.version, &entry.digest);
            let name = keys::logged(&event.path, &order);
            let item = pages::Item {
                order: IVec::from(order),
                record: encode(event, &entry.digest, Some(entry.seq), entry.late)?.into(),
            };
            if entry.late {
                overlay.add_history(&event.path, item)?;
            } else {
                // A value that will expire: the expiry sweep finds it here.
                if let (Some(at), Some(_)) = (event.expires_at, &event.value) {
                    let part = self.layout.partition_of(&event.path);
                    expiries.push(keys::expiry(at, part, &event.path, &item.order));
                }
                overlay.set_latest(&event.path, item)?;
            }
            record.push(entry.seq, &name)?;
            bytes += name.len();
            let part = self.layout.partition_of(&event.path);
            logged
                .entry(part)
                .or_default()
                .push((entry.seq, std::sync::Arc::from(name)));
        }
        let writes = overlay.into_writes()?;
        // The order readers rely on while the keys appear one by one: pages
        // (`H`) before latest values (`L`), so a reader that takes a path's
        // latest value first never finds a record in neither (see
        // `history`); log entries after the events they name; a trimmed
        // mark before the records it trims.
        let mut ops: Vec<intent::Op> = Vec::with_capacity(writes.values.len() + 4);
        ops.extend(
            writes
                .values
                .into_iter()
                .map(|(key, value)| (key, Some(value))),
        );
        ops.extend(expiries.into_iter().map(|k| (k, Some(IVec::default()))));
        let entries: usize = logged.values().map(Vec::len).sum();
        let mut folded = Vec::new();
        let log = if entries == 0 {
            None
        } else if pending.full_with(entries, bytes, self.fold_entries)
            || commit
                .trim_below
                .is_some_and(|below| pending.records.first().is_some_and(|&f| f < below))
        {
            // (Or the retention wants entries that are still pending: only
            // the partitions' records are trimmed.)
            // Fold: every partition's pending entries, then this commit's,
            // become one record of its log; the pending records go.
            let mut parts: Vec<u16> = pending.by_part.keys().copied().collect();
            parts.extend(logged.keys().copied());
            parts.sort_unstable();
            parts.dedup();
            for part in parts {
                let mut record = LogRecordBuilder::default();
                let old = pending.by_part.get(&part).into_iter().flatten();
                let new = logged.get(&part).into_iter().flatten();
                for (seq, name) in old.chain(new) {
                    record.push(*seq, name)?;
                }
                if let Some(last) = record.last() {
                    ops.push((keys::log(part, last).to_vec(), Some(record.finish().into())));
                    folded.push(part);
                }
            }
            ops.extend(
                pending
                    .records
                    .iter()
                    .map(|first| (keys::pending(*first).to_vec(), None)),
            );
            Some(LogChange::Fold)
        } else {
            let first = commit.entries[0].seq;
            ops.push((keys::pending(first).to_vec(), Some(record.finish().into())));
            Some(LogChange::Append(first, logged.into_iter().collect()))
        };
        let mut trims = Vec::new();
        if let Some(below) = commit.trim_below {
            // The partitions a fold just added to, and one more in turn, so
            // that every partition is trimmed now and then.
            let turn = (*trim_next % self.layout.partitions()) as u16;
            *trim_next = trim_next.wrapping_add(1);
            if !folded.contains(&turn) {
                folded.push(turn);
            }
            for part in folded {
                let records = self
                    .tree
                    .range(keys::log(part, 0)..keys::log(part, below))
                    .keys()
                    .take(MAX_TRIM_RECORDS)
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(last) = records.last().and_then(|k| keys::seq_of_log_key(k)) else {
                    continue;
                };
                ops.push((
                    keys::meta(&keys::trimmed_meta(part)),
                    Some(IVec::from(&last.to_be_bytes()[..])),
                ));
                ops.extend(records.into_iter().map(|key| (key.to_vec(), None)));
                trims.push((part, last));
            }
        }
        let head = LogHead {
            seq: commit.head_seq,
            clock: commit.clock,
        };
        ops.push((
            keys::meta(keys::HEAD_META),
            Some(IVec::from(&head.encode()[..])),
        ));
        Ok(Planned {
            ops,
            latest: writes.latest,
            log,
            trims,
        })
    }

    /// Writes `ops` as one commit that a crash cannot tear: its intent
    /// first, then each key (see `intent`); one `sled::Batch` when the
    /// intent would be over [`intent::MAX_BYTES`].
    pub(super) fn apply(&self, ops: Vec<intent::Op>) -> Result<(), StoreError> {
        if intent::encoded_len(&ops) > intent::MAX_BYTES {
            let mut batch = sled::Batch::default();
            for (key, value) in ops {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            // The previous commit's intent must not be replayed over this
            // one's keys.
            batch.remove(keys::meta(keys::INTENT_META));
            self.tree.apply_batch(batch)?;
            return Ok(());
        }
        self.tree
            .insert(keys::meta(keys::INTENT_META), intent::encode(&ops)?)?;
        let written = self.write_keys(ops);
        if written.is_err() {
            self.torn.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Sets or removes (`None`) each key, in order, one sled insert each.
    pub(super) fn write_keys<K: AsRef<[u8]>, V: Into<IVec>>(
        &self,
        ops: impl IntoIterator<Item = (K, Option<V>)>,
    ) -> Result<(), StoreError> {
        for (key, value) in ops {
            #[cfg(test)]
            if self
                .key_writes_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(StoreError::Failed("injected key write failure".into()));
            }
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        Ok(())
    }
}
