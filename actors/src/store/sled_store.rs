//! [`Store`] on sled: one tree, namespaced keys (see `keys`), atomic batches.

use std::ops::Bound;
use std::path::Path as FsPath;

use sled::IVec;

use super::keys;
use super::record::{decode, encode, Stored};
use super::{Commit, Store, StoreError};
use crate::model::{Digest, Path, Version, MAX_PATH_BYTES};

/// The sled-backed store of one node.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, with `cache_bytes` of page cache.
    pub fn open(dir: &FsPath, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let tree = db.open_tree("spread")?;
        Ok(SledStore { db, tree })
    }

    fn decode_latest(key: &[u8], raw: IVec) -> Result<Stored, StoreError> {
        let text = std::str::from_utf8(&key[1..])
            .map_err(|_| StoreError::Corrupt("latest key is not UTF-8".into()))?;
        let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        decode(path, raw)
    }

    fn decode_history(key: &[u8], raw: IVec) -> Result<Stored, StoreError> {
        let text = keys::path_of_history_key(key)
            .ok_or_else(|| StoreError::Corrupt("bad history key".into()))?;
        let path = Path::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        decode(path, raw)
    }
}

impl Store for SledStore {
    fn latest(&self, path: &Path) -> Result<Option<Stored>, StoreError> {
        // The hot read: the key is built on the stack.
        let text = path.as_str().as_bytes();
        let mut key = [0u8; 1 + MAX_PATH_BYTES];
        key[0] = keys::LATEST;
        key[1..=text.len()].copy_from_slice(text);
        match self.tree.get(&key[..=text.len()])? {
            Some(raw) => decode(path.clone(), raw).map(Some),
            None => Ok(None),
        }
    }

    fn contains(
        &self,
        path: &Path,
        version: &Version,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .contains_key(keys::history(path, version, digest))?)
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
                out.push(decode(prefix.clone(), raw)?);
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
        let start = keys::history_at(path, from);
        let end = match to.checked_add(1) {
            Some(t) => keys::history_at(path, t),
            None => {
                let mut e = keys::history_prefix(path);
                *e.last_mut().expect("terminator") += 1;
                e
            }
        };
        let mut out = Vec::new();
        for item in self.tree.range(start..end).take(limit) {
            let (key, raw) = item?;
            out.push(Self::decode_history(&key, raw)?);
        }
        Ok(out)
    }

    fn log_after(&self, after: u64, limit: usize) -> Result<Vec<Stored>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self
            .tree
            .range(keys::log(first)..keys::log(u64::MAX))
            .take(limit)
        {
            let (key, hkey) = item?;
            let seq = keys::seq_of_log_key(&key)
                .ok_or_else(|| StoreError::Corrupt("bad log key".into()))?;
            let mut full = Vec::with_capacity(1 + hkey.len());
            full.push(keys::HISTORY);
            full.extend_from_slice(&hkey);
            let raw = self.tree.get(&full)?.ok_or_else(|| {
                StoreError::Corrupt(format!("log entry {seq} names a missing event"))
            })?;
            let stored = Self::decode_history(&full, raw)?;
            if stored.seq != Some(seq) {
                return Err(StoreError::Corrupt(format!(
                    "log entry {seq} disagrees with its event"
                )));
            }
            out.push(stored);
        }
        Ok(out)
    }

    fn log_first(&self) -> Result<Option<u64>, StoreError> {
        match self.tree.range(keys::log(0)..keys::log(u64::MAX)).next() {
            Some(item) => Ok(keys::seq_of_log_key(&item?.0)),
            None => Ok(None),
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
        let mut batch = sled::Batch::default();
        for entry in &commit.entries {
            let event = &entry.event;
            let record: IVec = encode(event, &entry.digest, entry.seq)?.into();
            let hkey = keys::history(&event.path, &event.version, &entry.digest);
            if let Some(seq) = entry.seq {
                batch.insert(keys::latest(event.path.as_str()), record.clone());
                batch.insert(&keys::log(seq)[..], &hkey[1..]);
            }
            batch.insert(hkey, record);
        }
        if let Some(below) = commit.trim_below {
            for item in self.tree.range(keys::log(0)..keys::log(below)) {
                batch.remove(item?.0);
            }
        }
        batch.insert(keys::meta("seq"), &commit.head_seq.to_be_bytes());
        batch.insert(keys::meta("clock"), &commit.clock.to_be_bytes());
        self.tree.apply_batch(batch)?;
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
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::model::{Event, NodeId};
    use crate::store::CommitEntry;

    fn ev(path: &str, time: u64, value: Option<&'static str>) -> Arc<Event> {
        Arc::new(Event {
            path: Path::parse(path).unwrap(),
            version: Version::new(time, NodeId::new("n").unwrap()),
            value: value.map(|v| Bytes::from_static(v.as_bytes())),
            content_type: None,
            expires_at: None,
            author: None,
        })
    }

    fn entry(e: Arc<Event>, seq: Option<u64>) -> CommitEntry {
        CommitEntry {
            digest: e.digest(),
            event: e,
            seq,
        }
    }

    #[test]
    fn commit_then_read_everything_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            let commit = Commit {
                entries: vec![
                    entry(ev("a", 10, Some("x")), Some(1)),
                    entry(ev("a", 20, Some("y")), Some(2)),
                    entry(ev("a", 5, Some("old")), None),
                    entry(ev("a-b", 30, Some("sib")), Some(3)),
                    entry(ev("a/c", 40, None), Some(4)),
                ],
                head_seq: 4,
                clock: 40,
                trim_below: None,
            };
            s.commit(&commit).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let a = Path::parse("a").unwrap();
        let latest = s.latest(&a).unwrap().unwrap();
        assert_eq!(latest.event.value.as_deref(), Some(&b"y"[..]));
        assert_eq!(latest.seq, Some(2));
        let hist = s.history(&a, 0, u64::MAX, 100).unwrap();
        let times: Vec<u64> = hist.iter().map(|h| h.event.version.time).collect();
        assert_eq!(times, vec![5, 10, 20]);
        assert_eq!(s.history(&a, 6, 10, 100).unwrap().len(), 1);
        let scan: Vec<String> = s
            .scan_latest(&a, None, 100)
            .unwrap()
            .iter()
            .map(|st| st.event.path.to_string())
            .collect();
        assert_eq!(scan, vec!["a", "a/c"], "the sibling a-b is not under a");
        let after: Vec<String> = s
            .scan_latest(&a, Some("a"), 100)
            .unwrap()
            .iter()
            .map(|st| st.event.path.to_string())
            .collect();
        assert_eq!(after, vec!["a/c"]);
        assert_eq!(s.scan_latest(&Path::root(), None, 100).unwrap().len(), 3);
        let log: Vec<Option<u64>> = s
            .log_after(1, 100)
            .unwrap()
            .iter()
            .map(|st| st.seq)
            .collect();
        assert_eq!(log, vec![Some(2), Some(3), Some(4)]);
        assert_eq!(s.meta("seq").unwrap().unwrap(), 4u64.to_be_bytes());
        let old = ev("a", 5, Some("old"));
        assert!(s.contains(&a, &old.version, &old.digest()).unwrap());
    }

    #[test]
    fn trimming_drops_the_log_tail_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let entries = (1..=5)
            .map(|i| entry(ev("p", i, Some("v")), Some(i)))
            .collect();
        s.commit(&Commit {
            entries,
            head_seq: 5,
            clock: 5,
            trim_below: None,
        })
        .unwrap();
        s.commit(&Commit {
            entries: vec![],
            head_seq: 5,
            clock: 5,
            trim_below: Some(4),
        })
        .unwrap();
        assert_eq!(s.log_first().unwrap(), Some(4));
        assert_eq!(s.log_after(0, 10).unwrap().len(), 2);
        assert_eq!(
            s.history(&Path::parse("p").unwrap(), 0, u64::MAX, 10)
                .unwrap()
                .len(),
            5
        );
    }
}
