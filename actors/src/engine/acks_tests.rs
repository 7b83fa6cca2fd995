//! Tests of writes that wait for other owners' acknowledgements after
//! their local commit (the answer point the cluster's `w` uses).

use std::time::Duration;

use crate::config::{Config, Durability};
use crate::engine::acks::WaitFor;
use crate::engine::partition::{Write, WriteStatus};
use crate::error::NodeError;
use crate::model::{Digest, Event, NodeId, Path, Version};
use crate::node::Node;

/// Long enough never to pass in a test that expects the acks.
const LONG: Duration = Duration::from_secs(30);

fn node(dir: &std::path::Path) -> Node {
    let mut config = Config::new(dir);
    config.durability = Durability::Flush;
    config.node_id = Some("n1".into());
    Node::open(config).unwrap()
}

/// A write at `time` (so its version is known before it is answered)
/// waiting for `acks` acknowledgements.
fn waiting(path: &Path, time: u64, acks: usize, timeout: Duration) -> Write {
    let mut w = Write::set(path.clone(), "v");
    w.time = Some(time);
    w.wait = Some(WaitFor {
        acks,
        of: acks + 1,
        timeout,
    });
    w
}

fn version(time: u64) -> Version {
    Version::new(time, NodeId::new("n1").unwrap())
}

/// The digest of an event with `value` and nothing else (as [`waiting`]
/// writes).
fn digest_of(value: &str) -> Digest {
    Event {
        path: Path::parse("any").unwrap(),
        version: version(1),
        value: Some(bytes::Bytes::from(value.to_string())),
        content_type: None,
        expires_at: None,
        author: None,
    }
    .digest()
}

/// An acknowledgement's event, borrowed.
fn as_ack((p, v, d): &(Path, Version, Digest)) -> (&Path, &Version, Digest) {
    (p, v, *d)
}

/// The event [`waiting`] writes at `time`, as an acknowledgement names it.
fn acked(path: &Path, time: u64) -> (Path, Version, Digest) {
    (path.clone(), version(time), digest_of("v"))
}

/// Starts `w` as a task of its own (it is sent at once), and waits until
/// `ready` holds, within [`LONG`].
async fn spawn_until(
    node: &Node,
    w: Write,
    what: &str,
    ready: impl Fn() -> bool,
) -> tokio::task::JoinHandle<Result<crate::engine::partition::WriteReport, NodeError>> {
    let task = {
        let node = node.clone();
        actix::spawn(async move { node.write(w).await })
    };
    let deadline = std::time::Instant::now() + LONG;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        actix::clock::sleep(Duration::from_millis(2)).await;
    }
    task
}

#[test]
fn a_write_is_answered_once_enough_owners_acked_and_others_go_on_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let p = Path::parse("rooms/1/a").unwrap();
    actix::System::new().block_on(async {
        // Committed locally, but not answered: it waits for two acks.
        let writer = spawn_until(
            &node,
            waiting(&p, 1_000, 2, LONG),
            "never committed",
            || node.get_path(&p).unwrap().is_some(),
        )
        .await;
        // Other writes, to the same partition too, are answered meanwhile.
        let other = node.set("rooms/1/b", "x").await.unwrap();
        assert_eq!((other.acked, other.of), (1, 1));
        assert!(!writer.is_finished(), "answered before any ack");
        assert!(node.ack(as_ack(&acked(&p, 1_000)), "b"));
        // The same owner again (a stream resent) still counts once.
        assert!(node.ack(as_ack(&acked(&p, 1_000)), "b"));
        actix::clock::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "answered after one ack of two");
        assert!(node.ack(as_ack(&acked(&p, 1_000)), "c"));
        let report = writer.await.unwrap().unwrap();
        assert_eq!((report.acked, report.of), (3, 3));
        assert_eq!(node.inner_acks_sizes(), (0, 0), "nothing left behind");
    });
    node.shutdown();
}

#[test]
fn too_few_acks_in_time_fail_with_the_real_counts() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let p = Path::parse("rooms/2/a").unwrap();
    actix::System::new().block_on(async {
        // One ack of the two needed comes first (before the writer waits).
        assert!(!node.ack(as_ack(&acked(&p, 2_000)), "b"));
        assert!(!node.ack(as_ack(&acked(&p, 2_000)), "b"));
        let failed = node
            .write(waiting(&p, 2_000, 2, Duration::from_millis(200)))
            .await;
        match failed {
            Err(NodeError::Unavailable { acked, needed, of }) => {
                assert_eq!((acked, needed, of), (2, 3, 3));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // It is stored here all the same (LWW: it may reach the others later).
        let stored = node.get_path(&p).unwrap().unwrap();
        assert_eq!(stored.event.version, version(2_000));
        assert_eq!(node.inner_acks_sizes(), (0, 0));
    });
    node.shutdown();
}

#[test]
fn acks_that_come_first_are_counted_when_the_writer_waits() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let p = Path::parse("rooms/3/a").unwrap();
    actix::System::new().block_on(async {
        node.ack(as_ack(&acked(&p, 3_000)), "b");
        let report = node.write(waiting(&p, 3_000, 1, LONG)).await.unwrap();
        assert_eq!((report.acked, report.of), (2, 2));
        // A write that waits for nothing is answered after its commit.
        let mut w = Write::set(p.clone(), "again");
        w.wait = Some(WaitFor {
            acks: 0,
            of: 1,
            timeout: LONG,
        });
        assert_eq!(node.write(w).await.unwrap().acked, 1);
    });
    node.shutdown();
}

#[test]
fn a_writer_that_goes_away_leaves_nothing_behind_and_retries_get_their_own_count() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let p = Path::parse("rooms/4/a").unwrap();
    actix::System::new().block_on(async {
        // A writer whose client goes away while it waits.
        let gone = spawn_until(&node, waiting(&p, 4_000, 2, LONG), "never waited", || {
            node.inner_acks_sizes().0 > 0
        })
        .await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(node.inner_acks_sizes(), (0, 0), "the waiter left with it");
        // Two acks heard, then a retry of the same event (held already: it
        // commits nothing, and no ack of it is coming) is answered at once
        // with them counted, whatever it needs: the cluster's route asks
        // the owners for the rest.
        let v = acked(&p, 4_000);
        node.ack(as_ack(&v), "b");
        node.ack(as_ack(&v), "c");
        let retry = node.write(waiting(&p, 4_000, 2, LONG)).await.unwrap();
        assert_eq!(
            (retry.status, retry.acked, retry.of),
            (WriteStatus::Existing, 3, 3)
        );
        let more = node.write(waiting(&p, 4_000, 3, LONG)).await.unwrap();
        assert_eq!(more.acked, 3);
        assert_eq!(node.inner_acks_sizes(), (0, 1), "kept for the next retry");
    });
    node.shutdown();
}

#[test]
fn an_ack_of_another_event_with_the_same_version_counts_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let p = Path::parse("rooms/5/a").unwrap();
    actix::System::new().block_on(async {
        // Two writes with one explicit time at one node share a version: an
        // owner's acknowledgement of the first, kept, is not the second's.
        let first = acked(&p, 5_000);
        node.ack(as_ack(&first), "b");
        node.ack(as_ack(&first), "c");
        let mut other = waiting(&p, 5_000, 2, Duration::from_millis(200));
        other.value = Some(bytes::Bytes::from_static(b"other"));
        let answer = node.write(other).await;
        assert!(
            matches!(answer, Err(NodeError::Unavailable { acked: 1, .. })),
            "{answer:?}"
        );
        // Acknowledgements of it, by its digest, count.
        let mut again = waiting(&p, 5_000, 1, LONG);
        again.value = Some(bytes::Bytes::from_static(b"other"));
        let second = (p.clone(), version(5_000), digest_of("other"));
        node.ack(as_ack(&second), "b");
        assert_eq!(node.write(again).await.unwrap().acked, 2);
    });
    node.shutdown();
}
