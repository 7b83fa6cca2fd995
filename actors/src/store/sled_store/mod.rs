//! [`Store`] on sled: one tree, namespaced keys (see `keys`), commits that a
//! crash cannot tear (see `intent`).

use std::ops::Bound;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sled::IVec;

use super::intent;
use super::keys;
use super::latest_cache::LatestCache;
use super::log_record::{self, LogRecordBuilder};
use super::pages;
use super::record::{decode, encode, Stored};
use super::{Commit, LogHead, Store, StoreError};
use crate::model::{Digest, Path, Version};

mod commit;
mod upgrade;

/// The on-disk format this build writes and reads (see `keys`).
pub const FORMAT: u64 = 4;

/// How long [`SledStore::open`] waits for a directory lock held elsewhere.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Log keys converted per batch when upgrading a format-1 store.
const UPGRADE_CHUNK: usize = 4096;

/// A big-endian u64 meta value.
fn u64_of(raw: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(raw).ok().map(u64::from_be_bytes)
}

/// sled's own period for writing and fsyncing its buffers in the background
/// (its default), when nothing else is asked.
pub const SLED_FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The sled-backed store of one node.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Recently written latest keys: commits (one at a time) read them from
    /// here instead of sled.
    latest_cache: Mutex<LatestCache>,
    /// Set when a commit failed after its intent was written: part of it may
    /// be in the tree, and no later commit may build on that (the intent
    /// completes it when the store is next opened).
    torn: AtomicBool,
    /// Tests: key writes of commits allowed before they fail.
    #[cfg(test)]
    key_writes_left: std::sync::atomic::AtomicUsize,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, with `cache_bytes` of page
    /// cache. A store written in an older format is upgraded in place first.
    ///
    /// sled locks the directory, and when a store of this process was just
    /// dropped its background threads may hold the lock for a moment longer:
    /// a lock held elsewhere is waited for up to [`LOCK_WAIT`].
    pub fn open(dir: &FsPath, cache_bytes: u64) -> Result<SledStore, StoreError> {
        SledStore::open_flushing_every(dir, cache_bytes, SLED_FLUSH_EVERY)
    }

    /// [`SledStore::open`], with sled's background thread writing and
    /// fsyncing its buffers every `flush_every` (it also reclaims space in
    /// the time between). `lazy` durability sets it to its own period, so
    /// that what a crash may lose is what `--lazy-flush-ms` says.
    pub fn open_flushing_every(
        dir: &FsPath,
        cache_bytes: u64,
        flush_every: Duration,
    ) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(
                flush_every.as_millis().clamp(1, u64::MAX as u128) as u64
            ))
            .mode(sled::Mode::HighThroughput);
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let tree = db.open_tree("spread")?;
        let store = SledStore {
            db,
            tree,
            latest_cache: Mutex::default(),
            torn: AtomicBool::new(false),
            #[cfg(test)]
            key_writes_left: usize::MAX.into(),
        };
        store.upgrade()?;
        store.finish_intent()?;
        Ok(store)
    }

    /// The event a log record entry names, checked against its seq.
    fn logged_event(&self, seq: u64, history_key: &[u8]) -> Result<Stored, StoreError> {
        let bad = || StoreError::Corrupt(format!("log entry {seq} has a bad history key"));
        let (text, order) = keys::split_logged_key(history_key).ok_or_else(bad)?;
        let path = Path::parse(text).map_err(|_| bad())?;
        let latest = self.tree.get(keys::latest(text))?;
        let record = pages::find(&self.tree, &path, order, latest)?
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
        let text = std::str::from_utf8(&key[1..])
            .map_err(|_| StoreError::Corrupt("latest key is not UTF-8".into()))?;
        let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let record = pages::last_record(&path, raw)?;
        decode(path, record)
    }
}

impl Store for SledStore {
    fn latest(&self, path: &Path) -> Result<Option<Stored>, StoreError> {
        // The hot read: the key of a short path is built on the stack.
        const SHORT: usize = 128;
        let text = path.as_str().as_bytes();
        let raw = if text.len() < SHORT {
            let mut key = [0u8; SHORT];
            key[0] = keys::LATEST;
            key[1..=text.len()].copy_from_slice(text);
            self.tree.get(&key[..=text.len()])?
        } else {
            self.tree.get(keys::latest(path.as_str()))?
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
        let latest = self.tree.get(keys::latest(path.as_str()))?;
        let order = keys::order(version, digest);
        Ok(pages::find(&self.tree, path, &order, latest)?.is_some())
    }

    fn scan_latest(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The prefix itself sorts before its children (`p` < `p/...`), but
        // siblings such as `p-x` sort between them: read the prefix alone,
        // then the range of `p/`.
        let children = if prefix.is_root() {
            keys::latest("")
        } else {
            keys::latest(&format!("{}/", prefix.as_str()))
        };
        if !prefix.is_root() && after.is_none_or(|a| a < prefix.as_str()) {
            if let Some(raw) = self.tree.get(keys::latest(prefix.as_str()))? {
                out.push(decode(prefix.clone(), pages::last_record(prefix, raw)?)?);
            }
        }
        let start = match after {
            Some(a) if keys::latest(a) >= children => Bound::Excluded(keys::latest(a)),
            _ => Bound::Included(children.clone()),
        };
        let mut end = children.clone();
        *end.last_mut().expect("namespace byte") += 1;
        for item in self.tree.range::<Vec<u8>, _>((start, Bound::Excluded(end))) {
            if out.len() >= limit {
                break;
            }
            let (key, raw) = item?;
            out.push(Self::decode_latest(&key, raw)?);
        }
        Ok(out)
    }

    fn history(
        &self,
        path: &Path,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 || from > to {
            return Ok(out);
        }
        // Records in order; false once past `to` or the limit.
        let push = |items: Vec<pages::Item>, out: &mut Vec<Stored>| {
            for item in items {
                let time = item.time();
                if time > to || out.len() >= limit {
                    return Ok::<_, StoreError>(false);
                }
                if time >= from {
                    out.push(decode(path.clone(), item.record)?);
                }
            }
            Ok(true)
        };
        // The latest value first: a commit may turn its open page into a
        // page between the two reads, and sled has no snapshots. Pages hold
        // only records below the open page's first one, so records from that
        // order on are taken from the latest value alone.
        let latest = match self.tree.get(keys::latest(path.as_str()))? {
            Some(raw) => pages::items(path, raw)?,
            None => Vec::new(),
        };
        let open_from = latest.first().map(|i| i.order.clone());
        for page in pages::PathView::new(&self.tree, path).pages_from_time(from) {
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

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Start at the record holding `first`: the last one starting at or
        // before it (or the first one after it, if it was trimmed away).
        let start = match self.tree.range(keys::log(0)..=keys::log(first)).next_back() {
            Some(item) => item?.0,
            None => IVec::from(&keys::log(first)[..]),
        };
        for item in self.tree.range(start..IVec::from(&keys::log(u64::MAX)[..])) {
            let (key, raw) = item?;
            let record_first = keys::seq_of_log_key(&key)
                .ok_or_else(|| StoreError::Corrupt("bad log key".into()))?;
            for (seq, entry) in (record_first..=u64::MAX).zip(log_record::entries(&raw)) {
                let entry = entry?;
                if seq < first {
                    continue;
                }
                out.push(self.logged_event(seq, entry)?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn log_first(&self) -> Result<Option<u64>, StoreError> {
        match self.tree.range(keys::log(0)..keys::log(u64::MAX)).next() {
            Some(item) => Ok(keys::seq_of_log_key(&item?.0)),
            None => Ok(None),
        }
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

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if self.torn.load(Ordering::Relaxed) {
            return Err(StoreError::Failed(
                "an earlier commit failed partway; it is completed when the store is reopened"
                    .into(),
            ));
        }
        // Commits come from one thread: the lock is never contended.
        let mut cache = self
            .latest_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (ops, latest) = self.ops_of(commit, &mut cache)?;
        self.apply(ops)?;
        for (key, items) in latest {
            cache.put(key, items);
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
}

#[cfg(test)]
mod tests;
