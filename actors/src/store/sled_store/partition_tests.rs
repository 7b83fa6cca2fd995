//! Tests of the partition as a unit of state: each partition's log (sealed
//! and open records, trimming), prefix reads that merge partitions, the
//! partition digest and dropping a partition.

use std::collections::BTreeSet;

use super::tests::{entry, ev, log_after, seqs};
use super::*;
use crate::store::CommitEntry;

/// A store of 4 partitions picked by the first segment.
/// (Folding its pending log entries past 50: many small records, and
/// pending entries beside them.)
fn small(dir: &FsPath) -> SledStore {
    SledStore::open_with(dir, 1 << 20, SLED_FLUSH_EVERY, Layout::new(4, 1).unwrap())
        .unwrap()
        .fold_after(50)
}

/// Commits `events` (path, time) with seqs from `head + 1`, one commit per
/// `per_commit` events; returns the new head.
fn write(s: &SledStore, head: u64, events: &[(String, u64)], per_commit: usize) -> u64 {
    let mut seq = head;
    for chunk in events.chunks(per_commit) {
        let entries: Vec<CommitEntry> = chunk
            .iter()
            .map(|(p, t)| {
                seq += 1;
                entry(ev(p, *t, Some("v")), seq)
            })
            .collect();
        s.commit(&Commit {
            entries,
            head_seq: seq,
            clock: seq,
            trim_below: None,
        })
        .unwrap();
    }
    seq
}

/// `n` events over 12 groups × 5 paths, times increasing.
fn scattered(n: u64, time_from: u64) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| (format!("g{}/p{}", i * 5 % 12, i % 5), time_from + i))
        .collect()
}

/// Reads `prefix`'s log after `after` in steps of `step`, as a session
/// replays it.
fn replay(s: &SledStore, prefix: &Path, after: u64, until: u64, step: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut from = after;
    while from < until {
        let page = s.log_read(prefix, from, until, step).unwrap();
        assert!(!page.trimmed);
        assert!(page.through > from, "a read makes progress");
        out.extend(seqs(&page.entries));
        from = page.through;
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whatever the commits' sizes (so records seal at any point), a
    /// prefix's log read in any steps from any seq is exactly the events
    /// under it, in seq order.
    #[test]
    fn a_prefix_log_is_the_events_under_it_in_seq_order(
        n in 1u64..400,
        per_commit in 1usize..40,
        after_frac in 0u64..100,
        step in 1usize..50,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = small(dir.path());
        let events = scattered(n, 100);
        let head = write(&s, 0, &events, per_commit);
        let after = n * after_frac / 100;
        for prefix in ["", "g3", "g3/p1", "g10", "g1"] {
            let p = Path::parse(prefix).unwrap();
            let want: Vec<u64> = events
                .iter()
                .enumerate()
                .map(|(i, (path, _))| (i as u64 + 1, path))
                .filter(|(q, path)| *q > after && p.covers(&Path::parse(path).unwrap()))
                .map(|(q, _)| q)
                .collect();
            proptest::prop_assert_eq!(replay(&s, &p, after, head, step), want, "prefix '{}'", prefix);
        }
    }
}

#[test]
fn a_partition_log_reads_its_own_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = small(dir.path());
    let events = scattered(520, 100);
    let head = write(&s, 0, &events, 7);
    let mut all = BTreeSet::new();
    for part in 0..4u16 {
        let page = s.partition_log(part, 0, head, 10_000).unwrap();
        assert!(!page.trimmed);
        for st in &page.entries {
            assert_eq!(s.layout.partition_of(&st.event.path), part);
        }
        let got = seqs(&page.entries);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in seq order");
        all.extend(got);
    }
    assert_eq!(all.len(), 520, "the partitions' logs hold every event once");
    // Folded records and pending entries both: most of the log is folded.
    let records = s.tree.scan_prefix([keys::LOG]).count();
    assert!(records >= 8, "{records} records");
    let pending = s.pending_read().entries;
    assert!(pending > 0 && pending <= 50, "{pending} pending");
    // Read back the same after a restart (the pending entries from sled).
    drop(s);
    let s = small(dir.path());
    let again: usize = (0..4u16)
        .map(|p| s.partition_log(p, 0, head, 10_000).unwrap().entries.len())
        .sum();
    assert_eq!(again, 520);
}

#[test]
fn trimming_takes_whole_sealed_records_and_says_so_to_readers() {
    let dir = tempfile::tempdir().unwrap();
    let s = small(dir.path());
    let head = write(&s, 0, &scattered(2000, 100), 10);
    // Every partition's turn comes within 4 commits.
    let mut seq = head;
    for i in 0..8 {
        seq += 1;
        s.commit(&Commit {
            entries: vec![entry(ev("g0/x", 10_000 + i, Some("v")), seq)],
            head_seq: seq,
            clock: seq,
            trim_below: Some(1500),
        })
        .unwrap();
    }
    let root = Path::root();
    let marks: Vec<u64> = (0..4).map(|p| s.trimmed_through(p)).collect();
    let used: BTreeSet<u16> = (0..12)
        .map(|g| s.layout.partition_of_str(&format!("g{g}")))
        .collect();
    assert!(used.len() > 1, "the test spreads over partitions");
    for (part, &mark) in marks.iter().enumerate() {
        if !used.contains(&(part as u16)) {
            assert_eq!(mark, 0, "an empty partition has nothing to trim");
            continue;
        }
        assert!(
            mark > 1000 && mark < 1500,
            "partition {part} trimmed through {mark}"
        );
        let page = s.partition_log(part as u16, mark, seq, 10_000).unwrap();
        assert!(!page.trimmed, "from its mark on, the log is whole");
        assert!(
            s.partition_log(part as u16, mark - 1, seq, 10)
                .unwrap()
                .trimmed
        );
    }
    assert!(s.log_read(&root, 1000, seq, 10).unwrap().trimmed);
    let from = *marks.iter().max().unwrap();
    assert_eq!(
        replay(&s, &root, from, seq, 100),
        (from + 1..=seq).collect::<Vec<_>>()
    );
    // The marks survive a restart.
    drop(s);
    let s = small(dir.path());
    assert_eq!(
        (0..4).map(|p| s.trimmed_through(p)).collect::<Vec<_>>(),
        marks
    );
}

#[test]
fn a_shallow_prefix_lists_every_partition_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = small(dir.path());
    write(&s, 0, &scattered(300, 100), 9);
    let root = Path::root();
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let chunk = s.scan_latest(&root, after.as_deref(), 7).unwrap();
        let Some(last) = chunk.last() else { break };
        after = Some(last.event.path.to_string());
        listed.extend(chunk.into_iter().map(|st| st.event.path.to_string()));
    }
    let mut want: Vec<String> = (0..12)
        .flat_map(|g| (0..5).map(move |p| format!("g{g}/p{p}")))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    let one: Vec<String> = s
        .partition_latest(s.layout.partition_of_str("g3"), None, 1000)
        .unwrap()
        .into_iter()
        .map(|st| st.event.path.to_string())
        .collect();
    assert!(one.contains(&"g3/p0".to_string()));
    assert!(one
        .iter()
        .all(|p| s.layout.partition_of_str(p) == s.layout.partition_of_str("g3")));
}

#[test]
fn equal_event_sets_give_equal_digests_whatever_the_order() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (small(a.path()), small(b.path()));
    let events = scattered(400, 100);
    write(&sa, 0, &events, 13);
    // B takes the same events newest first (all but the newest of each
    // path arrive too late: history only) in other commits.
    let mut seq = 0;
    for chunk in events.iter().rev().collect::<Vec<_>>().chunks(5) {
        let mut entries = Vec::new();
        for (p, t) in chunk {
            seq += 1;
            let e = ev(p, *t, Some("v"));
            let newest = sb.latest(&e.path).unwrap().is_none()
                && !entries.iter().any(|x: &CommitEntry| x.event.path == e.path);
            entries.push(CommitEntry {
                digest: e.digest(),
                event: e,
                seq,
                late: !newest,
            });
        }
        sb.commit(&Commit {
            entries,
            head_seq: seq,
            clock: seq,
            trim_below: None,
        })
        .unwrap();
    }
    for part in 0..4 {
        let (da, db) = (
            sa.partition_digest(part).unwrap(),
            sb.partition_digest(part).unwrap(),
        );
        assert_eq!(da, db, "partition {part}");
    }
    let total: u64 = (0..4).map(|p| sa.partition_digest(p).unwrap().events).sum();
    assert_eq!(total, 400);
    write(&sb, seq, &[("g3/new".into(), 5)], 1);
    let p = sb.layout.partition_of_str("g3");
    assert_ne!(
        sa.partition_digest(p).unwrap(),
        sb.partition_digest(p).unwrap()
    );
}

#[test]
fn dropping_a_partition_leaves_the_others_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let s = small(dir.path());
    let head = write(&s, 0, &scattered(600, 100), 11);
    // The last commit before the drop writes to the partition dropped.
    let head = write(&s, head, &[("g3/p0".into(), 10_000)], 1);
    let gone = s.layout.partition_of_str("g3");
    let others: Vec<u16> = (0..4).filter(|&p| p != gone).collect();
    let before: Vec<_> = others
        .iter()
        .map(|&p| {
            (
                s.partition_digest(p).unwrap(),
                seqs(&s.partition_log(p, 0, head, 10_000).unwrap().entries),
            )
        })
        .collect();
    s.drop_partition(gone, head).unwrap();
    for ns in [keys::LATEST, keys::HISTORY, keys::LOG] {
        let range = keys::partition_start(ns, gone).to_vec()..keys::partition_end(ns, gone);
        assert_eq!(s.tree.range(range).count(), 0);
    }
    assert_eq!(s.partition_digest(gone).unwrap().events, 0);
    assert!(s.latest(&Path::parse("g3/p0").unwrap()).unwrap().is_none());
    assert!(
        s.partition_log(gone, 0, head, 10).unwrap().trimmed,
        "its cursors reset"
    );
    assert!(
        s.log_read(&Path::root(), head - 1, head, 10)
            .unwrap()
            .trimmed
    );
    let after: Vec<_> = others
        .iter()
        .map(|&p| {
            (
                s.partition_digest(p).unwrap(),
                seqs(&s.partition_log(p, 0, head, 10_000).unwrap().entries),
            )
        })
        .collect();
    assert_eq!(after, before);
    // Reopened at once: the last commit's intent does not bring it back.
    drop(s);
    let s = small(dir.path());
    assert!(s.latest(&Path::parse("g3/p0").unwrap()).unwrap().is_none());
    assert_eq!(s.partition_digest(gone).unwrap().events, 0);
    assert!(s.partition_log(gone, 0, head, 10).unwrap().trimmed);
    // It takes writes again, and its log from the drop on is whole.
    let head2 = write(&s, head, &[("g3/p0".into(), 1), ("g3/p9".into(), 2)], 2);
    assert_eq!(
        replay(&s, &Path::parse("g3").unwrap(), head, head2, 10),
        vec![head + 1, head + 2]
    );
    drop(s);
    let s = small(dir.path());
    assert_eq!(
        history_len(&s, "g3/p0"),
        1,
        "the old history is gone for good"
    );
    assert_eq!(seqs(&log_after(&s, head, 10)), vec![head + 1, head + 2]);
}

fn history_len(s: &SledStore, path: &str) -> usize {
    s.history(&Path::parse(path).unwrap(), 0, u64::MAX, 10_000)
        .unwrap()
        .len()
}
