//! [`Store`] on sled: one tree, namespaced keys with the partition in each
//! (see `keys`), commits that a crash cannot tear (see `intent`), a change
//! log per partition (see `log_record`).

use std::ops::Bound;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use sled::IVec;

use super::intent;
use super::keys;
use super::latest_cache::LatestCache;
use super::log_record::{self, LogRecordBuilder};
use super::pages;
use super::record::{decode, encode, Stored};
use super::{Commit, KeyOps, KeyValues, LogHead, LogPage, Store, StoreError};
use crate::model::{AsOf, Digest, Layout, Path, Version};

mod commit;
mod compact;
mod log_read;
mod partition;
mod pending_log;
mod upgrade;

use pending_log::PendingLog;

/// The on-disk format this build writes and reads (see `keys`).
pub const FORMAT: u64 = 6;

/// How long [`SledStore::open`] waits for a directory lock held elsewhere.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Keys converted per batch when upgrading an older store.
const UPGRADE_CHUNK: usize = 4096;

/// A big-endian u64 meta value.
fn u64_of(raw: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(raw).ok().map(u64::from_be_bytes)
}

/// sled's own period for writing and fsyncing its buffers in the background
/// (its default), when nothing else is asked.
pub const SLED_FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Opens the sled database of `config`, waiting up to [`LOCK_WAIT`] for a
/// directory lock held elsewhere: when a database of this process was just
/// dropped, its background threads may hold the lock for a moment longer.
pub(super) fn open_waiting(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// What only commits (one at a time) touch: they read it instead of sled.
#[derive(Default)]
struct CommitState {
    /// Recently written latest keys.
    latest: LatestCache,
    /// The partition whose log tail the next commit trims (round robin).
    trim_next: u32,
}

/// The sled-backed store of one node.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    layout: Layout,
    /// Per partition, the highest seq trimmed from its log (0: none). Raised
    /// before the records go, so a reader that checks it after reading knows
    /// whether what it read is whole.
    trimmed: Vec<AtomicU64>,
    /// Per partition, the greatest history floor of its paths (0: none).
    floors: Vec<AtomicU64>,
    state: Mutex<CommitState>,
    /// Log entries not yet folded into the partitions' logs.
    pending: RwLock<PendingLog>,
    /// Pending entries past which a commit folds (tests make it small).
    fold_entries: usize,
    /// Set when a commit failed after its intent was written: part of it may
    /// be in the tree, and no later commit may build on that (the intent
    /// completes it when the store is next opened).
    torn: AtomicBool,
    /// Tests: key writes of commits allowed before they fail.
    #[cfg(test)]
    key_writes_left: std::sync::atomic::AtomicUsize,
}

impl SledStore {
    /// Opens (or creates, with the default layout) the store in `dir`, with
    /// `cache_bytes` of page cache. See [`SledStore::open_with`].
    pub fn open(dir: &FsPath, cache_bytes: u64) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, cache_bytes, SLED_FLUSH_EVERY, Layout::default())
    }

    /// Opens (or creates) the store in `dir`, with `cache_bytes` of page
    /// cache. A new store takes `layout`; an existing one keeps its own. A
    /// store written in an older format is upgraded in place first.
    ///
    /// sled's background thread writes and fsyncs its buffers every
    /// `flush_every` (it also reclaims space in the time between). `lazy`
    /// durability sets it to its own period, so that what a crash may lose is
    /// what `--lazy-flush-ms` says.
    ///
    /// sled locks the directory, and when a store of this process was just
    /// dropped its background threads may hold the lock for a moment longer:
    /// a lock held elsewhere is waited for up to [`LOCK_WAIT`].
    pub fn open_with(
        dir: &FsPath,
        cache_bytes: u64,
        flush_every: Duration,
        layout: Layout,
    ) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(
                flush_every.as_millis().clamp(1, u64::MAX as u128) as u64
            ))
            .mode(sled::Mode::HighThroughput);
        let db = open_waiting(&config)?;
        let tree = db.open_tree("spread")?;
        // Refuse a format this build cannot read before writing anything.
        let format = Self::format_of(&tree)?;
        let layout = Self::stored_layout(&tree, layout)?;
        let mut store = SledStore {
            db,
            tree,
            layout,
            trimmed: Vec::new(),
            floors: Vec::new(),
            state: Mutex::default(),
            pending: RwLock::default(),
            fold_entries: pending_log::FOLD_ENTRIES,
            torn: AtomicBool::new(false),
            #[cfg(test)]
            key_writes_left: usize::MAX.into(),
        };
        // An intent names raw keys: complete it in the format it was
        // written in, before an upgrade moves keys.
        store.finish_intent()?;
        store.upgrade(format)?;
        store.trimmed = store.read_trimmed()?;
        store.floors = store.read_floors()?;
        store.pending = RwLock::new(store.read_pending()?);
        Ok(store)
    }

    /// The layout kept in `tree`, or `default`, written there, for a store
    /// that has none yet.
    fn stored_layout(tree: &sled::Tree, default: Layout) -> Result<Layout, StoreError> {
        let read = |name| -> Result<Option<u64>, StoreError> {
            match tree.get(keys::meta(name))? {
                None => Ok(None),
                Some(raw) => u64_of(&raw)
                    .map(Some)
                    .ok_or_else(|| StoreError::Corrupt(format!("bad meta value '{name}'"))),
            }
        };
        let (parts, depth) = (read(keys::PARTITIONS_META)?, read(keys::SHARD_DEPTH_META)?);
        let layout = Layout::new(
            parts.map_or(default.partitions(), |p| p.min(u64::from(u32::MAX)) as u32),
            depth.map_or(default.shard_depth(), |d| d.min(usize::MAX as u64) as usize),
        )
        .map_err(|e| StoreError::Corrupt(format!("the stored layout: {e}")))?;
        if parts.is_none() || depth.is_none() {
            let mut batch = sled::Batch::default();
            batch.insert(
                keys::meta(keys::PARTITIONS_META),
                &u64::from(layout.partitions()).to_be_bytes(),
            );
            batch.insert(
                keys::meta(keys::SHARD_DEPTH_META),
                &(layout.shard_depth() as u64).to_be_bytes(),
            );
            tree.apply_batch(batch)?;
        }
        Ok(layout)
    }

    /// Every partition's trimmed mark, from meta.
    fn read_trimmed(&self) -> Result<Vec<AtomicU64>, StoreError> {
        self.read_marks("trimmed/")
    }

    /// Per partition, the u64 of meta `<prefix><part>` (0 when absent).
    pub(super) fn read_marks(&self, prefix: &str) -> Result<Vec<AtomicU64>, StoreError> {
        let marks: Vec<AtomicU64> = (0..self.layout.partitions())
            .map(|_| AtomicU64::new(0))
            .collect();
        for item in self.tree.scan_prefix(keys::meta(prefix)) {
            let (key, raw) = item?;
            let part = std::str::from_utf8(&key[1 + prefix.len()..])
                .ok()
                .and_then(|p| p.parse::<usize>().ok());
            if let (Some(mark), Some(value)) = (part.and_then(|p| marks.get(p)), u64_of(&raw)) {
                mark.store(value, Ordering::Relaxed);
            }
        }
        Ok(marks)
    }

    /// Folds pending log entries past `n` instead of
    /// [`pending_log::FOLD_ENTRIES`] (tests: many small records).
    #[cfg(test)]
    pub(crate) fn fold_after(mut self, n: usize) -> SledStore {
        self.fold_entries = n;
        self
    }

    /// The partition's trimmed mark.
    /// The history of `path` from time `from` (only the events ordered
    /// after `after`, an order key, when given) to `to`, bounded by
    /// `limit` and `max_bytes` (see `Store::history_within`).
    fn history_from(
        &self,
        path: &Path,
        (from, after): (u64, Option<&[u8]>),
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || from > to {
            return Ok(out);
        }
        let mut bytes = 0usize;
        // Records in order; false once past `to`, the limit or the bytes.
        let mut push = |items: Vec<pages::Item>, out: &mut Vec<Stored>| {
            for item in items {
                let time = item.time();
                if time > to || out.len() >= limit || bytes >= max_bytes {
                    return Ok::<_, StoreError>(false);
                }
                if time >= from && after.is_none_or(|a| item.order[..] > *a) {
                    let stored = decode(path.clone(), item.record)?;
                    bytes += stored.event.value.as_ref().map_or(0, |v| v.len());
                    out.push(stored);
                }
            }
            Ok(true)
        };
        // The latest value first: a commit may turn its open page into a
        // page between the two reads, and sled has no snapshots. Pages hold
        // only records below the open page's first one, so records from that
        // order on are taken from the latest value alone.
        let part = self.layout.partition_of(path);
        let latest = match self.tree.get(keys::latest(part, path.as_str()))? {
            Some(raw) => pages::items(path, raw)?,
            None => Vec::new(),
        };
        let open_from = latest.first().map(|i| i.order.clone());
        for page in pages::PathView::new(&self.tree, part, path).pages_from_time(from) {
            let (_, raw) = page?;
            let below_open = pages::items(path, raw)?.into_iter().filter(|i| {
                open_from
                    .as_ref()
                    .is_none_or(|first| i.order[..] < first[..])
            });
            if !push(below_open.collect(), &mut out)? {
                return Ok(out);
            }
        }
        push(latest, &mut out)?;
        Ok(out)
    }

    fn trimmed_through(&self, part: u16) -> u64 {
        self.trimmed
            .get(usize::from(part))
            .map_or(0, |m| m.load(Ordering::Acquire))
    }

    /// Raises the partition's trimmed mark (in memory; the caller writes it
    /// to meta).
    fn raise_trimmed(&self, part: u16, seq: u64) {
        if let Some(mark) = self.trimmed.get(usize::from(part)) {
            mark.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// The commit state, even after a panic elsewhere held it.
    fn state(&self) -> std::sync::MutexGuard<'_, CommitState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The event a log entry names (`path \0 order` in partition `part`),
    /// checked against its seq.
    fn logged_event(&self, part: u16, seq: u64, name: &[u8]) -> Result<Stored, StoreError> {
        let bad = || StoreError::Corrupt(format!("log entry {seq} has a bad event name"));
        let (text, order) = keys::split_logged_key(name).ok_or_else(bad)?;
        let path = Path::parse(text).map_err(|_| bad())?;
        let latest = self.tree.get(keys::latest(part, text))?;
        let record = pages::find(&self.tree, part, &path, order, latest)?
            .ok_or_else(|| StoreError::Corrupt(format!("log entry {seq} names a missing event")))?;
        let stored = decode(path, record)?;
        if stored.seq != Some(seq) {
            return Err(StoreError::Corrupt(format!(
                "log entry {seq} disagrees with its event"
            )));
        }
        Ok(stored)
    }

    fn decode_latest(key: &[u8], raw: IVec) -> Result<Stored, StoreError> {
        let text = keys::path_of_latest(key)
            .ok_or_else(|| StoreError::Corrupt("latest key is not UTF-8".into()))?;
        let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let record = pages::last_record(&path, raw)?;
        decode(path, record)
    }
}

impl Store for SledStore {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn latest(&self, path: &Path) -> Result<Option<Stored>, StoreError> {
        // The hot read: the key of a short path is built on the stack.
        const SHORT: usize = 128;
        let part = self.layout.partition_of(path);
        let text = path.as_str().as_bytes();
        let raw = if text.len() < SHORT {
            let mut key = [0u8; SHORT + 3];
            key[..3].copy_from_slice(&keys::partition_start(keys::LATEST, part));
            key[3..3 + text.len()].copy_from_slice(text);
            self.tree.get(&key[..3 + text.len()])?
        } else {
            self.tree.get(keys::latest(part, path.as_str()))?
        };
        match raw {
            Some(raw) => decode(path.clone(), pages::last_record(path, raw)?).map(Some),
            None => Ok(None),
        }
    }

    fn contains(
        &self,
        path: &Path,
        version: &Version,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        let part = self.layout.partition_of(path);
        let latest = self.tree.get(keys::latest(part, path.as_str()))?;
        let order = keys::order(version, digest);
        Ok(pages::find(&self.tree, part, path, &order, latest)?.is_some())
    }

    fn named(&self, name: &[u8]) -> Result<Option<Stored>, StoreError> {
        let Some((text, order)) = keys::split_logged_key(name) else {
            return Ok(None);
        };
        let Ok(path) = Path::parse_key(text) else {
            return Ok(None);
        };
        let part = self.layout.partition_of(&path);
        let latest = self.tree.get(keys::latest(part, path.as_str()))?;
        match pages::find(&self.tree, part, &path, order, latest)? {
            Some(record) => Ok(Some(decode(path, record)?)),
            None => Ok(None),
        }
    }

    fn scan_latest_in(
        &self,
        prefix: &Path,
        parts: Option<&[u16]>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let chosen = |part: u16| parts.is_none_or(|parts| parts.binary_search(&part).is_ok());
        // The prefix itself sorts before its children (`p` < `p/...`), but
        // siblings such as `p-x` sort between them: read the prefix alone,
        // then the range of `p/` in each partition that may hold it.
        if !prefix.is_root()
            && after.is_none_or(|a| a < prefix.as_str())
            && chosen(self.layout.partition_of(prefix))
        {
            if let Some(stored) = self.latest(prefix)? {
                out.push(stored);
            }
        }
        let children = if prefix.is_root() {
            String::new()
        } else {
            format!("{}/", prefix.as_str())
        };
        let from = match after {
            Some(a) if a >= children.as_str() => Bound::Excluded(a),
            _ => Bound::Included(children.as_str()),
        };
        self.merge_latest(
            self.layout.covering(prefix).iter().filter(|p| chosen(*p)),
            from,
            &children,
            limit,
            &mut out,
        )?;
        Ok(out)
    }

    fn history_within(
        &self,
        path: &Path,
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.history_from(path, (from, None), to, limit, max_bytes)
    }

    fn history_after(
        &self,
        path: &Path,
        (version, digest): (&Version, &Digest),
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let after = keys::order(version, digest);
        self.history_from(path, (version.time, Some(&after)), to, limit, max_bytes)
    }

    fn event_at(&self, path: &Path, as_of: &AsOf) -> Result<Option<Stored>, StoreError> {
        let part = self.layout.partition_of(path);
        let latest = self.tree.get(keys::latest(part, path.as_str()))?;
        let bound = keys::order_bound(as_of);
        match pages::record_at(&self.tree, part, path, &bound, latest)? {
            Some(raw) => decode(path.clone(), raw).map(Some),
            None => Ok(None),
        }
    }

    fn log_read(
        &self,
        prefix: &Path,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        let filter = (!prefix.is_root()).then_some(prefix);
        self.read_log(
            self.layout.covering(prefix).iter(),
            filter,
            after,
            until,
            limit,
        )
    }

    fn partition_latest(
        &self,
        part: u16,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        let from = after.map_or(Bound::Included(""), Bound::Excluded);
        self.merge_latest(std::iter::once(part), from, "", limit, &mut out)?;
        Ok(out)
    }

    fn partition_log(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        self.read_log(std::iter::once(part), None, after, until, limit)
    }

    fn partition_digest(&self, part: u16) -> Result<super::PartitionDigest, StoreError> {
        self.digest_partition(part)
    }

    fn partition_log_names(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<super::NamePage, StoreError> {
        self.log_names(part, after, until, limit)
    }

    fn partition_event_names(
        &self,
        part: u16,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.event_names(part, visit)
    }

    fn merkle_get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(keys::merkle(part, key))?.map(|v| v.to_vec()))
    }

    fn merkle_range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        let skip = keys::partition_start(keys::MERKLE, part).len();
        self.tree
            .range(keys::merkle(part, from)..keys::merkle(part, to))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((k[skip..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn merkle_apply(&self, part: u16, ops: KeyOps) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in ops {
            match value {
                Some(v) => batch.insert(keys::merkle(part, &key), v),
                None => batch.remove(keys::merkle(part, &key)),
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    fn merkle_clear(&self, part: u16) -> Result<(), StoreError> {
        self.clear_range(keys::MERKLE, part)
    }

    fn drop_partition(&self, part: u16, head: u64) -> Result<(), StoreError> {
        self.remove_partition(part, head)
    }

    fn partition_bytes(&self, part: u16) -> Result<u64, StoreError> {
        self.bytes_of_partition(part)
    }

    fn log_head(&self) -> Result<LogHead, StoreError> {
        match self.tree.get(keys::meta(keys::HEAD_META))? {
            Some(raw) => LogHead::decode(&raw)
                .ok_or_else(|| StoreError::Corrupt("bad log head record".into())),
            None => Ok(LogHead::default()),
        }
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(keys::meta(name))?.map(|v| v.to_vec()))
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(keys::meta(name), value)?;
        Ok(())
    }

    fn remove_meta(&self, name: &str) -> Result<(), StoreError> {
        self.tree.remove(keys::meta(name))?;
        Ok(())
    }

    fn meta_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for key in self.tree.scan_prefix(keys::meta(prefix)).keys() {
            let key = key?;
            let name = std::str::from_utf8(&key[1..])
                .map_err(|_| StoreError::Corrupt("a metadata name that is not UTF-8".into()))?;
            names.push(name.to_string());
        }
        Ok(names)
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if self.torn.load(Ordering::Relaxed) {
            return Err(StoreError::Failed(
                "an earlier commit failed partway; it is completed when the store is reopened"
                    .into(),
            ));
        }
        // Commits come from one thread: the lock is never contended.
        let mut state = self.state();
        let planned = {
            let pending = self.pending_read();
            self.ops_of(commit, &mut state, &pending)?
        };
        for (part, seq) in &planned.trims {
            self.raise_trimmed(*part, *seq);
        }
        self.apply(planned.ops)?;
        for (key, items) in planned.latest {
            state.latest.put(key, items);
        }
        // After sled has them: a reader takes the pending entries first.
        match planned.log {
            Some(commit::LogChange::Append(first, logged)) => {
                self.pending_write().append(first, &logged)
            }
            Some(commit::LogChange::Fold) => self.pending_write().clear(),
            None => {}
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn history_floor(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        self.floor_of(path)
    }

    fn compacted_span(&self, path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
        self.dropped_span(path)
    }

    fn expiries_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<crate::store::DueExpiry>, StoreError> {
        let mut end = vec![keys::EXPIRY];
        end.extend_from_slice(&now.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for item in self.tree.range(vec![keys::EXPIRY]..end).keys().take(limit) {
            let key = item?;
            let (_, path, order) = keys::split_expiry(&key)
                .ok_or_else(|| StoreError::Corrupt("a bad expiry key".into()))?;
            let path = Path::parse(path).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let (version, digest) = keys::split_order(order)
                .ok_or_else(|| StoreError::Corrupt("a bad expiry key".into()))?;
            out.push(crate::store::DueExpiry {
                path,
                version,
                digest,
                key: key.to_vec(),
            });
        }
        Ok(out)
    }

    fn remove_expiries(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        // One by one: nothing else writes these keys, and a batch would
        // take sled's process-wide lock (see Known limits).
        for key in keys {
            self.tree.remove(key)?;
        }
        Ok(())
    }

    fn queue_reclaim(&self, path: &Path) -> Result<(), StoreError> {
        let part = self.layout.partition_of(path);
        self.tree
            .insert(keys::reclaim(part, path.as_str()), &[][..])?;
        Ok(())
    }

    fn partition_floor(&self, part: u16) -> u64 {
        self.partition_floor_of(part)
    }

    fn compact(
        &self,
        part: u16,
        resume: &crate::store::Resume,
        retention: &crate::store::Retention,
        budget: crate::store::Budget,
    ) -> Result<crate::store::Compacted, StoreError> {
        self.compact_step(part, resume, retention, budget)
    }

    fn reclaim(
        &self,
        part: u16,
        resume: &crate::store::Resume,
        budget: crate::store::Budget,
    ) -> Result<crate::store::Compacted, StoreError> {
        self.reclaim_step(part, resume, budget)
    }
}

#[cfg(test)]
mod at_tests;
#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod reclaim_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;
