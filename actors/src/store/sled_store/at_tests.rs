//! Tests of reading a path as it stood at a time (`Store::event_at`), across
//! the open page, full pages and events that arrived too late.

use proptest::prelude::*;

use super::tests::{entry, ev, late};
use super::*;
use crate::model::{AsOf, NodeId};
use crate::store::Commit;

/// What stood at `time`, computed from the whole history.
fn naive_at(s: &SledStore, path: &Path, time: u64) -> Option<u64> {
    s.history(path, 0, u64::MAX, usize::MAX)
        .unwrap()
        .iter()
        .filter(|st| st.event.version.time <= time)
        .map(|st| st.event.version.time)
        .next_back()
}

fn at(s: &SledStore, path: &Path, time: u64) -> Option<u64> {
    s.event_at(path, &AsOf::time(time))
        .unwrap()
        .map(|st| st.event.version.time)
}

#[test]
fn a_path_reads_as_it_stood_at_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let p = Path::parse("a/b").unwrap();
    assert_eq!(at(&s, &p, u64::MAX), None, "nothing written yet");
    // Times 10, 20, … 500: enough for several full pages and an open page.
    let entries: Vec<_> = (1..=50)
        .map(|i| {
            let value = if i % 7 == 0 { None } else { Some("v") };
            entry(ev("a/b", i * 10, value), i)
        })
        .collect();
    s.commit(&Commit {
        entries,
        head_seq: 50,
        clock: 500,
        trim_below: None,
    })
    .unwrap();
    for time in [
        0,
        9,
        10,
        11,
        15,
        19,
        20,
        99,
        100,
        255,
        499,
        500,
        501,
        u64::MAX,
    ] {
        assert_eq!(at(&s, &p, time), naive_at(&s, &p, time), "at {time}");
    }
    assert_eq!(at(&s, &p, 9), None, "before the first event");
    assert_eq!(at(&s, &p, 15), Some(10));
    // A tombstone is what stood then.
    let deleted = s.event_at(&p, &AsOf::time(75)).unwrap().unwrap();
    assert_eq!(deleted.event.version.time, 70);
    assert!(deleted.event.value.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random times, committed in random order and groups (late events take
    /// their sorted place in history): every read at a time agrees with the
    /// whole history.
    #[test]
    fn event_at_agrees_with_the_history(
        times in proptest::collection::vec(1u64..2_000, 1..120),
        groups in 1usize..6,
        probes in proptest::collection::vec(0u64..2_100, 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let p = Path::parse("p").unwrap();
        let mut seq = 0;
        let mut newest = 0;
        // The partition never commits an event twice.
        let mut seen = std::collections::HashSet::new();
        for chunk in times.chunks(times.len().div_ceil(groups)) {
            let mut entries = Vec::new();
            for &t in chunk {
                if !seen.insert(t) {
                    continue;
                }
                seq += 1;
                let e = ev("p", t, Some("x"));
                if t > newest {
                    newest = t;
                    entries.push(entry(e, seq));
                } else {
                    entries.push(late(e, seq));
                }
            }
            s.commit(&Commit { entries, head_seq: seq, clock: newest, trim_below: None }).unwrap();
        }
        for &time in probes.iter().chain(&times) {
            prop_assert_eq!(at(&s, &p, time), naive_at(&s, &p, time), "at {}", time);
        }
    }
}

#[test]
fn a_version_bound_takes_the_events_ordered_at_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let by = |time: u64, node: &str| {
        let mut e = (*ev("v", time, Some("x"))).clone();
        e.version = Version::new(time, NodeId::new(node).unwrap());
        std::sync::Arc::new(e)
    };
    // Enough events before time 100 to fill pages, then three at 100.
    let mut entries: Vec<_> = (1..=20).map(|i| entry(by(i, "n"), i)).collect();
    entries.push(entry(by(100, "a"), 21));
    entries.push(entry(by(100, "b"), 22));
    entries.push(entry(by(100, "c"), 23));
    s.commit(&Commit {
        entries,
        head_seq: 23,
        clock: 100,
        trim_below: None,
    })
    .unwrap();
    let p = Path::parse("v").unwrap();
    let found = |time: u64, node: Option<&str>| {
        let as_of = AsOf {
            time,
            node: node.map(|n| NodeId::new(n).unwrap()),
        };
        s.event_at(&p, &as_of)
            .unwrap()
            .map(|st| st.event.version.to_string())
    };
    assert_eq!(found(100, None).as_deref(), Some("100.c"));
    assert_eq!(found(100, Some("b")).as_deref(), Some("100.b"));
    assert_eq!(found(100, Some("bb")).as_deref(), Some("100.b"));
    assert_eq!(found(100, Some("a0")).as_deref(), Some("100.a"));
    assert_eq!(found(100, Some("A")).as_deref(), Some("20.n"));
    assert_eq!(found(7, Some("z")).as_deref(), Some("7.n"));
    assert_eq!(found(0, None), None);
}
