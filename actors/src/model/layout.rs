//! The partition layout: how many partitions a node's data is cut into, and
//! how a path picks its partition. Fixed when a store is created (it is part
//! of every stored key, see `store::keys`), and the same on every node of a
//! cluster.

use super::path::{Path, MAX_PATH_SEGMENTS};

/// Most partitions a layout may have: a partition's index is two bytes of
/// every stored key.
pub const MAX_PARTITIONS: u32 = 1 << 16;

/// A partition layout that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The partition count is out of range.
    #[error("partitions must be between 1 and {MAX_PARTITIONS}, not {0}")]
    Partitions(u32),
    /// The shard depth is out of range.
    #[error("shard depth must be between 1 and {MAX_PATH_SEGMENTS}, not {0}")]
    ShardDepth(usize),
}

/// The partition count and the shard depth (leading path segments that pick
/// a partition: every path under a prefix of that depth lives in one
/// partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    partitions: u32,
    shard_depth: usize,
}

impl Layout {
    /// A layout of `partitions` partitions picked by the first `shard_depth`
    /// segments of a path.
    pub fn new(partitions: u32, shard_depth: usize) -> Result<Layout, LayoutError> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(LayoutError::Partitions(partitions));
        }
        if !(1..=MAX_PATH_SEGMENTS).contains(&shard_depth) {
            return Err(LayoutError::ShardDepth(shard_depth));
        }
        Ok(Layout {
            partitions,
            shard_depth,
        })
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The leading segments that pick a partition.
    pub fn shard_depth(&self) -> usize {
        self.shard_depth
    }

    /// The partition of `path`: BLAKE3 of its first `shard_depth` segments,
    /// modulo the partition count.
    pub fn partition_of(&self, path: &Path) -> u16 {
        self.partition_of_str(path.as_str())
    }

    /// [`Layout::partition_of`] for a normalized path string.
    pub fn partition_of_str(&self, path: &str) -> u16 {
        let head = head(path, self.shard_depth);
        let hash = blake3::hash(head.as_bytes());
        let n = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        (n % u64::from(self.partitions)) as u16
    }

    /// The partitions that may hold paths under `prefix`: its own when it is
    /// at least `shard_depth` segments deep, every one otherwise.
    pub fn covering(&self, prefix: &Path) -> Covering {
        if prefix.segments().count() >= self.shard_depth {
            Covering::One(self.partition_of(prefix))
        } else {
            Covering::All(self.partitions)
        }
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new(
            crate::config::defaults::PARTITIONS,
            crate::config::defaults::SHARD_DEPTH,
        )
        .expect("the default layout is valid")
    }
}

/// The partitions under a prefix (see [`Layout::covering`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covering {
    /// Just this one.
    One(u16),
    /// All of them (`0..n`).
    All(u32),
}

impl Covering {
    /// The partitions, in index order.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        let (from, to) = match self {
            Covering::One(p) => (u32::from(p), u32::from(p) + 1),
            Covering::All(n) => (0, n),
        };
        (from..to).map(|p| p as u16)
    }
}

/// The first `depth` segments of a normalized path.
fn head(path: &str, depth: usize) -> &str {
    match path.match_indices('/').nth(depth - 1) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_deep_enough_prefix_share_its_partition() {
        let l = Layout::new(64, 2).unwrap();
        let p = |s: &str| Path::parse(s).unwrap();
        assert_eq!(l.partition_of(&p("a/b")), l.partition_of(&p("a/b/c/d")));
        assert_eq!(
            l.covering(&p("a/b/c")),
            Covering::One(l.partition_of(&p("a/b")))
        );
        assert_eq!(l.covering(&p("a")), Covering::All(64));
        assert_eq!(l.covering(&Path::root()).iter().count(), 64);
        // Spread over the partitions.
        let used: std::collections::HashSet<u16> = (0..1000)
            .map(|i| l.partition_of(&p(&format!("t/{i}"))))
            .collect();
        assert_eq!(used.len(), 64);
        assert_eq!(l.partition_of_str("x"), l.partition_of(&p("x")));
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(Layout::new(0, 2), Err(LayoutError::Partitions(0)));
        assert!(Layout::new(MAX_PARTITIONS + 1, 2).is_err());
        assert!(Layout::new(MAX_PARTITIONS, 1).is_ok());
        assert_eq!(Layout::new(4, 0), Err(LayoutError::ShardDepth(0)));
    }
}
