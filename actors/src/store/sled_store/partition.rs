//! Whole-partition operations: its content hash, its size and dropping it. Each
//! reads or removes only the partition's own key ranges.

use super::*;
use crate::store::PartitionDigest;

/// Keys removed per batch when dropping a partition.
const DROP_CHUNK: usize = 4096;

/// The namespaces of a partition's data (its merkle tree apart).
const PARTITION_DATA: [u8; 5] = [
    keys::LOG,
    keys::HISTORY,
    keys::LATEST,
    keys::FLOOR,
    keys::RECLAIM,
];

impl SledStore {
    /// The order-independent hash of every event the partition holds.
    /// Exact while no commit writes to the partition: a commit that turns an
    /// open page into a page between the two range reads may have a record
    /// counted twice or not at all (the merkle tree of anti-entropy will
    /// not have this limit).
    pub(super) fn digest_partition(&self, part: u16) -> Result<PartitionDigest, StoreError> {
        let mut fp = crate::merkle::Fingerprint::EMPTY;
        self.event_names(part, &mut |name| {
            fp.add(&crate::merkle::Fingerprint::of(name));
            true
        })?;
        Ok(PartitionDigest {
            events: fp.count,
            hash: fp.hash(),
        })
    }

    /// Removes the partition's keys, its log first (with its trimmed mark
    /// raised to `head` before, so its pending entries are not read back
    /// when the store opens), then its history and latest values.
    pub(super) fn remove_partition(&self, part: u16, head: u64) -> Result<(), StoreError> {
        // No commit meanwhile: the caller keeps writes to this partition
        // away, and other partitions' commits wait for the drop.
        let mut state = self.state();
        if self.torn.load(Ordering::Relaxed) {
            return Err(StoreError::Failed(
                "an earlier commit failed partway; reopen the store before dropping a partition"
                    .into(),
            ));
        }
        // The last commit's intent names its keys, some perhaps in this
        // partition: replayed when the store opens, it would bring them
        // back. That commit is whole (it returned), so its intent can go.
        self.tree.remove(keys::meta(keys::INTENT_META))?;
        self.raise_trimmed(part, head);
        let mark = self.trimmed_through(part);
        self.tree.insert(
            keys::meta(&keys::trimmed_meta(part)),
            &mark.to_be_bytes()[..],
        )?;
        self.pending_write().forget(part);
        state
            .latest
            .forget_prefix(&keys::partition_start(keys::LATEST, part));
        for ns in PARTITION_DATA {
            self.clear_range(ns, part)?;
        }
        self.tree.remove(keys::meta(&keys::floor_meta(part)))?;
        if let Some(mark) = self.floors.get(usize::from(part)) {
            mark.store(0, Ordering::Release);
        }
        // The tree goes last, and an empty one is folded through `head`
        // (the partition holds nothing, so nothing is missing from it).
        self.clear_range(keys::MERKLE, part)?;
        self.tree.insert(
            keys::merkle(part, crate::merkle::tree::CURSOR),
            &head.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Bytes of keys and values of the partition's own key ranges; 0 when
    /// it holds no event (its tree's cursor alone is no data).
    pub(super) fn bytes_of_partition(&self, part: u16) -> Result<u64, StoreError> {
        let holds = |ns| {
            let range = keys::partition_range(ns, part);
            self.tree
                .range(range)
                .next()
                .transpose()
                .map(|k| k.is_some())
        };
        // A drop cut short by a crash clears the tree last: a tree with
        // more than its cursor is data too (dropping again finishes it).
        let tree_holds = || {
            let cursor = keys::merkle(part, crate::merkle::tree::CURSOR);
            let range = keys::partition_range(keys::MERKLE, part);
            for key in self.tree.range(range).keys() {
                if key? != cursor {
                    return Ok::<_, StoreError>(true);
                }
            }
            Ok(false)
        };
        if !holds(keys::LATEST)? && !holds(keys::HISTORY)? && !tree_holds()? {
            return Ok(0);
        }
        let mut total = 0u64;
        for ns in PARTITION_DATA.into_iter().chain([keys::MERKLE]) {
            let range = keys::partition_range(ns, part);
            for item in self.tree.range(range) {
                let (key, value) = item?;
                total += (key.len() + value.len()) as u64;
            }
        }
        Ok(total)
    }

    /// Removes partition `part`'s keys of namespace `ns`, in batches.
    pub(super) fn clear_range(&self, ns: u8, part: u16) -> Result<(), StoreError> {
        let start = keys::partition_start(ns, part).to_vec();
        let end = keys::partition_end(ns, part);
        loop {
            let batch_keys = self
                .tree
                .range(start.clone()..end.clone())
                .keys()
                .take(DROP_CHUNK)
                .collect::<Result<Vec<_>, _>>()?;
            if batch_keys.is_empty() {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            for key in batch_keys {
                batch.remove(key);
            }
            self.tree.apply_batch(batch)?;
        }
    }

    /// Calls `visit` with the name of every event of the partition (see
    /// `Store::partition_event_names`).
    pub(super) fn event_names(
        &self,
        part: u16,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for ns in [keys::HISTORY, keys::LATEST] {
            let range = keys::partition_range(ns, part);
            for item in self.tree.range(range) {
                let (key, raw) = item?;
                let path_text = match ns {
                    keys::LATEST => keys::path_of_latest(&key),
                    _ => key
                        .get(3..)
                        .and_then(keys::split_logged_key)
                        .map(|(p, _)| p),
                }
                .ok_or_else(|| StoreError::Corrupt("a key without its path".into()))?;
                let path =
                    Path::parse(path_text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                for item in pages::items(&path, raw)? {
                    if !visit(&keys::logged(&path, &item.order)) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
