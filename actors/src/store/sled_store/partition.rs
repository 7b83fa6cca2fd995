//! Whole-partition operations: its content hash and dropping it. Each
//! reads or removes only the partition's own key ranges.

use super::*;
use crate::store::PartitionDigest;

/// Keys removed per batch when dropping a partition.
const DROP_CHUNK: usize = 4096;

impl SledStore {
    /// The order-independent hash of every event the partition holds.
    /// Exact while no commit writes to the partition: a commit that turns an
    /// open page into a page between the two range reads may have a record
    /// counted twice or not at all (the merkle tree of anti-entropy will
    /// not have this limit).
    pub(super) fn digest_partition(&self, part: u16) -> Result<PartitionDigest, StoreError> {
        let mut sum = [0u64; 4];
        let mut events = 0u64;
        let mut add = |name: &[u8]| {
            let hash = blake3::hash(name);
            let mut carry = 0u64;
            for (limb, chunk) in sum.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
                let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let (s1, c1) = limb.overflowing_add(word);
                let (s2, c2) = s1.overflowing_add(carry);
                *limb = s2;
                carry = u64::from(c1) + u64::from(c2);
            }
            events += 1;
        };
        for ns in [keys::HISTORY, keys::LATEST] {
            let range = keys::partition_start(ns, part).to_vec()..keys::partition_end(ns, part);
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
                    add(&keys::logged(&path, &item.order));
                }
            }
        }
        let mut hash = [0u8; 32];
        for (out, limb) in hash.chunks_exact_mut(8).zip(sum) {
            out.copy_from_slice(&limb.to_le_bytes());
        }
        Ok(PartitionDigest { events, hash })
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
        for ns in [keys::LOG, keys::HISTORY, keys::LATEST] {
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
                    break;
                }
                let mut batch = sled::Batch::default();
                for key in batch_keys {
                    batch.remove(key);
                }
                self.tree.apply_batch(batch)?;
            }
        }
        Ok(())
    }
}
