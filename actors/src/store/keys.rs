//! Key layout of the one sled tree that holds a node's data (format 6).
//!
//! All logical trees live in one sled tree under a one-byte namespace, so
//! that the intent a commit writes first (see `intent`) and a `sled::Batch`
//! for a commit too big for an intent both cover latest + history + log +
//! meta. Every data key then names its **partition** (two bytes, big
//! endian, see `model::layout`), so one partition's latest values, history
//! and change log are each one contiguous key range: enumerated, streamed,
//! hashed or dropped without reading any other partition.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `L` latest  | part path | the current record, or a list: the open page then the current record (see `pages`) |
//! | `H` history | part path `\0` order of the page's last record: time(8, BE) node `\0` digest(16) | a page: a record or a sorted list (see `pages`) |
//! | `G` log     | part, last seq(8, BE) | a log record of the partition: its entries' seqs and event names (see `log_record`) |
//! | `Q` pending | first seq(8, BE) | a commit's log entries not yet folded into the partitions' logs (see `pending_log`) |
//! | `m` meta    | name | bytes |
//! | `M` merkle  | part key | the partition's merkle tree (see `merkle::tree`) |
//! | `F` floor   | part path | time(8, BE) of the path's oldest event kept, once compaction dropped older ones |
//! | `X` expiry  | expires_at(8, BE) part path `\0` order | empty: a value with a time to live became its path's value |
//!
//! Meta `head` holds the log head and clock (`LogHead`), `format` the
//! on-disk format (`FORMAT`), `intent` the last commit's intent,
//! `partitions` and `shard_depth` the layout, `trimmed/<part>` the highest
//! seq trimmed from a partition's log, `floor/<part>` the greatest history
//! floor of its paths; the node keeps its id and incarnation there too.
//!
//! Paths never contain `\0` (control characters are refused), so a prefix
//! scan of `H part path \0` yields exactly that path's pages, ordered by
//! version (time, then node id: `\0` ends the node id so `a` sorts before
//! `ab`). Format 4 had the same keys without the partition, under the
//! lower-case namespaces of [`v4`].

use crate::model::{AsOf, Digest, NodeId, Path, Version};

/// Namespace of the latest value of each path.
pub const LATEST: u8 = b'L';
/// Namespace of every event of each path.
pub const HISTORY: u8 = b'H';
/// Namespace of the partitions' change logs.
pub const LOG: u8 = b'G';
/// Namespace of commits' log entries not yet folded into the partitions'
/// logs.
pub const PENDING: u8 = b'Q';
/// Namespace of node metadata.
pub const META: u8 = b'm';
/// Namespace of the partitions' merkle trees (their own layout: see
/// `merkle::tree`).
pub const MERKLE: u8 = b'M';
/// Namespace of history floors: for a path whose older history compaction
/// dropped, the time of its oldest event kept.
pub const FLOOR: u8 = b'F';
/// Namespace of expiries to come: a value with a time to live, by the time
/// it expires.
pub const EXPIRY: u8 = b'X';

/// Namespace of paths whose value expired, whose history before their
/// expiry compaction reclaims once the expiry has left the change log.
pub const RECLAIM: u8 = b'R';

/// Meta name of the log head and clock, rewritten by every commit.
pub const HEAD_META: &str = "head";
/// Meta name of the store's format.
pub const FORMAT_META: &str = "format";
/// Meta name of the last commit's intent (see `intent`).
pub const INTENT_META: &str = "intent";
/// Meta name of the partition count.
pub const PARTITIONS_META: &str = "partitions";
/// Meta name of the shard depth.
pub const SHARD_DEPTH_META: &str = "shard_depth";

/// `ns part`: where a partition's keys of one namespace start.
pub fn partition_start(ns: u8, part: u16) -> [u8; 3] {
    let p = part.to_be_bytes();
    [ns, p[0], p[1]]
}

/// A partition's keys of one namespace.
pub fn partition_range(ns: u8, part: u16) -> std::ops::Range<Vec<u8>> {
    partition_start(ns, part).to_vec()..partition_end(ns, part)
}

/// Just past a partition's keys of one namespace.
pub fn partition_end(ns: u8, part: u16) -> Vec<u8> {
    match part.checked_add(1) {
        Some(next) => partition_start(ns, next).to_vec(),
        None => vec![ns + 1],
    }
}

/// `M part key`.
pub fn merkle(part: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + key.len());
    k.extend_from_slice(&partition_start(MERKLE, part));
    k.extend_from_slice(key);
    k
}

/// `F part path`.
pub fn floor(part: u16, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + path.len());
    k.extend_from_slice(&partition_start(FLOOR, part));
    k.extend_from_slice(path.as_bytes());
    k
}

/// `R part path`.
pub fn reclaim(part: u16, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + path.len());
    k.extend_from_slice(&partition_start(RECLAIM, part));
    k.extend_from_slice(path.as_bytes());
    k
}

/// `X expires_at part path \0 order`.
pub fn expiry(expires_at: u64, part: u16, path: &Path, order: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + path.as_str().len() + 1 + order.len());
    k.push(EXPIRY);
    k.extend_from_slice(&expires_at.to_be_bytes());
    k.extend_from_slice(&part.to_be_bytes());
    k.extend_from_slice(&logged(path, order));
    k
}

/// The version and digest of an order key (`time node \0 digest`).
pub fn split_order(order: &[u8]) -> Option<(Version, Digest)> {
    let time = u64::from_be_bytes(order.get(..8)?.try_into().ok()?);
    let rest = order.get(8..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let node = crate::model::NodeId::new(std::str::from_utf8(&rest[..end]).ok()?).ok()?;
    let digest: Digest = rest.get(end + 1..)?.try_into().ok()?;
    Some((Version::new(time, node), digest))
}

/// The expiry time, path and order of an `X` key.
pub fn split_expiry(key: &[u8]) -> Option<(u64, &str, &[u8])> {
    let time = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let (path, order) = split_logged_key(key.get(11..)?)?;
    Some((time, path, order))
}

/// Meta name of the greatest history floor of partition `part`'s paths.
pub fn floor_meta(part: u16) -> String {
    format!("floor/{part}")
}

/// `L part path`.
pub fn latest(part: u16, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + path.len());
    k.extend_from_slice(&partition_start(LATEST, part));
    k.extend_from_slice(path.as_bytes());
    k
}

/// The path of a latest key.
pub fn path_of_latest(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.get(3..)?).ok()
}

/// `H part path \0` — the prefix of all history keys of `path`.
pub fn history_prefix(part: u16, path: &Path) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + path.as_str().len());
    k.extend_from_slice(&partition_start(HISTORY, part));
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(0);
    k
}

/// The order key of an event: what follows `H part path \0` in its history
/// key, `time(8, BE) node \0 digest(16)`. It sorts like the version, then
/// the digest.
pub fn order(version: &Version, digest: &Digest) -> Vec<u8> {
    let node = version.node.as_str().as_bytes();
    let mut k = Vec::with_capacity(8 + node.len() + 1 + digest.len());
    k.extend_from_slice(&version.time.to_be_bytes());
    k.extend_from_slice(node);
    k.push(0);
    k.extend_from_slice(digest);
    k
}

/// The version and digest an order key names (see [`order`]).
pub fn parse_order(key: &[u8]) -> Option<(Version, Digest)> {
    let time = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let rest = key.get(8..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let node = NodeId::new(std::str::from_utf8(&rest[..end]).ok()?).ok()?;
    let digest: Digest = rest.get(end + 1..)?.try_into().ok()?;
    Some((Version::new(time, node), digest))
}

/// The greatest order key an event covered by `as_of` can have: the time,
/// then `0xff` (above every node id's first byte), or the node id, `\0`
/// and a digest of all ones.
pub fn order_bound(as_of: &AsOf) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + 1 + 64 + 1 + 16);
    k.extend_from_slice(&as_of.time.to_be_bytes());
    match &as_of.node {
        None => k.push(0xff),
        Some(node) => {
            k.extend_from_slice(node.as_str().as_bytes());
            k.push(0);
            k.extend_from_slice(&[0xff; 16]);
        }
    }
    k
}

/// `path \0 order`: how a log record names an event (its history key
/// without namespace and partition).
pub fn logged(path: &Path, order: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.as_str().len() + 1 + order.len());
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(order);
    k
}

/// `H part path \0 time node \0 digest`.
#[cfg(test)]
pub fn history(part: u16, path: &Path, version: &Version, digest: &Digest) -> Vec<u8> {
    let mut k = history_prefix(part, path);
    k.extend_from_slice(&order(version, digest));
    k
}

/// The path and order key of an event as a log record names it (`path \0
/// order`).
pub fn split_logged_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let end = key.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&key[..end]).ok()?, &key[end + 1..]))
}

/// `G part seq`: the partition's log record whose last entry has `seq`.
pub fn log(part: u16, seq: u64) -> [u8; 11] {
    let mut k = [0; 11];
    k[..3].copy_from_slice(&partition_start(LOG, part));
    k[3..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of a log key.
pub fn seq_of_log_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(3..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `Q first`: the pending record of the commit whose first entry has
/// `first`.
pub fn pending(first: u64) -> [u8; 9] {
    let mut k = [PENDING; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

/// The first seq of a pending key.
pub fn seq_of_pending_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(&[PENDING])?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `m name`.
pub fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Meta name of the highest seq trimmed from partition `part`'s log.
pub fn trimmed_meta(part: u16) -> String {
    format!("trimmed/{part}")
}

/// Keys of format 4 (no partition), read only to upgrade such a store.
pub mod v4 {
    use crate::model::{Digest, Path, Version};

    /// Namespace of latest values.
    pub const LATEST: u8 = b'l';
    /// Namespace of history pages.
    pub const HISTORY: u8 = b'h';
    /// Namespace of the change log (one record per commit, by first seq).
    pub const LOG: u8 = b'g';

    /// `l path`.
    #[cfg(test)]
    pub fn latest(path: &str) -> Vec<u8> {
        let mut k = vec![LATEST];
        k.extend_from_slice(path.as_bytes());
        k
    }

    /// `h path \0 order`.
    pub fn history(path: &Path, version: &Version, digest: &Digest) -> Vec<u8> {
        let mut k = vec![HISTORY];
        k.extend_from_slice(&super::logged(path, &super::order(version, digest)));
        k
    }

    /// `g seq`.
    pub fn log(seq: u64) -> [u8; 9] {
        let mut k = [LOG; 9];
        k[1..].copy_from_slice(&seq.to_be_bytes());
        k
    }

    /// The seq of a log key.
    pub fn seq_of_log_key(key: &[u8]) -> Option<u64> {
        let bytes: [u8; 8] = key.strip_prefix(&[LOG])?.try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeId;

    #[test]
    fn history_keys_order_by_version_and_name_their_path() {
        let p = Path::parse("a/b").unwrap();
        let d = [7u8; 16];
        let k1 = history(3, &p, &Version::new(5, NodeId::new("a").unwrap()), &d);
        let k2 = history(3, &p, &Version::new(5, NodeId::new("ab").unwrap()), &d);
        let k3 = history(3, &p, &Version::new(6, NodeId::new("a").unwrap()), &d);
        assert!(k1 < k2 && k2 < k3);
        assert!(k1.starts_with(&history_prefix(3, &p)));
        let (path, order) = split_logged_key(&k1[3..]).unwrap();
        assert_eq!((path, order), ("a/b", &k1[7..]));
        assert_eq!(seq_of_log_key(&log(9, 42)), Some(42));
        assert_eq!(seq_of_pending_key(&pending(42)), Some(42));
        assert_eq!(path_of_latest(&latest(2, "x/y")), Some("x/y"));
    }

    #[test]
    fn a_partition_is_one_key_range_per_namespace() {
        let p = Path::parse("z").unwrap();
        for part in [0u16, 1, 255, 256, u16::MAX] {
            let (start, end) = (partition_start(LATEST, part), partition_end(LATEST, part));
            let k = latest(part, "z");
            assert!(start[..] <= k[..] && k[..] < end[..]);
            let h = history_prefix(part, &p);
            assert!(partition_start(HISTORY, part)[..] <= h[..]);
            assert!(h < partition_end(HISTORY, part));
            let last = log(part, u64::MAX);
            assert!(log(part, 7) < last && last[..] < partition_end(LOG, part)[..]);
        }
        assert!(partition_end(LATEST, 0) <= latest(1, "")[..].to_vec());
    }
}
