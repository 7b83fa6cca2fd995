//! Tests of reading a path as it stood at a time (`Store::event_at`), across
//! the open page, full pages and events that arrived too late.

use proptest::prelude::*;

use super::tests::{entry, ev, late};
use super::*;
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
    s.event_at(path, time)
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
    let deleted = s.event_at(&p, 75).unwrap().unwrap();
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
