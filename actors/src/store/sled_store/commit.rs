//! Writing a commit: the keys it sets and removes (values, history pages,
//! the partitions' log records, log trims), its intent, then the keys one
//! by one (one batch for a commit too big for an intent).

use super::*;

/// Most sealed log records one partition's trim removes per commit.
const MAX_TRIM_RECORDS: usize = 256;

/// What one commit writes, and what the commit state learns once it is
/// written.
pub(super) struct Planned {
    /// Keys set and removed, in the order they are written.
    pub ops: Vec<intent::Op>,
    /// Latest keys rewritten, with their records (for the cache).
    pub latest: pages::LatestWrites,
    /// Open log records rewritten.
    pub open_logs: Vec<(u16, LogRecordBuilder)>,
    /// Partitions whose trimmed mark rises, and to what.
    pub trims: Vec<(u16, u64)>,
}

impl SledStore {
    /// What `commit` writes, in the order it writes it. Reads the latest
    /// keys and open log records it rewrites from `state` first; changes
    /// nothing in it.
    pub(super) fn ops_of(
        &self,
        commit: &Commit,
        state: &mut CommitState,
    ) -> Result<Planned, StoreError> {
        let CommitState {
            latest,
            open_logs,
            trim_next,
        } = state;
        let mut overlay = pages::Overlay::new(&self.tree, self.layout, latest);
        // Each partition's new log entries, in seq order.
        let mut logged: std::collections::BTreeMap<u16, Vec<(u64, Vec<u8>)>> = Default::default();
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
                overlay.set_latest(&event.path, item)?;
            }
            let part = self.layout.partition_of(&event.path);
            logged.entry(part).or_default().push((entry.seq, name));
        }
        let writes = overlay.into_writes()?;
        // The order readers rely on while the keys appear one by one: pages
        // (`H`) before latest values (`L`), so a reader that takes a path's
        // latest value first never finds a record in neither (see
        // `history`); a log record after the events it names; a sealed log
        // record before the open record that no longer holds its entries
        // (see `log_read`); a trimmed mark before the records it trims.
        let mut ops: Vec<intent::Op> =
            Vec::with_capacity(writes.values.len() + 2 * logged.len() + 2);
        ops.extend(
            writes
                .values
                .into_iter()
                .map(|(key, value)| (key, Some(value))),
        );
        let mut new_open = Vec::with_capacity(logged.len());
        let mut sealed = Vec::new();
        for (part, entries) in logged {
            let mut open = match open_logs.get(&part) {
                Some(open) => open.clone(),
                None => match self.tree.get(keys::log(part, keys::OPEN_LOG_SEQ))? {
                    Some(raw) => LogRecordBuilder::resume(&raw)?,
                    None => LogRecordBuilder::default(),
                },
            };
            let adding: usize = entries.iter().map(|(_, name)| 12 + name.len()).sum();
            if let Some(last) = open
                .last()
                .filter(|_| open.size() + adding > log_record::SEAL_BYTES)
            {
                let full = std::mem::take(&mut open);
                ops.push((keys::log(part, last).to_vec(), Some(full.finish().into())));
                sealed.push(part);
            }
            for (seq, name) in &entries {
                open.push(*seq, name)?;
            }
            ops.push((
                keys::log(part, keys::OPEN_LOG_SEQ).to_vec(),
                Some(open.clone().finish().into()),
            ));
            new_open.push((part, open));
        }
        let mut trims = Vec::new();
        if let Some(below) = commit.trim_below {
            // The partitions that just sealed a record, and one more in
            // turn, so that every partition is trimmed now and then.
            let turn = (*trim_next % self.layout.partitions()) as u16;
            *trim_next = trim_next.wrapping_add(1);
            if !sealed.contains(&turn) {
                sealed.push(turn);
            }
            for part in sealed {
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
            open_logs: new_open,
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
