//! Persistent storage of a node: latest values, full history, the node-local
//! change log and metadata, behind the small [`Store`] trait.
//!
//! Guarantees the rest of the engine relies on:
//! - A [`Commit`] survives a crash whole or not at all: the latest values,
//!   their history entries, their log record, the log head and the clock
//!   high-water mark (its intent is replayed when the store is opened, see
//!   `intent`). While it runs, readers may see its keys appear one by one,
//!   in an order that keeps each read consistent: a path's history before
//!   its latest value, a log record after the events it names.
//! - Only the committer thread writes latest values, history and the log
//!   (one writer: commits, and compaction between them), so each
//!   partition's log entries appear in seq order. (The merkle folder writes
//!   the trees, and the expiry thread removes expiry index keys: keys no
//!   commit rewrites.) Seqs are node-wide (clients' cursors name
//!   one), so a partition's entries skip the seqs other partitions took; a
//!   read of the log says when trimming took entries it would have returned.
//!   Every event a commit writes has a log entry, a late one (history only)
//!   too.
//! - A partition's data (latest values, history, log) is read, hashed and
//!   dropped without reading any other partition's (see `keys`).
//! - Reads never block writes and see every commit that has returned.
//! - Durability is decided by the caller: [`Store::flush`] makes every commit
//!   that returned before it durable. The committer calls it per group of
//!   writes (`flush`, `batch`), or every `--lazy-flush-ms` (`lazy`, when
//!   something was written since the last flush; sled's own timer is set to
//!   the same period).

mod intent;
mod keys;
mod latest_cache;
mod log_record;
mod pages;
mod record;
mod sled_store;

pub use record::{decode, encode, Stored};
pub use sled_store::{SledStore, FORMAT, SLED_FLUSH_EVERY};

use std::sync::Arc;

use crate::model::{AsOf, Digest, Event, Layout, Path, Version};

/// A storage failure. The node reports it; it never panics on one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, or a corrupted file).
    #[error("storage failure: {0}")]
    Sled(#[from] sled::Error),
    /// A record or key could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A write failed (the detail names the cause).
    #[error("storage failure: {0}")]
    Failed(String),
    /// The change log no longer holds every entry after this seq (trimmed
    /// by retention).
    #[error("the change log no longer reaches back to seq {after}")]
    Trimmed {
        /// The seq asked to read after.
        after: u64,
    },
}

/// One event to write in a commit.
#[derive(Clone, Debug)]
pub struct CommitEntry {
    /// The event.
    pub event: Arc<Event>,
    /// Its digest.
    pub digest: Digest,
    /// Its seq: every event enters the log, so whoever follows the log sees
    /// every event (histories converge from the log alone).
    pub seq: u64,
    /// It arrived too late to become the value: it enters history only.
    pub late: bool,
}

/// A group of writes that a crash cannot tear (see [`Store::commit`]).
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// The events, in the order they were decided.
    pub entries: Vec<CommitEntry>,
    /// The log head after this commit.
    pub head_seq: u64,
    /// The clock's high-water mark to persist.
    pub clock: u64,
    /// Log entries below this seq may be removed (log retention): the store
    /// trims a few partitions per commit, whole records only, so more may
    /// stay for a while.
    pub trim_below: Option<u64>,
}

/// Where the change log ends, as of the last commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHead {
    /// The last seq assigned (0: none yet).
    pub seq: u64,
    /// The clock's high-water mark.
    pub clock: u64,
}

impl LogHead {
    /// 16 bytes: seq then clock, big endian.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.clock.to_be_bytes());
        out
    }

    /// The inverse of [`LogHead::encode`]; `None` if `raw` is not 16 bytes.
    pub fn decode(raw: &[u8]) -> Option<LogHead> {
        let (seq, clock) = raw.split_first_chunk::<8>()?;
        Some(LogHead {
            seq: u64::from_be_bytes(*seq),
            clock: u64::from_be_bytes(clock.try_into().ok()?),
        })
    }
}

/// One step of reading a change log.
#[derive(Clone, Debug, Default)]
pub struct LogPage {
    /// Entries in seq order.
    pub entries: Vec<Stored>,
    /// Every entry in `(after, through]` that the read covers is in
    /// `entries`; read on from here.
    pub through: u64,
    /// The log no longer holds some entry after `after` that the read
    /// covers (trimmed by retention, or its partition dropped): what it
    /// returned is not the whole change since `after`.
    pub trimmed: bool,
}

/// The content hash of one partition: the same event set gives the same
/// digest whatever order the events arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionDigest {
    /// Events held (history included).
    pub events: u64,
    /// The sum (mod 2^256, limb-wise) of BLAKE3 of each event's name (`path
    /// \0 order`).
    pub hash: [u8; 32],
}

/// The name of an event, as logs and merkle trees know it: `path \0 time
/// node \0 digest`.
pub fn event_name(path: &Path, version: &Version, digest: &Digest) -> Vec<u8> {
    keys::logged(path, &keys::order(version, digest))
}

/// The path and order key of an event's name (see [`event_name`]).
pub fn split_event_name(name: &[u8]) -> Option<(&str, &[u8])> {
    keys::split_logged_key(name)
}

/// The version and digest an event's order key names.
pub fn parse_order(order: &[u8]) -> Option<(Version, Digest)> {
    keys::parse_order(order)
}

/// A value due to expire (see [`Store::expiries_due`]).
#[derive(Clone, Debug)]
pub struct DueExpiry {
    /// Its key in the expiry index.
    pub key: Vec<u8>,
    /// The path.
    pub path: Path,
    /// The version of the event that expires.
    pub version: Version,
    /// Its digest.
    pub digest: Digest,
}

/// Keys and values, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;
/// Keys to set (`Some`) or remove (`None`).
pub type KeyOps = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One step of reading a partition's change log by event names only.
#[derive(Clone, Debug, Default)]
pub struct NamePage {
    /// `(seq, name)` in seq order; a name is `path \0 order` (see `keys`).
    pub names: Vec<(u64, Vec<u8>)>,
    /// Every entry up to here was returned; read on from here.
    pub through: u64,
    /// The log no longer holds some entry after `after` (trimmed).
    pub trimmed: bool,
}

/// How much history compaction keeps of each path (the latest event always
/// stays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many events of each path.
    pub keep_versions: Option<usize>,
    /// Keep every event at or after this time (µs), and the newest one
    /// before it (the value as it stood then).
    pub keep_after: Option<u64>,
}

impl Retention {
    /// True if the rule drops anything at all.
    pub fn drops(&self) -> bool {
        self.keep_versions.is_some() || self.keep_after.is_some()
    }
}

/// How much one compaction step may do: paths and pages looked at, and
/// time.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Paths and pages.
    pub work: usize,
    /// The step stops after the path it is on at this time.
    pub until: std::time::Instant,
}

/// Where a compaction sweep of a partition goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// With the first path of the partition.
    Start,
    /// With this path again (it was not done).
    At(String),
    /// With the path after this one.
    After(String),
    /// The partition is done.
    Done,
}

/// What one compaction step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// Events dropped.
    pub dropped: u64,
    /// Where the sweep of the partition goes on.
    pub resume: Resume,
}

/// What a node keeps on disk. Implemented by [`SledStore`].
pub trait Store: Send + Sync + 'static {
    /// The partition layout (fixed when the store was created).
    fn layout(&self) -> Layout;
    /// The latest event of `path` (a tombstone too), if any.
    fn latest(&self, path: &Path) -> Result<Option<Stored>, StoreError>;
    /// True if this exact event is in the path's history.
    fn contains(&self, path: &Path, version: &Version, digest: &Digest)
        -> Result<bool, StoreError>;
    /// The event named `name` (`path \0 order`, see [`event_name`]), if
    /// held: read from the path's latest value or the one history page that
    /// would hold it, whatever the length of its history.
    fn named(&self, name: &[u8]) -> Result<Option<Stored>, StoreError>;
    /// Latest events (tombstones included) of `prefix` and every path below it,
    /// in path order, starting strictly after `after` when given.
    fn scan_latest(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.scan_latest_in(prefix, None, after, limit)
    }
    /// [`Store::scan_latest`] of the paths in partitions `parts` only
    /// (sorted) when given: the share of a prefix one owner answers for.
    fn scan_latest_in(
        &self,
        prefix: &Path,
        parts: Option<&[u16]>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError>;
    /// The history of `path`, oldest first, with `from <= time <= to`.
    fn history(
        &self,
        path: &Path,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.history_within(path, from, to, limit, usize::MAX)
    }
    /// [`Store::history`] that also stops once the values read reach
    /// `max_bytes` (at least one event is read): what a reader holds is
    /// bounded in bytes too. Events read then weigh `max_bytes` or more.
    fn history_within(
        &self,
        path: &Path,
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError>;
    /// [`Store::history_within`] of the events ordered after event `after`
    /// (its version and digest): where a reader that has the events up to
    /// it goes on, without reading them again.
    fn history_after(
        &self,
        path: &Path,
        after: (&Version, &Digest),
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError>;
    /// The event of `path` that stood at `as_of`: the greatest version it
    /// covers (a tombstone too), if any. Reads at most the latest value and
    /// two pages of history.
    fn event_at(&self, path: &Path, as_of: &AsOf) -> Result<Option<Stored>, StoreError>;
    /// Log entries of paths under `prefix` with `after < seq <= until`, in
    /// seq order, at most `limit`; reads only the partitions that may hold
    /// such paths. `until` must not pass the last commit's head.
    fn log_read(
        &self,
        prefix: &Path,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError>;
    /// Latest events (tombstones included) of partition `part`, in path
    /// order, starting strictly after `after` when given.
    fn partition_latest(
        &self,
        part: u16,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError>;
    /// Log entries of partition `part` with `after < seq <= until`, in seq
    /// order, at most `limit`.
    fn partition_log(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError>;
    /// The content hash of partition `part` (reads that partition only).
    fn partition_digest(&self, part: u16) -> Result<PartitionDigest, StoreError>;
    /// The names of partition `part`'s log entries with `after < seq <=
    /// until`, at most `limit` (no event is read).
    fn partition_log_names(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<NamePage, StoreError>;
    /// Calls `visit` with the name of every event partition `part` holds
    /// (history included), until it answers false. Exact while no commit
    /// writes to the partition.
    fn partition_event_names(
        &self,
        part: u16,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// The value at `key` in partition `part`'s merkle key space.
    fn merkle_get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries of partition `part`'s merkle key space with
    /// `from <= key < to`, in key order.
    fn merkle_range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError>;
    /// Sets (`Some`) or removes (`None`) keys of partition `part`'s merkle
    /// key space, atomically.
    fn merkle_apply(&self, part: u16, ops: KeyOps) -> Result<(), StoreError>;
    /// Removes partition `part`'s merkle key space (not atomic).
    fn merkle_clear(&self, part: u16) -> Result<(), StoreError>;
    /// Removes every latest value, history event and log entry of
    /// partition `part`; reads of its log after any seq up to `head` then
    /// say `trimmed`. The caller makes sure no write to the partition is in
    /// flight. Not atomic: a crash midway leaves part of it, and dropping
    /// again finishes.
    fn drop_partition(&self, part: u16, head: u64) -> Result<(), StoreError>;
    /// Bytes of keys and values partition `part` holds (latest values,
    /// history, log, floors, its merkle tree): read by scanning them, so
    /// called rarely.
    fn partition_bytes(&self, part: u16) -> Result<u64, StoreError>;
    /// The log head and clock written by the last commit (zeros for a new
    /// store).
    fn log_head(&self) -> Result<LogHead, StoreError>;
    /// A metadata value.
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a metadata value (durable after the next flush).
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes a metadata value.
    fn remove_meta(&self, name: &str) -> Result<(), StoreError>;
    /// The names of the metadata values whose name starts with `prefix`.
    fn meta_names(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Applies a commit: after a crash, the reopened store holds all of it
    /// or none of it. Concurrent readers may see its keys appear one by one.
    /// On an error, part of it may have been applied (and is completed when
    /// the store reopens); the store then refuses further commits.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    /// Makes every applied commit durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> u64;
    /// Values with a time to live that expire at or before `now`, at most
    /// `limit`: each as `(key, path, version and digest of the event)`. A
    /// key may be stale (the path was written since); remove it with
    /// [`Store::remove_expiries`] once handled.
    fn expiries_due(&self, now: u64, limit: usize) -> Result<Vec<DueExpiry>, StoreError>;
    /// Removes handled expiry keys.
    fn remove_expiries(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError>;
    /// Notes that `path`'s value expired (its latest event is its expiry):
    /// [`Store::reclaim`] drops its history before the expiry once the
    /// expiry has left the change log.
    fn queue_reclaim(&self, path: &Path) -> Result<(), StoreError>;
    /// The time of `path`'s oldest event kept, once compaction dropped
    /// older ones: what it held before then is no longer known.
    fn history_floor(&self, path: &Path) -> Result<Option<u64>, StoreError>;
    /// The times `[from, floor)` whose history of `path` compaction
    /// dropped, if any: what it held then is no longer known. Before
    /// `from` nothing was dropped (0 when a store of an earlier release
    /// did not record it).
    fn compacted_span(&self, path: &Path) -> Result<Option<(u64, u64)>, StoreError>;
    /// The greatest history floor of partition `part`'s paths (0: nothing
    /// dropped).
    fn partition_floor(&self, part: u16) -> u64;
    /// One bounded step of compacting partition `part` by `retention`,
    /// from `resume`, within `budget`: drops each
    /// path's events the rule lets go that have left the change log (so no
    /// log entry or cursor names a dropped event), raises the path's floor,
    /// and queues the dropped events' names for the merkle tree (see
    /// `merkle::maintain`), in one atomic write. Only the committer calls
    /// it, between commits.
    fn compact(
        &self,
        part: u16,
        resume: &Resume,
        retention: &Retention,
        budget: Budget,
    ) -> Result<Compacted, StoreError>;
    /// One bounded step of reclaiming the space of expired values in
    /// partition `part` ([`Store::queue_reclaim`]), whatever the retention:
    /// for each path queued whose latest event is still its expiry, and
    /// once that expiry has left the change log, every event before the
    /// expiry is dropped (the expired value too), and the path's floor
    /// becomes the expiry's `expires_at` (what it held before is no longer
    /// known). A path written since is let go as it is. Like
    /// [`Store::compact`], only the committer calls it, between commits.
    fn reclaim(&self, part: u16, resume: &Resume, budget: Budget) -> Result<Compacted, StoreError>;
}
