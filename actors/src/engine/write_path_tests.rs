//! Tests of the write path under concurrency: pipelined partition batches
//! must decide on top of the batches still in flight, a batch that fails to
//! commit must take down every later batch decided on top of it, writes
//! waiting for a batch slot or for room in a full inbox go on, a failed
//! flush refuses every later write, a slow store read holds up neither other
//! partitions nor other sessions, and a snapshot the store cannot read ends
//! its stream with an error.
//!
//! Faults are injected by [`FaultyStore`], a real [`SledStore`] whose commit
//! can be held and then failed, whose reads of one path or scans of one
//! prefix can be held, whose scans can fail, and whose next flush can fail,
//! on demand; nothing else is stubbed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::oneshot;

use crate::config::{Config, Durability};
use crate::engine::partition::{Precondition, Write, WriteStatus};
use crate::error::NodeError;
use crate::model::{AsOf, Digest, Layout, Path, Version};
use crate::node::{HistoryRange, Node};
use crate::store::{
    Commit, LogHead, LogPage, PartitionDigest, SledStore, Store, StoreError, Stored,
};

/// How long a test waits for the engine before it fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A read to hold: its path, who to tell when it begins, and the release.
type HeldRead = (Path, oneshot::Sender<()>, mpsc::Receiver<()>);

/// A sled store whose next commit can be held until the test decides
/// whether it fails, which holds the first read of a given path or scan of a
/// given prefix, whose scans can fail, and whose next flush can fail.
struct FaultyStore {
    inner: SledStore,
    /// For the next commit: tell the test it began, then wait for the
    /// verdict (`true`: fail it).
    hold: Mutex<Option<(oneshot::Sender<()>, mpsc::Receiver<bool>)>>,
    /// Holds the first read of this path's latest value (on the blocking
    /// thread that reads it for its partition) until released.
    hold_read: Mutex<Option<HeldRead>>,
    /// Fails the next flush.
    fail_flush: std::sync::atomic::AtomicBool,
    /// Fails every scan of latest values (snapshots).
    fail_scans: std::sync::atomic::AtomicBool,
    /// Holds the first scan under this prefix until released.
    hold_scan: Mutex<Option<HeldRead>>,
}

impl FaultyStore {
    fn open(dir: &std::path::Path) -> FaultyStore {
        FaultyStore {
            // The layout of `config`, which these tests rely on.
            inner: SledStore::open_with(
                dir,
                16 << 20,
                crate::store::SLED_FLUSH_EVERY,
                Layout::new(4, 1).unwrap(),
            )
            .unwrap(),
            hold: Mutex::new(None),
            hold_read: Mutex::new(None),
            fail_flush: Default::default(),
            fail_scans: Default::default(),
            hold_scan: Mutex::new(None),
        }
    }

    /// Holds the next commit: returns "it began" and the verdict sender.
    fn hold_next_commit(&self) -> (oneshot::Receiver<()>, mpsc::Sender<bool>) {
        let (began_tx, began) = oneshot::channel();
        let (verdict, verdict_rx) = mpsc::channel();
        *self.hold.lock().unwrap() = Some((began_tx, verdict_rx));
        (began, verdict)
    }

    /// Holds the first read of `path`: returns "it began" and the release.
    fn hold_reads_of(&self, path: &Path) -> (oneshot::Receiver<()>, mpsc::Sender<()>) {
        let (began_tx, began) = oneshot::channel();
        let (release, release_rx) = mpsc::channel();
        *self.hold_read.lock().unwrap() = Some((path.clone(), began_tx, release_rx));
        (began, release)
    }
}

/// If `slot` holds a read of `path`, takes it: tells the test the read
/// began, then waits for its release.
fn wait_if_held(slot: &Mutex<Option<HeldRead>>, path: &Path) {
    let held = {
        let mut hold = slot.lock().unwrap();
        if hold.as_ref().is_some_and(|(p, _, _)| p == path) {
            hold.take()
        } else {
            None
        }
    };
    if let Some((_, began, release)) = held {
        let _ = began.send(());
        release
            .recv_timeout(DEADLINE)
            .expect("the test releases the read");
    }
}

impl Store for FaultyStore {
    fn layout(&self) -> Layout {
        self.inner.layout()
    }
    fn latest(&self, path: &Path) -> Result<Option<Stored>, StoreError> {
        wait_if_held(&self.hold_read, path);
        self.inner.latest(path)
    }
    fn contains(
        &self,
        path: &Path,
        version: &Version,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        self.inner.contains(path, version, digest)
    }
    fn named(&self, name: &[u8]) -> Result<Option<Stored>, StoreError> {
        self.inner.named(name)
    }
    fn scan_latest_in(
        &self,
        prefix: &Path,
        parts: Option<&[u16]>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        if self.fail_scans.load(Ordering::SeqCst) {
            return Err(StoreError::Failed("injected scan failure".into()));
        }
        wait_if_held(&self.hold_scan, prefix);
        self.inner.scan_latest_in(prefix, parts, after, limit)
    }
    fn history_within(
        &self,
        path: &Path,
        from: u64,
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.inner.history_within(path, from, to, limit, max_bytes)
    }
    fn history_after(
        &self,
        path: &Path,
        after: (&Version, &crate::model::Digest),
        to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.inner.history_after(path, after, to, limit, max_bytes)
    }
    fn event_at(&self, path: &Path, as_of: &AsOf) -> Result<Option<Stored>, StoreError> {
        self.inner.event_at(path, as_of)
    }
    fn history_floor(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        self.inner.history_floor(path)
    }
    fn compacted_span(&self, path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
        self.inner.compacted_span(path)
    }
    fn expiries_due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<crate::store::DueExpiry>, StoreError> {
        self.inner.expiries_due(now, limit)
    }
    fn remove_expiries(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.inner.remove_expiries(keys)
    }
    fn queue_reclaim(&self, path: &Path) -> Result<(), StoreError> {
        self.inner.queue_reclaim(path)
    }
    fn reclaim(
        &self,
        part: u16,
        resume: &crate::store::Resume,
        budget: crate::store::Budget,
    ) -> Result<crate::store::Compacted, StoreError> {
        self.inner.reclaim(part, resume, budget)
    }
    fn partition_floor(&self, part: u16) -> u64 {
        self.inner.partition_floor(part)
    }
    fn compact(
        &self,
        part: u16,
        resume: &crate::store::Resume,
        retention: &crate::store::Retention,
        budget: crate::store::Budget,
    ) -> Result<crate::store::Compacted, StoreError> {
        self.inner.compact(part, resume, retention, budget)
    }
    fn log_read(
        &self,
        prefix: &Path,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        self.inner.log_read(prefix, after, until, limit)
    }
    fn partition_latest(
        &self,
        part: u16,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.inner.partition_latest(part, after, limit)
    }
    fn partition_log(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<LogPage, StoreError> {
        self.inner.partition_log(part, after, until, limit)
    }
    fn partition_digest(&self, part: u16) -> Result<PartitionDigest, StoreError> {
        self.inner.partition_digest(part)
    }
    fn partition_log_names(
        &self,
        part: u16,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<crate::store::NamePage, StoreError> {
        self.inner.partition_log_names(part, after, until, limit)
    }
    fn partition_event_names(
        &self,
        part: u16,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.partition_event_names(part, visit)
    }
    fn merkle_get(&self, part: u16, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.merkle_get(part, key)
    }
    fn merkle_range(
        &self,
        part: u16,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<crate::store::KeyValues, StoreError> {
        self.inner.merkle_range(part, from, to, limit)
    }
    fn merkle_apply(&self, part: u16, ops: crate::store::KeyOps) -> Result<(), StoreError> {
        self.inner.merkle_apply(part, ops)
    }
    fn merkle_clear(&self, part: u16) -> Result<(), StoreError> {
        self.inner.merkle_clear(part)
    }
    fn drop_partition(&self, part: u16, head: u64) -> Result<(), StoreError> {
        self.inner.drop_partition(part, head)
    }
    fn partition_bytes(&self, part: u16) -> Result<u64, StoreError> {
        self.inner.partition_bytes(part)
    }
    fn log_head(&self) -> Result<LogHead, StoreError> {
        self.inner.log_head()
    }
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.meta(name)
    }
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner.set_meta(name, value)
    }
    fn remove_meta(&self, name: &str) -> Result<(), StoreError> {
        self.inner.remove_meta(name)
    }
    fn meta_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.meta_names(prefix)
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let held = self.hold.lock().unwrap().take();
        if let Some((began, verdict)) = held {
            let _ = began.send(());
            if verdict
                .recv_timeout(DEADLINE)
                .expect("the test gives a verdict")
            {
                return Err(StoreError::Failed("injected commit failure".into()));
            }
        }
        self.inner.commit(commit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.fail_flush.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Failed("injected flush failure".into()));
        }
        self.inner.flush()
    }
    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir);
    config.durability = Durability::Flush;
    config.partitions = 4;
    config.shard_depth = 1;
    config
}

fn path(text: &str) -> Path {
    Path::parse_key(text).unwrap()
}

/// The live value at `p` as readers see it (`None`: nothing live there).
fn value_at(node: &Node, p: &Path) -> Option<bytes::Bytes> {
    node.get_path(p)
        .unwrap()
        .and_then(|stored| stored.event.value.clone())
}

/// Starts a write as a task of its own, so it is sent right away.
fn spawn_write(
    node: &Node,
    write: Write,
) -> tokio::task::JoinHandle<Result<crate::engine::partition::WriteReport, NodeError>> {
    let node = node.clone();
    actix::spawn(async move { node.write(write).await })
}

/// The next item of a session stream, at most [`DEADLINE`] away.
async fn next_item(stream: &mut crate::SessionStream) -> crate::session::StreamItem {
    use futures_util::StreamExt as _;
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

/// Checks `condition` until it holds, yielding between checks; fails the
/// test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + DEADLINE;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// Waits until the partition of `p` has decided `n` writes in all (its
/// store reads, made before a batch is decided, are done by then).
async fn decided(node: &Node, p: &Path, n: u64) {
    let partition = node.partition_actor(node.partition_of(p)).clone();
    eventually(&format!("{n} writes are decided"), || async {
        partition
            .send(crate::engine::partition::Probe)
            .await
            .unwrap()
            .2
            >= n
    })
    .await;
}

/// Waits for a signal from the engine, at most [`DEADLINE`].
async fn within(signal: oneshot::Receiver<()>) -> Result<(), String> {
    match tokio::time::timeout(DEADLINE, signal).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the signal was dropped".into()),
        Err(_) => Err("timed out".into()),
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

#[test]
fn concurrent_create_only_writes_of_one_path_let_exactly_one_through() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).unwrap();
    run(async {
        for round in 0..20 {
            let p = path(&format!("rooms/once-{round}"));
            let writes = (0..32).map(|i| {
                let mut w = Write::set(p.clone(), format!("writer {i}"));
                w.precondition = Precondition::IfAbsent;
                node.write(w)
            });
            let results = join_all(writes).await;
            let created = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(created, 1, "round {round}: {results:?}");
            for r in &results {
                if let Err(e) = r {
                    assert!(
                        matches!(e, NodeError::PreconditionFailed { current: Some(_) }),
                        "round {round}: {e:?}"
                    );
                }
            }
            let history = node.history(p.as_str(), HistoryRange::default()).unwrap();
            assert_eq!(history.len(), 1, "round {round}: one event written");
        }
    });
    node.shutdown();
}

#[test]
fn concurrent_compare_and_set_increments_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).unwrap();
    let p = path("counters/c");
    run(async {
        node.set(p.as_str(), "0").await.unwrap();
        let workers = (0..16).map(|_| {
            let node = node.clone();
            let p = p.clone();
            async move {
                for _ in 0..10 {
                    loop {
                        let current = node.get_path(&p).unwrap().expect("set above");
                        let n: u64 = std::str::from_utf8(current.event.value.as_deref().unwrap())
                            .unwrap()
                            .parse()
                            .unwrap();
                        let mut w = Write::set(p.clone(), (n + 1).to_string());
                        w.precondition = Precondition::IfMatch(current.event.version.clone());
                        match node.write(w).await {
                            Ok(report) => {
                                assert_eq!(report.status, WriteStatus::New);
                                break;
                            }
                            Err(NodeError::PreconditionFailed { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
        });
        join_all(workers).await;
        let last = node.get_path(&p).unwrap().unwrap();
        assert_eq!(last.event.value.as_deref().unwrap(), b"160");
        let history = node.history(p.as_str(), HistoryRange::default()).unwrap();
        assert_eq!(history.len(), 161, "every increment is an event");
    });
    node.shutdown();
}

#[test]
fn a_failed_commit_fails_the_batches_decided_on_top_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    // Same first segment: one partition.
    let (p, q) = (path("rooms/p"), path("rooms/q"));
    assert_eq!(node.partition_of(&p), node.partition_of(&q));
    run(async {
        // W1 creates p; its commit is held.
        let (began, verdict) = store.hold_next_commit();
        let w1 = spawn_write(&node, Write::set(p.clone(), "one"));
        within(began).await.expect("W1's commit began");

        // While it is held, W2 (p must exist: true only because of W1) and
        // W3 (an unrelated path of the same partition) are decided on top of
        // it. Reading q's current value shows W3 is being decided.
        let mut w2 = Write::set(p.clone(), "two");
        w2.precondition = Precondition::IfPresent;
        let w2 = spawn_write(&node, w2);
        let w3 = spawn_write(&node, Write::set(q.clone(), "three"));
        decided(&node, &p, 3).await;

        verdict.send(true).unwrap();
        let results = [w1.await.unwrap(), w2.await.unwrap(), w3.await.unwrap()];
        for (i, r) in results.iter().enumerate() {
            assert!(
                matches!(r, Err(NodeError::Store(_))),
                "W{} must fail with the commit: {r:?}",
                i + 1
            );
        }

        // Nothing of them was written, and the partition decides from the
        // store again: p does not exist. It hears of a failed batch before
        // the batch's writers are answered, so the very next write is
        // decided afresh.
        assert!(node.get_path(&p).unwrap().is_none());
        assert!(node.get_path(&q).unwrap().is_none());
        let mut again = Write::set(p.clone(), "again");
        again.precondition = Precondition::IfPresent;
        assert!(matches!(
            node.write(again).await,
            Err(NodeError::PreconditionFailed { current: None })
        ));
        // And writes go through once the store works.
        let report = node.write(Write::set(p.clone(), "four")).await.unwrap();
        assert_eq!(report.status, WriteStatus::New);
        assert!(report.created);
        assert_eq!(
            node.get_path(&p)
                .unwrap()
                .unwrap()
                .event
                .value
                .as_deref()
                .unwrap(),
            b"four"
        );
    });
    node.shutdown();
    let head = store.log_head().unwrap().seq;
    let seqs: HashSet<u64> = store
        .log_read(&Path::root(), 0, head, 100)
        .unwrap()
        .entries
        .iter()
        .filter_map(|s| s.seq)
        .collect();
    assert_eq!(seqs, HashSet::from([1]), "one event in the log, seq 1");
}

#[test]
fn answers_given_while_a_write_is_in_flight_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    let (p, r) = (path("rooms/p"), path("rooms/r"));
    assert_eq!(node.partition_of(&p), node.partition_of(&r));
    run(async {
        // W1 at an explicit time: sent again, it is the same event.
        let mut w1 = Write::set(p.clone(), "one");
        w1.time = Some(crate::model::version::wall_micros());
        let (began, verdict) = store.hold_next_commit();
        let first = spawn_write(&node, w1.clone());
        within(began).await.expect("W1's commit began");

        // The same event again is `existing` only because of W1 in flight;
        // a refused write of another path shows when that batch is decided.
        let again = spawn_write(&node, w1);
        let mut refused = Write::set(r.clone(), "x");
        refused.precondition = Precondition::IfPresent;
        let refused = spawn_write(&node, refused);
        decided(&node, &p, 3).await;

        verdict.send(true).unwrap();
        // Decided while W1 was in flight, the refusal waits behind it too,
        // and fails with it rather than answer from a state that never was.
        assert!(matches!(refused.await.unwrap(), Err(NodeError::Store(_))));
        assert!(matches!(first.await.unwrap(), Err(NodeError::Store(_))));
        let again = again.await.unwrap();
        assert!(
            matches!(again, Err(NodeError::Store(_))),
            "`existing` must not be answered for a write that failed: {again:?}"
        );
        assert!(node.get_path(&p).unwrap().is_none());
    });
    node.shutdown();
}

#[test]
fn after_a_failed_batch_the_partition_decides_from_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    let (p, q) = (path("rooms/p"), path("rooms/q"));
    run(async {
        node.set(p.as_str(), "zero").await.unwrap();
        // B1 (p = one) is held; B2 (p = two) is decided on top of it.
        let (began1, verdict1) = store.hold_next_commit();
        let one = spawn_write(&node, Write::set(p.clone(), "one"));
        within(began1).await.expect("B1's commit began");
        let two = spawn_write(&node, Write::set(p.clone(), "two"));
        let other = spawn_write(&node, Write::set(q.clone(), "x"));
        decided(&node, &p, 3).await;
        // B1 commits; B2's commit fails.
        let (began2, verdict2) = store.hold_next_commit();
        verdict1.send(false).unwrap();
        let one = one.await.unwrap().expect("B1 commits");
        within(began2).await.expect("B2's commit began");
        verdict2.send(true).unwrap();
        assert!(two.await.unwrap().is_err());
        assert!(other.await.unwrap().is_err());

        // The store holds "one"; the partition must decide from it, not
        // from "zero" (before B1) nor "two" (failed).
        assert_eq!(value_at(&node, &p).as_deref(), Some(&b"one"[..]));
        let mut w = Write::set(p.clone(), "three");
        w.precondition = Precondition::IfMatch(one.version.clone());
        match node.write(w).await {
            Ok(report) => assert_eq!(report.previous, Some(one.version.clone())),
            Err(e) => panic!("a write on top of the committed value: {e:?}"),
        }
    });
    node.shutdown();
}

#[test]
fn writes_waiting_for_a_free_batch_slot_go_on_when_a_commit_ends() {
    writes_waiting_for_a_slot(false);
}

#[test]
fn writes_waiting_for_a_free_batch_slot_go_on_when_a_commit_fails() {
    writes_waiting_for_a_slot(true);
}

/// Takes every batch slot of one partition while the first commit is held,
/// queues two more writes, then lets that commit end (`fail`: with an
/// error). Nothing else reaches the partition: the end of the commit alone
/// must let the queued writes go on. After a failure, the batches decided on
/// top of the failed one fail too, and the queued writes, decided afresh,
/// commit.
fn writes_waiting_for_a_slot(fail: bool) {
    use crate::engine::partition::{Probe, MAX_BATCHES_IN_FLIGHT};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    let paths: Vec<Path> = (0..MAX_BATCHES_IN_FLIGHT + 2)
        .map(|i| path(&format!("rooms/p{i}")))
        .collect();
    let partition = node.partition_actor(node.partition_of(&paths[0])).clone();
    run(async {
        // The first batch's commit is held; the next ones are sent one at a
        // time, each decided (its path read) before the next, until every
        // slot is taken.
        let (began, verdict) = store.hold_next_commit();
        let mut writes = vec![spawn_write(&node, Write::set(paths[0].clone(), "0"))];
        within(began).await.expect("the first commit began");
        for (i, p) in paths.iter().enumerate().take(MAX_BATCHES_IN_FLIGHT).skip(1) {
            writes.push(spawn_write(&node, Write::set(p.clone(), i.to_string())));
            decided(&node, p, i as u64 + 1).await;
        }
        // Two more writes find no free slot and wait in the queue.
        for (i, p) in paths.iter().enumerate().skip(MAX_BATCHES_IN_FLIGHT) {
            writes.push(spawn_write(&node, Write::set(p.clone(), i.to_string())));
        }
        eventually("every slot taken and two writes queued", || async {
            let (in_flight, queued, _) = partition.send(Probe).await.unwrap();
            (in_flight, queued) == (MAX_BATCHES_IN_FLIGHT, 2)
        })
        .await;
        verdict.send(fail).unwrap();
        for (i, w) in writes.into_iter().enumerate() {
            let result = tokio::time::timeout(DEADLINE, w)
                .await
                .unwrap_or_else(|_| panic!("write {i} is answered"))
                .unwrap();
            if fail && i < MAX_BATCHES_IN_FLIGHT {
                assert!(
                    matches!(result, Err(NodeError::Store(_))),
                    "write {i} was decided on top of the failed commit: {result:?}"
                );
            } else {
                let report = result.unwrap_or_else(|e| panic!("write {i} commits: {e:?}"));
                assert_eq!(report.status, WriteStatus::New);
            }
        }
        for (i, p) in paths.iter().enumerate() {
            let value = value_at(&node, p);
            if fail && i < MAX_BATCHES_IN_FLIGHT {
                assert!(value.is_none(), "write {i} failed: nothing stored");
            } else {
                assert_eq!(value.as_deref(), Some(i.to_string().as_bytes()));
            }
        }
    });
    node.shutdown();
}

#[test]
fn writers_wait_for_room_when_a_partition_inbox_is_full_and_its_queue_stays_bounded() {
    use crate::engine::partition::{Probe, INBOX_WRITES, MAX_QUEUED_WRITES};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    let blocker = path("rooms/blocker");
    let partition = node.partition_actor(node.partition_of(&blocker)).clone();
    // More writes than the partition's queue and inbox hold together.
    let n = MAX_QUEUED_WRITES + INBOX_WRITES + 200;
    run(async {
        // The partition waits for a store read before it can decide, so it
        // takes no more writes than its queue holds.
        let (began, release) = store.hold_reads_of(&blocker);
        let first = spawn_write(&node, Write::set(blocker.clone(), "b"));
        within(began).await.expect("the partition's read is held");
        let writes: Vec<_> = (0..n)
            .map(|i| {
                spawn_write(
                    &node,
                    Write::set(path(&format!("rooms/k{i}")), i.to_string()),
                )
            })
            .collect();
        // Writers that find the inbox full wait for room instead of failing.
        eventually("writes found the inbox full", || async {
            node.stats().writes_waited.load(Ordering::Relaxed) >= 100
        })
        .await;
        let (_, waiting, _) = partition.send(Probe).await.unwrap();
        assert!(
            waiting <= MAX_QUEUED_WRITES + INBOX_WRITES,
            "what a partition holds stays bounded: {waiting}"
        );
        release.send(()).unwrap();
        first.await.unwrap().expect("the held write commits");
        for (i, w) in join_all(writes).await.into_iter().enumerate() {
            let report = w
                .unwrap()
                .unwrap_or_else(|e| panic!("write {i} commits: {e:?}"));
            assert_eq!(report.status, WriteStatus::New);
        }
        for i in [0, n / 2, n - 1] {
            assert_eq!(
                value_at(&node, &path(&format!("rooms/k{i}"))).as_deref(),
                Some(i.to_string().as_bytes())
            );
        }
    });
    node.shutdown();
}

#[test]
fn a_cold_read_in_one_partition_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    let slow = path("rooms/slow");
    let other = (0..100)
        .map(|i| path(&format!("other{i}/x")))
        .find(|p| node.partition_of(p) != node.partition_of(&slow))
        .expect("a path of another partition");
    run(async {
        // One partition's read of a path it does not know is held (a disk
        // that is slow to answer)...
        let (began, release) = store.hold_reads_of(&slow);
        let held = spawn_write(&node, Write::set(slow.clone(), "late"));
        within(began).await.expect("the read is held");
        // ...while another partition decides and commits, and so does a
        // hot path of the held one's neighbours on other partitions.
        for i in 0..3 {
            let report = tokio::time::timeout(
                DEADLINE,
                node.write(Write::set(other.clone(), i.to_string())),
            )
            .await
            .expect("another partition is not held up by the read")
            .unwrap();
            assert_eq!(report.status, WriteStatus::New);
        }
        release.send(()).unwrap();
        held.await.unwrap().expect("the held write commits");
        assert_eq!(value_at(&node, &slow).as_deref(), Some(&b"late"[..]));
    });
    node.shutdown();
}

#[test]
fn a_failed_flush_fails_the_write_and_every_later_one_until_a_restart() {
    use crate::session::StreamItem;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    run(async {
        let mut stream = node.subscribe("rooms", None).unwrap();
        assert!(matches!(
            next_item(&mut stream).await,
            StreamItem::Ready { .. }
        ));
        store.fail_flush.store(true, Ordering::SeqCst);
        // Applied but not known to be durable: the writer hears so.
        let result = node.write(Write::set(path("rooms/x"), "one")).await;
        match result {
            Err(NodeError::Store(e)) => assert!(
                e.to_string().contains("injected flush failure"),
                "the error names the failed flush: {e}"
            ),
            other => panic!("a write whose flush failed must not be acked: {other:?}"),
        }
        // What the store holds, readers and streams see alike.
        let stored = node.get_path(&path("rooms/x")).unwrap().expect("applied");
        assert_eq!(stored.event.value.as_deref(), Some(&b"one"[..]));
        loop {
            match next_item(&mut stream).await {
                StreamItem::Update(change) => {
                    assert_eq!(change.event.path.as_str(), "rooms/x");
                    assert_eq!(change.event.version, stored.event.version);
                    break;
                }
                StreamItem::Ping { .. } => continue,
                other => panic!("expected the update, got {other:?}"),
            }
        }
        // A later fsync could succeed over pages the failed one lost, and
        // make a lost write look durable: no later write is acked, in any
        // partition, though the store's next flush would work.
        for p in ["rooms/x", "other/y"] {
            match node.write(Write::set(path(p), "two")).await {
                Err(NodeError::Store(e)) => assert!(
                    e.to_string().contains("refused until the node restarts"),
                    "{e}"
                ),
                other => panic!("a write after a failed flush was not refused: {other:?}"),
            }
        }
        assert!(node.stats().store_failed.load(Ordering::Relaxed));
        // Reads go on.
        assert_eq!(
            value_at(&node, &path("rooms/x")).as_deref(),
            Some(&b"one"[..])
        );
    });
    node.shutdown();
    drop((node, store));
    // A restart takes writes again.
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store).unwrap();
    run(async {
        node.write(Write::set(path("rooms/x"), "three"))
            .await
            .expect("a restarted node takes writes");
    });
    node.shutdown();
}

#[test]
fn a_subscriber_opened_outside_actix_receives_changes() {
    use crate::session::StreamItem;

    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).unwrap();
    // No arbiter on this thread: the session runs on the engine's.
    assert!(actix::Arbiter::try_current().is_none());
    let mut stream = node.subscribe("rooms", None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(matches!(
            next_item(&mut stream).await,
            StreamItem::Ready { .. }
        ));
        node.set("rooms/1", "hello").await.unwrap();
        loop {
            match next_item(&mut stream).await {
                StreamItem::Update(change) => {
                    assert_eq!(change.event.path.as_str(), "rooms/1");
                    break;
                }
                StreamItem::Ping { .. } => continue,
                other => panic!("expected the update, got {other:?}"),
            }
        }
    });
    node.shutdown();
}

#[test]
fn a_snapshot_the_store_cannot_read_ends_the_stream_with_an_error_never_ready() {
    use crate::session::StreamItem;
    use futures_util::StreamExt as _;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    run(async {
        node.write(Write::set(path("rooms/a"), "1")).await.unwrap();
        store.fail_scans.store(true, Ordering::SeqCst);
        let mut stream = node.subscribe("rooms", None).unwrap();
        match next_item(&mut stream).await {
            StreamItem::Failed { prefix, detail } => {
                assert_eq!(prefix.as_str(), "rooms");
                assert!(detail.contains("injected scan failure"), "{detail}");
            }
            other => panic!("a failed snapshot must end with an error, got {other:?}"),
        }
        let end = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("the stream ends");
        assert!(end.is_none(), "nothing after the error: {end:?}");
    });
    node.shutdown();
}

#[test]
fn a_long_snapshot_read_does_not_hold_up_other_sessions_on_its_thread() {
    use crate::session::StreamItem;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let node = Node::start(config(dir.path()), store.clone()).unwrap();
    run(async {
        // Both sessions are opened outside actix: they share the engine's
        // one session thread.
        let (began, release) = {
            let (began_tx, began) = oneshot::channel();
            let (release, release_rx) = mpsc::channel();
            *store.hold_scan.lock().unwrap() = Some((path("slow"), began_tx, release_rx));
            (began, release)
        };
        let mut slow = node.subscribe("slow", None).unwrap();
        within(began).await.expect("the slow snapshot's read began");
        let mut other = node.subscribe("rooms", None).unwrap();
        assert!(matches!(
            next_item(&mut other).await,
            StreamItem::Ready { .. }
        ));
        node.write(Write::set(path("rooms/x"), "1")).await.unwrap();
        match next_item(&mut other).await {
            StreamItem::Update(change) => assert_eq!(change.event.path.as_str(), "rooms/x"),
            item => panic!("expected the update, got {item:?}"),
        }
        release.send(()).unwrap();
        assert!(matches!(
            next_item(&mut slow).await,
            StreamItem::Ready { .. }
        ));
    });
    node.shutdown();
}
