//! Opening a store: bringing an older format to this one in place, and
//! completing a commit that a crash cut short, from its intent.

use super::*;

/// Meta flag: the upgrade from format 4 has set the partitions' trimmed marks.
pub(super) const MARKS_SET: &str = "upgrade/marks";

impl SledStore {
    /// The store's format: `None` for a new store or a format-1 one (which
    /// had no format key); an error for one this build cannot read.
    pub(super) fn format_of(tree: &sled::Tree) -> Result<Option<u64>, StoreError> {
        match tree.get(keys::meta(keys::FORMAT_META))? {
            None => Ok(None),
            Some(v) => match u64_of(&v) {
                Some(5) => Err(StoreError::Failed(
                    "the store's format 5 was a development format (2026-12-05) that no \
                     release wrote; this build cannot read it"
                        .into(),
                )),
                Some(f @ 2..=FORMAT) => Ok(Some(f)),
                _ => Err(StoreError::Failed(format!(
                    "the store's format {} is not one this build reads (2 to {FORMAT}, or 1)",
                    u64_of(&v).map_or_else(|| format!("{v:?}"), |f| f.to_string())
                ))),
            },
        }
    }

    /// Brings a store of `format` to [`FORMAT`], in place.
    ///
    /// - Format 1 kept one log key per seq (a bare history key) and the head
    ///   seq and clock under two meta keys; those are converted to format
    ///   4's. Its one-record history keys already are one-record pages,
    ///   except the one holding a path's current record, which duplicates
    ///   the latest value and is removed.
    /// - Formats 2 to 4 have format 4's keys: 2 wrote no commit intents and
    ///   3 gave a late event (history only) no seq and no log entry; a record
    ///   without the `late` flag reads as not late, and an old late record
    ///   keeps `seq: None`.
    /// - Format 4 to 6 moves every key under its partition and splits the
    ///   node-wide log into the partitions' logs (see [`Self::partition_keys`]).
    ///
    /// Each step can be repeated, so a crash halfway is harmless, and the
    /// format is set last.
    pub(super) fn upgrade(&self, format: Option<u64>) -> Result<(), StoreError> {
        match format {
            Some(FORMAT) => return Ok(()),
            Some(_) => self.partition_keys()?,
            None => {
                self.upgrade_format_1()?;
                self.partition_keys()?;
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(keys::meta(keys::FORMAT_META), &FORMAT.to_be_bytes());
        batch.remove(keys::meta(MARKS_SET));
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Format 1 to format 4's keys (see [`Self::upgrade`]).
    fn upgrade_format_1(&self) -> Result<(), StoreError> {
        self.rewrite_in_chunks(
            keys::v4::log(0).to_vec(),
            keys::v4::log(u64::MAX).to_vec(),
            |key, raw, batch| {
                if raw.first() != Some(&log_record::V4_TAG) {
                    let mut record = Vec::with_capacity(5 + raw.len());
                    record.push(log_record::V4_TAG);
                    record.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    record.extend_from_slice(&raw);
                    batch.insert(key, record);
                }
                Ok(())
            },
        )?;
        self.rewrite_in_chunks(
            vec![keys::v4::LATEST],
            vec![keys::v4::LATEST + 1],
            |key, raw, batch| {
                if !pages::is_list(&raw) {
                    let text = std::str::from_utf8(&key[1..])
                        .map_err(|_| StoreError::Corrupt("latest key is not UTF-8".into()))?;
                    let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let stored = decode(path, raw)?;
                    let path = &stored.event.path;
                    batch.remove(keys::v4::history(
                        path,
                        &stored.event.version,
                        &stored.digest,
                    ));
                }
                Ok(())
            },
        )?;
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
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Format 4 to 6: every latest value and history page moves under its
    /// partition (`l path` to `L part path`, `h …` to `H part …`), and each
    /// record of the node-wide log is split into sealed records of the
    /// partitions it names. First, every partition's trimmed mark is set to
    /// what the old log had trimmed (just below its first seq), so cursors
    /// that it could not honour are not honoured after.
    fn partition_keys(&self) -> Result<(), StoreError> {
        if self.tree.get(keys::meta(MARKS_SET))?.is_none() {
            let head = self.log_head()?.seq;
            let first = match self
                .tree
                .range(keys::v4::log(0)..keys::v4::log(u64::MAX))
                .next()
            {
                Some(item) => keys::v4::seq_of_log_key(&item?.0)
                    .ok_or_else(|| StoreError::Corrupt("bad format-4 log key".into()))?,
                None => head + 1,
            };
            let mut batch = sled::Batch::default();
            if first > 1 {
                for part in 0..self.layout.partitions() {
                    let part = part as u16;
                    batch.insert(
                        keys::meta(&keys::trimmed_meta(part)),
                        &(first - 1).to_be_bytes(),
                    );
                }
            }
            batch.insert(keys::meta(MARKS_SET), &[1u8][..]);
            self.tree.apply_batch(batch)?;
        }
        let layout = self.layout;
        let moved = |ns: u8| {
            move |key: IVec, raw: IVec, batch: &mut sled::Batch| {
                let rest = &key[1..];
                let path_end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let path = std::str::from_utf8(&rest[..path_end])
                    .map_err(|_| StoreError::Corrupt("a key whose path is not UTF-8".into()))?;
                let mut new = keys::partition_start(ns, layout.partition_of_str(path)).to_vec();
                new.extend_from_slice(rest);
                batch.insert(new, raw);
                batch.remove(key);
                Ok(())
            }
        };
        self.rewrite_in_chunks(
            vec![keys::v4::LATEST],
            vec![keys::v4::LATEST + 1],
            moved(keys::LATEST),
        )?;
        self.rewrite_in_chunks(
            vec![keys::v4::HISTORY],
            vec![keys::v4::HISTORY + 1],
            moved(keys::HISTORY),
        )?;
        self.rewrite_in_chunks(
            keys::v4::log(0).to_vec(),
            keys::v4::log(u64::MAX).to_vec(),
            |key, raw, batch| {
                let first = keys::v4::seq_of_log_key(&key)
                    .ok_or_else(|| StoreError::Corrupt("bad format-4 log key".into()))?;
                let mut records: std::collections::BTreeMap<u16, LogRecordBuilder> =
                    Default::default();
                for (seq, name) in (first..=u64::MAX).zip(log_record::v4_entries(&raw)?) {
                    let (path, _) = keys::split_logged_key(name).ok_or_else(|| {
                        StoreError::Corrupt(format!("format-4 log entry {seq} is damaged"))
                    })?;
                    let part = layout.partition_of_str(path);
                    records.entry(part).or_default().push(seq, name)?;
                }
                for (part, record) in records {
                    let last = record.last().expect("a record with entries");
                    batch.insert(&keys::log(part, last)[..], record.finish());
                }
                batch.remove(key);
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
