//! The records of recently written latest keys, as the store's one writer
//! last wrote them.
//!
//! A write rewrites its path's latest key (the current record and the open
//! page, see `pages`), so each commit used to read that key back from sled
//! first: about a fifth of the committer's time under load. Only commits
//! write latest keys, and commits come from one thread, so what the last
//! commit wrote is what sled holds: a commit takes a path's records from
//! here when it can, and puts back what it wrote once sled has applied the
//! batch. An entry taken by a commit that then fails is simply gone (the
//! next commit reads sled). Bounded in bytes: when full, about a quarter of
//! the entries go.

use std::collections::HashMap;

use super::pages::Item;

/// Most bytes of records (with a fixed overhead per entry and item) kept.
pub const LATEST_CACHE_BYTES: usize = 16 << 20;
/// A latest value bigger than this is not kept (large values are rare and
/// would crowd out many small ones).
pub const LATEST_CACHE_ENTRY_BYTES: usize = 8 << 10;
/// Bytes counted per entry and per item on top of their contents.
const ENTRY_OVERHEAD: usize = 64;

/// Latest keys' records (oldest first, as in the stored value), by latest key.
#[derive(Default)]
pub struct LatestCache {
    entries: HashMap<Vec<u8>, (Vec<Item>, usize)>,
    bytes: usize,
}

impl LatestCache {
    /// Removes and returns the records of `key`, if kept.
    pub fn take(&mut self, key: &[u8]) -> Option<Vec<Item>> {
        let (items, size) = self.entries.remove(key)?;
        self.bytes -= size;
        Some(items)
    }

    /// Keeps the records `key` now holds in sled (replacing what was kept).
    /// Too big a value is not kept; a full cache is emptied first.
    pub fn put(&mut self, key: Vec<u8>, items: Vec<Item>) {
        let size = ENTRY_OVERHEAD
            + key.len()
            + items
                .iter()
                .map(|i| ENTRY_OVERHEAD + i.order.len() + i.record.len())
                .sum::<usize>();
        if let Some((_, old)) = self.entries.remove(&key) {
            self.bytes -= old;
        }
        if size > LATEST_CACHE_ENTRY_BYTES {
            return;
        }
        if self.bytes + size > LATEST_CACHE_BYTES {
            self.evict_a_quarter();
        }
        self.bytes += size;
        self.entries.insert(key, (items, size));
    }

    /// Forgets every key starting with `prefix` (a dropped partition's).
    pub fn forget_prefix(&mut self, prefix: &[u8]) {
        let mut freed = 0;
        self.entries.retain(|key, (_, size)| {
            let keep = !key.starts_with(prefix);
            if !keep {
                freed += *size;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Drops about every fourth entry (in the map's arbitrary order, which
    /// has nothing to do with age or path): room for many new entries, and
    /// a hot set the size of the budget keeps most of its hits.
    fn evict_a_quarter(&mut self) {
        let mut n = 0usize;
        let mut freed = 0;
        self.entries.retain(|_, (_, size)| {
            n += 1;
            let keep = n % 4 != 0;
            if !keep {
                freed += *size;
            }
            keep
        });
        // Room for any new entry: a full cache holds at least 2047 entries
        // (none over LATEST_CACHE_ENTRY_BYTES), so a quarter of them is at
        // least 511 × ENTRY_OVERHEAD bytes (32 KiB), more than one entry may take.
        self.bytes -= freed;
    }

    /// Bytes counted for what is kept.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of latest keys kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(order: u8, len: usize) -> Item {
        Item {
            order: vec![order; 30].into(),
            record: vec![7; len].into(),
        }
    }

    #[test]
    fn take_returns_what_was_put_once() {
        let mut cache = LatestCache::default();
        cache.put(b"la".to_vec(), vec![item(1, 10), item(2, 20)]);
        assert_eq!(cache.len(), 1);
        let got = cache.take(b"la").unwrap();
        assert_eq!(got, vec![item(1, 10), item(2, 20)]);
        assert!(cache.take(b"la").is_none(), "taken entries are gone");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn forgetting_a_prefix_drops_its_keys_and_bytes_only() {
        let mut cache = LatestCache::default();
        cache.put(b"L\x00\x01a".to_vec(), vec![item(1, 10)]);
        cache.put(b"L\x00\x02a".to_vec(), vec![item(1, 10)]);
        let one = cache.bytes() / 2;
        cache.forget_prefix(b"L\x00\x01");
        assert_eq!((cache.len(), cache.bytes()), (1, one));
        assert!(cache.take(b"L\x00\x02a").is_some());
    }

    #[test]
    fn a_new_put_replaces_the_old_entry_and_its_bytes() {
        let mut cache = LatestCache::default();
        cache.put(b"la".to_vec(), vec![item(1, 100)]);
        let one = cache.bytes();
        cache.put(b"la".to_vec(), vec![item(1, 100), item(2, 100)]);
        assert_eq!(cache.len(), 1);
        assert!(cache.bytes() > one);
        assert_eq!(cache.take(b"la").unwrap().len(), 2);
    }

    #[test]
    fn too_big_a_value_is_not_kept_and_drops_the_old_one() {
        let mut cache = LatestCache::default();
        cache.put(b"la".to_vec(), vec![item(1, 100)]);
        cache.put(b"la".to_vec(), vec![item(2, LATEST_CACHE_ENTRY_BYTES)]);
        assert!(
            cache.take(b"la").is_none(),
            "a stale entry must not outlive a newer write that is not kept"
        );
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let mut cache = LatestCache::default();
        cache.put(vec![0xff], vec![item(1, 2000)]);
        let one = cache.bytes();
        let fit = LATEST_CACHE_BYTES / one;
        let mut fewest_once_full = usize::MAX;
        for i in 0..(3 * fit) as u32 {
            cache.put(i.to_be_bytes().to_vec(), vec![item(1, 2000)]);
            assert!(cache.bytes() <= LATEST_CACHE_BYTES);
            if i as usize > fit {
                fewest_once_full = fewest_once_full.min(cache.len());
            }
        }
        assert!(
            fewest_once_full > fit / 2,
            "a full cache drops part of its entries, not all: down to {fewest_once_full} of {fit}"
        );
        let last = (3 * fit - 1) as u32;
        assert!(
            cache.take(&last.to_be_bytes()).is_some(),
            "the last put is kept"
        );
    }
}
