//! Key layout of the one sled tree that holds a node's data.
//!
//! All four logical trees live in one sled tree under a one-byte namespace, so
//! that the intent a commit writes first (see `intent`) and a `sled::Batch`
//! for a commit too big for an intent both cover latest + history + log +
//! meta:
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `l` latest  | path | the current record, or a list: the open page then the current record (see `pages`) |
//! | `h` history | path `\0` order of the page's last record: time(8, BE) node `\0` digest(16) | a page: a record or a sorted list (see `pages`) |
//! | `g` log     | first seq(8, BE) | log record: the history keys (without namespace byte) of the commit's consecutive seqs (see `log_record`) |
//! | `m` meta    | name | bytes |
//!
//! Meta `head` holds the log head and clock (`LogHead`), `format` the
//! on-disk format (`FORMAT`), `intent` the last commit's intent; the node keeps its id, incarnation and layout
//! there too.
//!
//! Paths never contain `\0` (control characters are refused), so a prefix
//! scan of `h path \0` yields exactly that path's pages, ordered by version
//! (time, then node id: `\0` ends the node id so `a` sorts before `ab`).

use crate::model::{Digest, Path, Version};

/// Namespace of the latest value of each path.
pub const LATEST: u8 = b'l';
/// Namespace of every event of each path.
pub const HISTORY: u8 = b'h';
/// Namespace of the node-local change log.
pub const LOG: u8 = b'g';
/// Namespace of node metadata.
pub const META: u8 = b'm';

/// Meta name of the log head and clock, rewritten by every commit.
pub const HEAD_META: &str = "head";
/// Meta name of the store's format.
pub const FORMAT_META: &str = "format";
/// Meta name of the last commit's intent (see `intent`).
pub const INTENT_META: &str = "intent";

/// `l path`.
pub fn latest(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + path.len());
    k.push(LATEST);
    k.extend_from_slice(path.as_bytes());
    k
}

/// `h path \0` — the prefix of all history keys of `path`.
pub fn history_prefix(path: &Path) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + path.as_str().len());
    k.push(HISTORY);
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(0);
    k
}

/// The order key of an event: what follows `h path \0` in its history key,
/// `time(8, BE) node \0 digest(16)`. It sorts like the version, then the
/// digest.
pub fn order(version: &Version, digest: &Digest) -> Vec<u8> {
    let node = version.node.as_str().as_bytes();
    let mut k = Vec::with_capacity(8 + node.len() + 1 + digest.len());
    k.extend_from_slice(&version.time.to_be_bytes());
    k.extend_from_slice(node);
    k.push(0);
    k.extend_from_slice(digest);
    k
}

/// `h path \0 order`.
pub fn history_at_order(path: &Path, order: &[u8]) -> Vec<u8> {
    let mut k = history_prefix(path);
    k.extend_from_slice(order);
    k
}

/// `h path \0 time node \0 digest`.
pub fn history(path: &Path, version: &Version, digest: &Digest) -> Vec<u8> {
    history_at_order(path, &order(version, digest))
}

/// The path and order key of a history key given without its namespace
/// byte, as log records hold them.
pub fn split_logged_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let end = key.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&key[..end]).ok()?, &key[end + 1..]))
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

/// `m name`.
pub fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeId;

    #[test]
    fn history_keys_order_by_version_and_name_their_path() {
        let p = Path::parse("a/b").unwrap();
        let d = [7u8; 16];
        let k1 = history(&p, &Version::new(5, NodeId::new("a").unwrap()), &d);
        let k2 = history(&p, &Version::new(5, NodeId::new("ab").unwrap()), &d);
        let k3 = history(&p, &Version::new(6, NodeId::new("a").unwrap()), &d);
        assert!(k1 < k2 && k2 < k3);
        assert!(k1.starts_with(&history_prefix(&p)));
        let (path, order) = split_logged_key(&k1[1..]).unwrap();
        assert_eq!((path, order), ("a/b", &k1[5..]));
        // A path starting with the history namespace letter keeps it.
        let h = history(
            &Path::parse("hot").unwrap(),
            &Version::new(5, NodeId::new("a").unwrap()),
            &d,
        );
        assert_eq!(split_logged_key(&h[1..]).unwrap().0, "hot");
        assert_eq!(seq_of_log_key(&log(42)), Some(42));
    }
}
