//! Reclaiming expired values' space (`Store::reclaim`): a pass goes past
//! the paths whose expiry the change log still holds, step after step,
//! and reclaims the others.

use std::sync::Arc;

use bytes::Bytes;

use super::tests::entry;
use super::*;
use crate::model::{Event, NodeId, Version};
use crate::store::{Budget, Commit, Resume};

/// A value of `path` at `time` that expires at `expires_at`, and its
/// expiry (version: 1 µs later, no value).
fn expired(path: &str, time: u64, expires_at: u64) -> (Arc<Event>, Arc<Event>) {
    let value = Event {
        path: Path::parse(path).unwrap(),
        version: Version::new(time, NodeId::new("n").unwrap()),
        value: Some(Bytes::from_static(b"brief")),
        content_type: None,
        expires_at: Some(expires_at),
        author: None,
    };
    let expiry = Event {
        version: Version::new(time + 1, NodeId::new("n").unwrap()),
        value: None,
        ..value.clone()
    };
    (Arc::new(value), Arc::new(expiry))
}

fn times(s: &SledStore, path: &str) -> Vec<u64> {
    s.history(&Path::parse(path).unwrap(), 0, u64::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|st| st.event.version.time)
        .collect()
}

#[test]
fn a_reclaim_pass_goes_past_paths_not_yet_due_and_reclaims_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(1, 1).unwrap();
    // A log record per commit, so that the first one can be trimmed alone.
    let s = SledStore::open_with(dir.path(), 1 << 20, SLED_FLUSH_EVERY, layout)
        .unwrap()
        .fold_after(1);
    // `p/z` expired long ago: its value and expiry are the log's first
    // record, which the last commit trims.
    let (value, expiry) = expired("p/z", 10, 20);
    s.commit(&Commit {
        entries: vec![entry(value, 1), entry(expiry, 2)],
        head_seq: 2,
        clock: 11,
        trim_below: None,
    })
    .unwrap();
    // Ten paths that sort before it expired since: the log holds them.
    let mut seq = 2;
    for i in 0..10u64 {
        let (value, expiry) = expired(&format!("p/a{i}"), 100 + 10 * i, 200);
        s.commit(&Commit {
            entries: vec![entry(value, seq + 1), entry(expiry, seq + 2)],
            head_seq: seq + 2,
            clock: 101 + 10 * i,
            trim_below: (i == 9).then_some(3),
        })
        .unwrap();
        seq += 2;
    }
    assert!(s.trimmed_through(0) >= 2, "the first record left the log");
    for path in ["p/z"]
        .into_iter()
        .map(str::to_string)
        .chain((0..10).map(|i| format!("p/a{i}")))
    {
        s.queue_reclaim(&Path::parse(&path).unwrap()).unwrap();
    }
    // Steps of two paths, as the committer runs them, until the partition
    // is done: the ten not yet due do not hold up the pass.
    let mut resume = Resume::Start;
    let mut steps = 0;
    let mut dropped = 0;
    while resume != Resume::Done {
        let budget = Budget {
            work: 2,
            until: std::time::Instant::now() + std::time::Duration::from_secs(5),
        };
        let done = s.reclaim(0, &resume, budget).unwrap();
        dropped += done.dropped;
        resume = done.resume;
        steps += 1;
        assert!(steps < 20, "the pass never ends: {resume:?}");
    }
    assert_eq!(dropped, 1);
    assert_eq!(times(&s, "p/z"), [11], "only the expiry stays");
    assert_eq!(s.floor_of(&Path::parse("p/z").unwrap()).unwrap(), Some(20));
    assert_eq!(times(&s, "p/a3"), [130, 131], "not yet: still in the log");
    // The ten stay queued for a later pass; `p/z` is done.
    let queued = s.tree.scan_prefix([keys::RECLAIM]).keys().count();
    assert_eq!(queued, 10);
}
