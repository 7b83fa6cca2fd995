//! Tests of the sled store: commits and crashes, the log, upgrades.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::model::{Event, NodeId};
use crate::store::pages;
use crate::store::{CommitEntry, LogHead};

pub(super) fn ev(path: &str, time: u64, value: Option<&'static str>) -> Arc<Event> {
    Arc::new(Event {
        path: Path::parse(path).unwrap(),
        version: Version::new(time, NodeId::new("n").unwrap()),
        value: value.map(|v| Bytes::from_static(v.as_bytes())),
        content_type: None,
        expires_at: None,
        author: None,
    })
}

/// An event that becomes its path's value, at `seq`.
pub(super) fn entry(e: Arc<Event>, seq: u64) -> CommitEntry {
    CommitEntry {
        digest: e.digest(),
        event: e,
        seq,
        late: false,
    }
}

/// An event that arrived too late (history only), at `seq`.
pub(super) fn late(e: Arc<Event>, seq: u64) -> CommitEntry {
    CommitEntry {
        late: true,
        ..entry(e, seq)
    }
}

#[test]
fn commit_then_read_everything_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let commit = Commit {
            entries: vec![
                entry(ev("a", 10, Some("x")), 1),
                entry(ev("a", 20, Some("y")), 2),
                late(ev("a", 5, Some("old")), 3),
                entry(ev("a-b", 30, Some("sib")), 4),
                entry(ev("a/c", 40, None), 5),
            ],
            head_seq: 5,
            clock: 40,
            trim_below: None,
        };
        s.commit(&commit).unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let a = Path::parse("a").unwrap();
    let latest = s.latest(&a).unwrap().unwrap();
    assert_eq!(latest.event.value.as_deref(), Some(&b"y"[..]));
    assert_eq!(latest.seq, Some(2));
    let hist = s.history(&a, 0, u64::MAX, 100).unwrap();
    let times: Vec<u64> = hist.iter().map(|h| h.event.version.time).collect();
    assert_eq!(times, vec![5, 10, 20]);
    assert_eq!(s.history(&a, 6, 10, 100).unwrap().len(), 1);
    let scan: Vec<String> = s
        .scan_latest(&a, None, 100)
        .unwrap()
        .iter()
        .map(|st| st.event.path.to_string())
        .collect();
    assert_eq!(scan, vec!["a", "a/c"], "the sibling a-b is not under a");
    let after: Vec<String> = s
        .scan_latest(&a, Some("a"), 100)
        .unwrap()
        .iter()
        .map(|st| st.event.path.to_string())
        .collect();
    assert_eq!(after, vec!["a/c"]);
    assert_eq!(s.scan_latest(&Path::root(), None, 100).unwrap().len(), 3);
    // Every event is in the log, the late one too, marked as such.
    let log: Vec<(Option<u64>, bool, u64)> = log_after(&s, 1, 100)
        .iter()
        .map(|st| (st.seq, st.late, st.event.version.time))
        .collect();
    assert_eq!(
        log,
        vec![
            (Some(2), false, 20),
            (Some(3), true, 5),
            (Some(4), false, 30),
            (Some(5), false, 40)
        ]
    );
    assert_eq!(s.log_head().unwrap(), LogHead { seq: 5, clock: 40 });
    let old = ev("a", 5, Some("old"));
    assert!(s.contains(&a, &old.version, &old.digest()).unwrap());
}

/// Commits one record per slice of `ends`: seqs 1..=ends[0], then up to ends[1], …
pub(super) fn commit_records(s: &SledStore, ends: &[u64]) {
    let mut next = 1;
    for &end in ends {
        let entries = (next..=end)
            .map(|i| entry(ev(&format!("p/{}", i % 3), i, Some("v")), i))
            .collect();
        s.commit(&Commit {
            entries,
            head_seq: end,
            clock: end,
            trim_below: None,
        })
        .unwrap();
        next = end + 1;
    }
}

/// The times of every record in `path`'s history, oldest first.
pub(super) fn history_times(s: &SledStore, path: &Path) -> Vec<u64> {
    s.history(path, 0, u64::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|st| st.event.version.time)
        .collect()
}

/// The whole log after `after`, up to `limit` entries (it must not have
/// been trimmed there).
pub(super) fn log_after(s: &SledStore, after: u64, limit: usize) -> Vec<Stored> {
    let until = s.log_head().unwrap().seq;
    let mut out = Vec::new();
    let mut from = after;
    while from < until && out.len() < limit {
        let page = s
            .log_read(&Path::root(), from, until, limit - out.len())
            .unwrap();
        assert!(!page.trimmed, "the log after {after} was trimmed");
        out.extend(page.entries);
        from = page.through;
    }
    out
}

pub(super) fn seqs(stored: &[Stored]) -> Vec<u64> {
    stored.iter().map(|st| st.seq.unwrap()).collect()
}

/// Every key and value of the store but its commit intent.
pub(super) fn contents(s: &SledStore) -> Vec<(IVec, IVec)> {
    let intent = keys::meta(keys::INTENT_META);
    s.tree
        .iter()
        .map(Result::unwrap)
        .filter(|(key, _)| key[..] != intent[..])
        .collect()
}

/// Writes `commit`'s intent and only its first `written` keys, as a
/// crash can leave it: sled recovers a prefix of its log.
fn commit_cut_short(s: &SledStore, commit: &Commit, written: usize) -> usize {
    let ops = {
        let pending = s.pending_read();
        s.ops_of(commit, &mut CommitState::default(), &pending)
            .unwrap()
            .ops
    };
    let intent = intent::encode(&ops).unwrap();
    s.tree
        .insert(keys::meta(keys::INTENT_META), intent)
        .unwrap();
    let all = ops.len();
    s.write_keys(ops.into_iter().take(written)).unwrap();
    all
}

#[test]
fn a_commit_cut_short_by_a_crash_is_completed_when_the_store_opens() {
    let first = Commit {
        entries: vec![
            entry(ev("a", 10, Some("x")), 1),
            entry(ev("b", 11, Some("y")), 2),
        ],
        head_seq: 2,
        clock: 11,
        trim_below: None,
    };
    // New values, a late event, a tombstone, and a trimmed log record:
    // sets and removes of every namespace.
    let second = Commit {
        entries: vec![
            entry(ev("a", 20, Some("x2")), 3),
            late(ev("a", 5, Some("late")), 4),
            entry(ev("c", 30, Some("z")), 5),
            entry(ev("b", 31, None), 6),
        ],
        head_seq: 6,
        clock: 31,
        trim_below: Some(3),
    };
    let whole = tempfile::tempdir().unwrap();
    let expected = {
        let s = SledStore::open(whole.path(), 1 << 20).unwrap();
        s.commit(&first).unwrap();
        s.commit(&second).unwrap();
        contents(&s)
    };
    let mut written = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let all = {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            s.commit(&first).unwrap();
            let all = commit_cut_short(&s, &second, written);
            if written < all {
                assert_ne!(contents(&s), expected, "{written} of {all} keys written");
            }
            all
        };
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(contents(&s), expected, "{written} of {all} keys written");
        assert_eq!(s.tree.get(keys::meta(keys::INTENT_META)).unwrap(), None);
        assert_eq!(s.log_head().unwrap(), LogHead { seq: 6, clock: 31 });
        assert_eq!(
            history_times(&s, &Path::parse("a").unwrap()),
            vec![5, 10, 20]
        );
        if written == all {
            break;
        }
        written += 1;
    }
}

#[test]
fn a_commit_that_fails_partway_stops_later_commits_and_is_completed_when_reopened() {
    let commit = |seq, path, time, value| Commit {
        entries: vec![entry(ev(path, time, Some(value)), seq)],
        head_seq: seq,
        clock: time,
        trim_below: None,
    };
    let whole = tempfile::tempdir().unwrap();
    let expected = {
        let s = SledStore::open(whole.path(), 1 << 20).unwrap();
        s.commit(&commit(1, "a", 10, "x")).unwrap();
        s.commit(&commit(2, "b", 20, "y")).unwrap();
        contents(&s)
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.commit(&commit(1, "a", 10, "x")).unwrap();
        // The second commit fails after its intent and one of its keys.
        s.key_writes_left.store(1, Ordering::Relaxed);
        s.commit(&commit(2, "b", 20, "y")).unwrap_err();
        s.key_writes_left.store(usize::MAX, Ordering::Relaxed);
        // A later commit would rest on the half-written one: refused.
        let err = s.commit(&commit(3, "c", 30, "z")).unwrap_err();
        assert!(err.to_string().contains("failed partway"), "{err}");
        assert_eq!(s.latest(&Path::parse("c").unwrap()).unwrap(), None);
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(contents(&s), expected);
    s.commit(&commit(3, "c", 30, "z")).unwrap();
}

#[test]
fn a_store_whose_intent_cannot_be_read_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        commit_records(&s, &[2]);
        s.tree
            .insert(keys::meta(keys::INTENT_META), &b"\x07garbage"[..])
            .unwrap();
        s.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("bad commit intent"), "{err}");
    // Nothing was replayed or removed: the intent is still there to look at.
    let db = open_waiting(&sled::Config::new().path(dir.path())).unwrap();
    let tree = db.open_tree("spread").unwrap();
    let intent = tree.get(keys::meta(keys::INTENT_META)).unwrap();
    assert_eq!(intent.as_deref(), Some(&b"\x07garbage"[..]));
}

#[test]
fn a_commit_too_big_for_an_intent_is_one_batch_that_retires_the_last_intent() {
    let dir = tempfile::tempdir().unwrap();
    let big: &'static str = Box::leak("v".repeat(intent::MAX_BYTES + 1).into_boxed_str());
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let small = |seq, time, value| Commit {
            entries: vec![entry(ev("a", time, Some(value)), seq)],
            head_seq: seq,
            clock: time,
            trim_below: None,
        };
        s.commit(&small(1, 10, "x")).unwrap();
        assert!(s.tree.get(keys::meta(keys::INTENT_META)).unwrap().is_some());
        s.commit(&small(2, 20, big)).unwrap();
        assert_eq!(s.tree.get(keys::meta(keys::INTENT_META)).unwrap(), None);
    }
    // Replaying the first commit's intent now would bring back "x".
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let a = s.latest(&Path::parse("a").unwrap()).unwrap().unwrap();
    assert_eq!(a.event.value.as_deref(), Some(big.as_bytes()));
    assert_eq!(s.log_head().unwrap(), LogHead { seq: 2, clock: 20 });
}

#[test]
fn the_log_reads_from_any_seq_across_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    commit_records(&s, &[3, 4, 9]);
    assert_eq!(seqs(&log_after(&s, 0, 100)), (1..=9).collect::<Vec<_>>());
    assert_eq!(seqs(&log_after(&s, 1, 100)), (2..=9).collect::<Vec<_>>());
    assert_eq!(seqs(&log_after(&s, 3, 2)), vec![4, 5]);
    assert_eq!(seqs(&log_after(&s, 5, 100)), vec![6, 7, 8, 9]);
    assert!(log_after(&s, 9, 100).is_empty());
    assert!(log_after(&s, u64::MAX, 100).is_empty());
    assert!(log_after(&s, 0, 0).is_empty());
    let e = &log_after(&s, 6, 1)[0];
    assert_eq!((e.event.path.as_str(), e.event.version.time), ("p/1", 7));
    assert_eq!(s.log_head().unwrap(), LogHead { seq: 9, clock: 9 });
}

#[test]
fn a_format_1_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    // More log entries than one upgrade batch converts.
    let n = UPGRADE_CHUNK as u64 + 5;
    {
        // Format 1, written by hand: one log key per seq holding the bare
        // history key, and the head in meta `seq` and `clock`.
        let db = open_waiting(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("spread").unwrap();
        for seq in 1..=n {
            let e = ev("old/x", seq * 10, Some("v"));
            let d = e.digest();
            let record = encode(&e, &d, Some(seq), false).unwrap();
            let hkey = keys::v4::history(&e.path, &e.version, &d);
            tree.insert(keys::v4::latest(e.path.as_str()), record.clone())
                .unwrap();
            tree.insert(&keys::v4::log(seq)[..], &hkey[1..]).unwrap();
            tree.insert(hkey, record).unwrap();
        }
        tree.insert(keys::meta("seq"), &n.to_be_bytes()).unwrap();
        tree.insert(keys::meta("clock"), &(n * 10).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let head = LogHead {
            seq: n,
            clock: n * 10,
        };
        assert_eq!(s.log_head().unwrap(), head);
        assert_eq!(seqs(&log_after(&s, 0, 10_000)), (1..=n).collect::<Vec<_>>());
        assert_eq!(s.meta("format").unwrap().unwrap(), FORMAT.to_be_bytes());
        assert!(s.meta("seq").unwrap().is_none());
        // New commits append records after the converted ones.
        s.commit(&Commit {
            entries: vec![entry(ev("old/y", n * 10 + 1, Some("w")), n + 1)],
            head_seq: n + 1,
            clock: n * 10 + 1,
            trim_below: None,
        })
        .unwrap();
        s.flush().unwrap();
    }
    {
        // Upgraded history: no duplicate of the current record, before
        // and after new writes turn the open page into pages.
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let x = Path::parse("old/x").unwrap();
        assert_eq!(
            history_times(&s, &x),
            (1..=n).map(|i| i * 10).collect::<Vec<_>>()
        );
        for i in 1..=7 {
            s.commit(&Commit {
                entries: vec![entry(ev("old/x", n * 10 + 1 + i, Some("z")), n + 1 + i)],
                head_seq: n + 1 + i,
                clock: n * 10 + 1 + i,
                trim_below: None,
            })
            .unwrap();
        }
        let mut want: Vec<u64> = (1..=n).map(|i| i * 10).collect();
        want.extend((1..=7).map(|i| n * 10 + 1 + i));
        assert_eq!(history_times(&s, &x), want);
        assert_eq!(log_after(&s, n + 1, 100).len(), 7);
        s.flush().unwrap();
    }
    // Opened again: nothing is converted twice.
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.log_head().unwrap().seq, n + 8);
    assert_eq!(
        seqs(&log_after(&s, n - 2, 20)),
        (n - 1..=n + 8).collect::<Vec<_>>()
    );
    assert_eq!(log_after(&s, 0, 100_000).len() as u64, n + 8);
    let x = Path::parse("old/x").unwrap();
    assert_eq!(s.latest(&x).unwrap().unwrap().seq, Some(n + 8));
}

#[test]
fn a_format_1_store_without_its_clock_is_refused_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_waiting(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("spread").unwrap();
        tree.insert(keys::meta("seq"), &7u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("log head and clock"), "{err}");
}

#[test]
fn a_store_of_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.set_meta("format", &(FORMAT + 1).to_be_bytes()).unwrap();
        s.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), 1 << 20).err().expect("refused");
    let unknown = format!("format {} is not one this build reads", FORMAT + 1);
    assert!(err.to_string().contains(&unknown), "{err}");
}

/// One event of the property test: path index, time, value length, and
/// the commit it closes (true ends the current commit after it).
type Op = (usize, u64, usize, bool);

fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    (
        0usize..2,
        1u64..60,
        prop::sample::select(vec![0usize, 3, 100, 700, 1500, 2500]),
        prop::bool::weighted(0.3),
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever mix of new values, late (history-only) events and value
    /// sizes, in whatever commits, the store reads back exactly the
    /// events a plain sorted map holds: history ranges, membership,
    /// latest value and the log.
    #[test]
    fn pages_read_back_like_a_sorted_map(ops in proptest::collection::vec(arb_op(), 1..120)) {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let paths = [Path::parse("hx").unwrap(), Path::parse("hx/y").unwrap()];
        /// One path's history: order key -> (event, seq, late).
        type PathModel = BTreeMap<Vec<u8>, (Arc<Event>, u64, bool)>;
        let mut model: Vec<PathModel> = vec![BTreeMap::new(); 2];
        let mut seq = 0;
        let mut commit = Commit::default();
        for (i, &(p, time, len, ends)) in ops.iter().enumerate() {
            let value = Bytes::from(vec![b'a' + (i % 26) as u8; len]);
            let e = Arc::new(Event {
                path: paths[p].clone(),
                version: Version::new(time, NodeId::new("n").unwrap()),
                value: Some(value),
                content_type: None,
                expires_at: None,
                author: None,
            });
            let d = e.digest();
            let order = keys::order(&e.version, &d);
            if model[p].contains_key(&order) {
                continue; // the partition answers `existing`
            }
            let newest = model[p].keys().next_back().is_none_or(|top| order > *top);
            seq += 1;
            model[p].insert(order, (e.clone(), seq, !newest));
            commit.entries.push(CommitEntry { event: e, digest: d, seq, late: !newest });
            if ends {
                commit.head_seq = seq;
                s.commit(&std::mem::take(&mut commit)).unwrap();
            }
        }
        commit.head_seq = seq;
        s.commit(&commit).unwrap();
        let version_of =
            |st: &Stored| (st.event.version.time, st.event.value.clone(), st.seq, st.late);
        let expected_of =
            |(e, q, late): &(Arc<Event>, u64, bool)| (e.version.time, e.value.clone(), Some(*q), *late);
        for (p, path) in paths.iter().enumerate() {
            let all: Vec<_> = model[p].values().map(expected_of).collect();
            let got: Vec<_> = s.history(path, 0, u64::MAX, 10_000).unwrap().iter().map(version_of).collect();
            proptest::prop_assert_eq!(&got, &all);
            for (from, to, limit) in [(10, 30, 1000), (0, 5, 3), (25, 25, 10), (31, 59, 4)] {
                let want: Vec<_> = model[p]
                    .values()
                    .filter(|(e, _, _)| (from..=to).contains(&e.version.time))
                    .take(limit)
                    .map(expected_of)
                    .collect();
                let got: Vec<_> = s.history(path, from, to, limit).unwrap().iter().map(version_of).collect();
                proptest::prop_assert_eq!(got, want, "history({}, {}, {})", from, to, limit);
            }
            for (e, _, _) in model[p].values() {
                proptest::prop_assert!(s.contains(path, &e.version, &e.digest()).unwrap());
            }
            let absent = Version::new(1000, NodeId::new("n").unwrap());
            proptest::prop_assert!(!s.contains(path, &absent, &[0; 16]).unwrap());
            let latest = s.latest(path).unwrap().map(|st| version_of(&st));
            proptest::prop_assert_eq!(latest, model[p].values().next_back().map(expected_of));
        }
        let mut logged: Vec<_> = model
            .iter()
            .flat_map(|m| m.values())
            .map(|(e, q, late)| (*q, e.path.to_string(), e.version.time, *late))
            .collect();
        logged.sort();
        let got: Vec<_> = log_after(&s, 0, 10_000)
            .iter()
            .map(|st| (st.seq.unwrap(), st.event.path.to_string(), st.event.version.time, st.late))
            .collect();
        proptest::prop_assert_eq!(got, logged);
    }
}

#[test]
fn a_commit_that_fails_after_taking_a_cached_latest_value_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let x = Path::parse("x").unwrap();
    let commit = |entries, seq| Commit {
        entries,
        head_seq: seq,
        clock: seq,
        trim_below: None,
    };
    // x@10 is written, so its latest value is cached.
    s.commit(&commit(vec![entry(ev("x", 10, Some("a")), 1)], 1))
        .unwrap();
    // This commit takes x from the cache, makes x@20 its latest value,
    // then fails on x@15 (not newer than x@20): nothing may be written,
    // and what it built must not be kept.
    let failed = s.commit(&commit(
        vec![
            entry(ev("x", 20, Some("b")), 2),
            entry(ev("x", 15, Some("c")), 3),
        ],
        3,
    ));
    assert!(failed.is_err());
    s.commit(&commit(vec![entry(ev("x", 30, Some("d")), 2)], 2))
        .unwrap();
    assert_eq!(
        history_times(&s, &x),
        vec![10, 30],
        "history has only the committed events"
    );
    let latest = s.latest(&x).unwrap().unwrap();
    assert_eq!(latest.event.value.as_deref(), Some(&b"d"[..]));
    // And sled agrees once the cache is gone.
    drop(s);
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(history_times(&s, &x), vec![10, 30]);
}

#[test]
fn a_path_written_many_times_keeps_its_history_in_few_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let n = 100;
    for i in 1..=n {
        s.commit(&Commit {
            entries: vec![entry(ev("hot", i, Some("v")), i)],
            head_seq: i,
            clock: i,
            trim_below: None,
        })
        .unwrap();
    }
    let hot = Path::parse("hot").unwrap();
    assert_eq!(
        s.history(&hot, 0, u64::MAX, 1000).unwrap().len(),
        n as usize
    );
    let part = s.layout.partition_of(&hot);
    let history_keys = s.tree.scan_prefix(keys::history_prefix(part, &hot)).count();
    assert!(
        history_keys <= (n as usize).div_ceil(pages::OPEN_PAGE_ENTRIES),
        "{history_keys} history keys for {n} events"
    );
}

#[test]
fn an_event_is_read_by_its_name_from_its_value_or_its_history_page() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    // A path with a long history (many pages) and its latest value.
    let events: Vec<Arc<Event>> = (0..300u64)
        .map(|i| {
            let mut e = (*ev("long/x", 10 + i, None)).clone();
            e.value = Some(Bytes::from(format!("v{i}")));
            Arc::new(e)
        })
        .collect();
    let commit = Commit {
        entries: events
            .iter()
            .enumerate()
            .map(|(i, e)| entry(e.clone(), i as u64 + 1))
            .collect(),
        head_seq: events.len() as u64,
        clock: 400,
        trim_below: None,
    };
    s.commit(&commit).unwrap();
    let name_of = |e: &Event| crate::store::event_name(&e.path, &e.version, &e.digest());
    for i in [0usize, 1, 150, 299] {
        let got = s.named(&name_of(&events[i])).unwrap().expect("held");
        assert_eq!(got.event, *events[i], "event {i}");
        assert_eq!(got.seq, Some(i as u64 + 1));
    }
    // Not held: another digest, another time, another path, a bad name.
    assert!(s
        .named(&name_of(&ev("long/x", 10, Some("other"))))
        .unwrap()
        .is_none());
    assert!(s
        .named(&name_of(&ev("long/x", 5, Some("v0"))))
        .unwrap()
        .is_none());
    assert!(s
        .named(&name_of(&ev("long/y", 10, Some("v0"))))
        .unwrap()
        .is_none());
    assert!(s.named(b"no separator").unwrap().is_none());
}
