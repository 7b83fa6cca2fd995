//! Opening a store: bringing an older format to this one in place, and
//! completing a commit that a crash cut short, from its intent.

use super::*;

impl SledStore {
    /// Brings a store to [`FORMAT`]. Formats 2 and 3 differ only in what they
    /// wrote (no commit intents; no log entries for late events), so their
    /// format is just set. Format 1 kept one log key per seq (a
    /// bare history key) and the head seq and clock under two meta keys;
    /// those are converted. Its one-record history keys already are
    /// one-record pages, except the one holding a path's current record,
    /// which duplicates the latest value and is removed.
    /// Each step can be repeated, so a crash halfway is harmless: records
    /// already converted carry the tag and are skipped, and the format is
    /// set last, together with the head.
    pub(super) fn upgrade(&self) -> Result<(), StoreError> {
        match self.tree.get(keys::meta(keys::FORMAT_META))? {
            Some(v) if v.as_ref() == FORMAT.to_be_bytes() => return Ok(()),
            Some(v) if v.as_ref() == 2u64.to_be_bytes() || v.as_ref() == 3u64.to_be_bytes() => {
                // Format 2 applied each commit as one `sled::Batch` and
                // wrote no intents; format 3 gave a late event (history
                // only) no seq and no log entry. Their data is format 4's as
                // it is: a record without the `late` flag reads as not late,
                // and an old late record keeps `seq: None`.
                self.tree
                    .insert(keys::meta(keys::FORMAT_META), &FORMAT.to_be_bytes())?;
                self.db.flush()?;
                return Ok(());
            }
            Some(v) => {
                return Err(StoreError::Failed(format!(
                    "the store's format {} is not {FORMAT}, the one this build reads",
                    u64_of(&v).map_or_else(|| format!("{v:?}"), |f| f.to_string())
                )))
            }
            None => {}
        }
        self.rewrite_in_chunks(
            keys::log(0).to_vec(),
            keys::log(u64::MAX).to_vec(),
            |key, raw, batch| {
                if !log_record::is_record(&raw) {
                    let mut record = Vec::with_capacity(5 + raw.len());
                    record.push(log_record::TAG);
                    record.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    record.extend_from_slice(&raw);
                    batch.insert(key, record);
                }
                Ok(())
            },
        )?;
        self.remove_current_history_keys()?;
        let seq = self.tree.get(keys::meta("seq"))?;
        let clock = self.tree.get(keys::meta("clock"))?;
        let mut batch = sled::Batch::default();
        match (seq.as_deref().map(u64_of), clock.as_deref().map(u64_of)) {
            (None, None) => {}
            (Some(Some(seq)), Some(Some(clock))) => {
                let head = LogHead { seq, clock };
                batch.insert(keys::meta(keys::HEAD_META), &head.encode()[..]);
                batch.remove(keys::meta("seq"));
                batch.remove(keys::meta("clock"));
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "a format-1 store without a readable log head and clock".into(),
                ))
            }
        }
        batch.insert(keys::meta(keys::FORMAT_META), &FORMAT.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Format 1 upgrade: removes the history key of every path's current
    /// record (the latest value holds it now), in chunks; repeating it is
    /// harmless.
    pub(super) fn remove_current_history_keys(&self) -> Result<(), StoreError> {
        self.rewrite_in_chunks(
            vec![keys::LATEST],
            vec![keys::LATEST + 1],
            |key, raw, batch| {
                if !pages::is_list(&raw) {
                    let stored = Self::decode_latest(&key, raw)?;
                    let path = &stored.event.path;
                    batch.remove(keys::history(path, &stored.event.version, &stored.digest));
                }
                Ok(())
            },
        )
    }

    /// Calls `each` for every key in `from..end`, applying what it puts in
    /// the batch every [`UPGRADE_CHUNK`] keys (upgrades of big stores stay
    /// in bounded batches).
    pub(super) fn rewrite_in_chunks(
        &self,
        mut from: Vec<u8>,
        end: Vec<u8>,
        mut each: impl FnMut(IVec, IVec, &mut sled::Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            let mut batch = sled::Batch::default();
            let mut seen = 0;
            let mut last = None;
            for item in self.tree.range(from.clone()..end.clone()) {
                let (key, raw) = item?;
                last = Some(key.clone());
                each(key, raw, &mut batch)?;
                seen += 1;
                if seen == UPGRADE_CHUNK {
                    break;
                }
            }
            self.tree.apply_batch(batch)?;
            match last {
                Some(key) if seen == UPGRADE_CHUNK => {
                    from = key.to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Completes the commit whose intent is stored (a crash may have cut it
    /// short), then removes the intent, durably.
    pub(super) fn finish_intent(&self) -> Result<(), StoreError> {
        let Some(raw) = self.tree.get(keys::meta(keys::INTENT_META))? else {
            return Ok(());
        };
        let ops = intent::decode(&raw)?;
        let mut missing = 0;
        for (key, value) in &ops {
            if self.tree.get(key)?.as_deref() != *value {
                missing += 1;
            }
        }
        if missing > 0 {
            log::warn!(
                "the last commit was cut short: completed {missing} of its {} writes",
                ops.len()
            );
        }
        self.write_keys(ops)?;
        self.tree.remove(keys::meta(keys::INTENT_META))?;
        self.db.flush()?;
        Ok(())
    }
}
