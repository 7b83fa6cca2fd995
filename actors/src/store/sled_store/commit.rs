//! Writing a commit: the keys it sets and removes, its intent, then the keys
//! one by one (one batch for a commit too big for an intent).

use super::*;

impl SledStore {
    /// What `commit` writes, in the order it writes it, and the records of
    /// the latest keys it rewrites (for the cache, once written). Reads the
    /// latest keys it rewrites from `cache` first.
    pub(super) fn ops_of(
        &self,
        commit: &Commit,
        cache: &mut LatestCache,
    ) -> Result<(Vec<intent::Op>, pages::LatestWrites), StoreError> {
        let mut overlay = pages::Overlay::new(&self.tree, cache);
        let mut log = LogRecordBuilder::default();
        for entry in &commit.entries {
            let event = &entry.event;
            let order = keys::order(&event.version, &entry.digest);
            let item = pages::Item {
                order: IVec::from(&order[..]),
                record: encode(event, &entry.digest, Some(entry.seq), entry.late)?.into(),
            };
            if entry.late {
                overlay.add_history(&event.path, item)?;
            } else {
                overlay.set_latest(&event.path, item)?;
            }
            let hkey = keys::history_at_order(&event.path, &order);
            log.push(entry.seq, &hkey[1..])?;
        }
        let writes = overlay.into_writes()?;
        // The order readers rely on while the keys appear one by one: pages
        // (`h`, first in key order) before latest values (`l`), so a reader
        // that takes a path's latest value first never finds a record in
        // neither (see `history`); a log record after the events it names.
        let mut ops: Vec<intent::Op> = Vec::with_capacity(writes.values.len() + 2);
        ops.extend(
            writes
                .values
                .into_iter()
                .map(|(key, value)| (key, Some(value))),
        );
        if let Some((first, record)) = log.finish() {
            ops.push((keys::log(first).to_vec(), Some(record.into())));
        }
        if let Some(below) = commit.trim_below {
            // Whole records only: a record ends just before the next one
            // starts, so one that reaches `below` stays (and the newest
            // one always does).
            let mut records = self.tree.range(keys::log(0)..keys::log(u64::MAX)).keys();
            let mut current = records.next().transpose()?;
            while let Some(key) = current {
                let Some(next) = records.next().transpose()? else {
                    break;
                };
                let next_first = keys::seq_of_log_key(&next)
                    .ok_or_else(|| StoreError::Corrupt("bad log key".into()))?;
                if next_first > below {
                    break;
                }
                ops.push((key.to_vec(), None));
                current = Some(next);
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
        Ok((ops, writes.latest))
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
