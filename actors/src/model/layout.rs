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

    /// The partition of `path`: a hash of its first `shard_depth` segments
    /// (FNV-1a, then the SplitMix64 finalizer so that every bit counts),
    /// modulo the partition count. Stable forever: stores key their data by
    /// it. Not BLAKE3 (as at first): that took ~150 ns of a ~1 µs embedded
    /// read; this takes a few.
    pub fn partition_of(&self, path: &Path) -> u16 {
        self.partition_of_str(path.as_str())
    }

    /// [`Layout::partition_of`] for a normalized path string.
    pub fn partition_of_str(&self, path: &str) -> u16 {
        let head = head(path, self.shard_depth);
        (mix(fnv1a(head.as_bytes())) % u64::from(self.partitions)) as u16
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

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        // Stable: stores key their data by it.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let fixed: Vec<u16> = ["rooms/42", "a", "bench/k1"]
            .iter()
            .map(|s| Layout::new(1024, 2).unwrap().partition_of_str(s))
            .collect();
        assert_eq!(fixed, FIXED_PARTITIONS);
    }

    /// The partitions of `rooms/42`, `a` and `bench/k1` of 1024 (checked
    /// once; they must never change).
    const FIXED_PARTITIONS: [u16; 3] = [153, 248, 469];

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(Layout::new(0, 2), Err(LayoutError::Partitions(0)));
        assert!(Layout::new(MAX_PARTITIONS + 1, 2).is_err());
        assert!(Layout::new(MAX_PARTITIONS, 1).is_ok());
        assert_eq!(Layout::new(4, 0), Err(LayoutError::ShardDepth(0)));
    }
}
