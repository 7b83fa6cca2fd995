//! Tests of upgrades to format 5: stores of formats 2 to 4 (one node-wide
//! log, no partition in the keys), written by hand, are moved under their
//! partitions and read back the same.

use std::collections::BTreeMap;

use super::tests::{ev, history_times, log_after, seqs};
use super::*;
use crate::model::Event;

/// A store in format-4 keys: each commit of `commits` is a list of events
/// `(path, time)` given consecutive seqs; a path's newest event is its
/// latest value and older ones are one-record history pages. The log keeps
/// the records from seq `kept_from` on (older ones were trimmed).
fn write_v4(
    dir: &FsPath,
    format: u64,
    commits: &[Vec<(String, u64)>],
    kept_from: u64,
    layout: Option<(u64, u64)>,
) -> BTreeMap<String, Vec<(u64, u64)>> {
    let db = open_waiting(&sled::Config::new().path(dir)).unwrap();
    let tree = db.open_tree("spread").unwrap();
    // path -> [(time, seq)]
    let mut paths: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut seq = 0;
    let mut clock = 0;
    for commit in commits {
        let first = seq + 1;
        let mut record = vec![log_record::V4_TAG];
        for (path, time) in commit {
            seq += 1;
            clock = clock.max(*time);
            let e = ev(path, *time, Some("v"));
            let name = keys::logged(&e.path, &keys::order(&e.version, &e.digest()));
            record.extend_from_slice(&(name.len() as u32).to_le_bytes());
            record.extend_from_slice(&name);
            paths.entry(path.clone()).or_default().push((*time, seq));
        }
        if first >= kept_from {
            tree.insert(&keys::v4::log(first)[..], record).unwrap();
        }
    }
    for (path, events) in &paths {
        for (i, &(time, seq)) in events.iter().enumerate() {
            let e = ev(path, time, Some("v"));
            let record = encode(&e, &e.digest(), Some(seq), false).unwrap();
            if i + 1 == events.len() {
                tree.insert(keys::v4::latest(path), record).unwrap();
            } else {
                tree.insert(keys::v4::history(&e.path, &e.version, &e.digest()), record)
                    .unwrap();
            }
        }
    }
    let head = LogHead { seq, clock };
    tree.insert(keys::meta(keys::HEAD_META), &head.encode()[..])
        .unwrap();
    tree.insert(keys::meta(keys::FORMAT_META), &format.to_be_bytes())
        .unwrap();
    if let Some((parts, depth)) = layout {
        tree.insert(keys::meta(keys::PARTITIONS_META), &parts.to_be_bytes())
            .unwrap();
        tree.insert(keys::meta(keys::SHARD_DEPTH_META), &depth.to_be_bytes())
            .unwrap();
    }
    db.flush().unwrap();
    paths
}

/// 60 commits of 5 events over 40 paths in 8 top-level groups.
fn commits() -> Vec<Vec<(String, u64)>> {
    (0..60u64)
        .map(|c| {
            (0..5u64)
                .map(|i| {
                    let n = (c * 5 + i) * 7 % 40;
                    (format!("g{}/p{n}", n % 8), 1000 + c * 5 + i)
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_format_4_store_is_moved_under_its_partitions() {
    let dir = tempfile::tempdir().unwrap();
    // The log was trimmed below seq 51 (commit 11 starts there).
    let paths = write_v4(dir.path(), 4, &commits(), 51, Some((8, 1)));
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.meta("format").unwrap().unwrap(), FORMAT.to_be_bytes());
    assert_eq!(s.layout(), Layout::new(8, 1).unwrap(), "the stored layout");
    for ns in [keys::v4::LATEST, keys::v4::HISTORY, keys::v4::LOG] {
        assert_eq!(s.tree.scan_prefix([ns]).count(), 0, "no format-4 key left");
    }
    for (path, events) in &paths {
        let p = Path::parse(path).unwrap();
        let times: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(history_times(&s, &p), times, "{path}");
        assert_eq!(
            s.latest(&p).unwrap().unwrap().seq,
            Some(events.last().unwrap().1)
        );
    }
    assert_eq!(s.scan_latest(&Path::root(), None, 1000).unwrap().len(), 40);
    // The log from where the old one began; before that, trimmed.
    assert_eq!(
        seqs(&log_after(&s, 50, 1000)),
        (51..=300).collect::<Vec<_>>()
    );
    let page = s.log_read(&Path::root(), 10, 300, 1000).unwrap();
    assert!(
        page.trimmed,
        "entries 11..=50 were trimmed before the upgrade"
    );
    let g3 = Path::parse("g3").unwrap();
    let page = s.log_read(&g3, 50, 300, 1000).unwrap();
    assert!(!page.trimmed);
    let want: Vec<u64> = paths
        .iter()
        .filter(|(p, _)| p.starts_with("g3/"))
        .flat_map(|(_, e)| e.iter().map(|(_, q)| *q).filter(|q| *q > 50))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        seqs(&page.entries),
        want,
        "a prefix reads its partition's log"
    );
    // Writes go on after it.
    let e = ev("g3/p3", 5000, Some("new"));
    s.commit(&Commit {
        entries: vec![super::tests::entry(e, 301)],
        head_seq: 301,
        clock: 5000,
        trim_below: None,
    })
    .unwrap();
    assert_eq!(seqs(&log_after(&s, 300, 10)), vec![301]);
    drop(s);
    // Reopened: nothing is moved twice.
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(seqs(&log_after(&s, 50, 1000)).len(), 251);
}

#[test]
fn a_format_2_store_is_upgraded_like_a_format_4_one() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_v4(dir.path(), 2, &commits()[..3], 1, None);
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        s.layout(),
        Layout::default(),
        "no stored layout: the default"
    );
    assert_eq!(seqs(&log_after(&s, 0, 100)), (1..=15).collect::<Vec<_>>());
    for (path, events) in &paths {
        let times: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(history_times(&s, &Path::parse(path).unwrap()), times);
    }
}

#[test]
fn a_format_3_store_with_an_unlogged_late_event_is_taken_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let p = Path::parse("f3").unwrap();
    write_v4(dir.path(), 3, &[vec![("f3".into(), 20)]], 1, None);
    {
        // As format 3 wrote a late event: in history only, no seq, no
        // `late` flag, no log entry.
        let db = open_waiting(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("spread").unwrap();
        let old: std::sync::Arc<Event> = ev("f3", 10, Some("late"));
        let d = old.digest();
        // Format 3's header: the same fields, without `late`.
        #[derive(serde::Serialize)]
        struct Header3<'a> {
            time: u64,
            node: &'a str,
            digest: (u64, u64),
            seq: Option<u64>,
            deleted: bool,
            content_type: Option<&'a str>,
            expires_at: Option<u64>,
            author: Option<&'a str>,
        }
        let header = rmp_serde::to_vec(&Header3 {
            time: 10,
            node: "n",
            digest: (
                u64::from_be_bytes(d[..8].try_into().unwrap()),
                u64::from_be_bytes(d[8..].try_into().unwrap()),
            ),
            seq: None,
            deleted: false,
            content_type: None,
            expires_at: None,
            author: None,
        })
        .unwrap();
        let mut record = (header.len() as u16).to_le_bytes().to_vec();
        record.extend_from_slice(&header);
        record.extend_from_slice(b"late");
        tree.insert(keys::v4::history(&p, &old.version, &d), record)
            .unwrap();
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.meta("format").unwrap().unwrap(), FORMAT.to_be_bytes());
    let history = s.history(&p, 0, u64::MAX, 10).unwrap();
    let read: Vec<(u64, Option<u64>, bool)> = history
        .iter()
        .map(|h| (h.event.version.time, h.seq, h.late))
        .collect();
    assert_eq!(read, vec![(10, None, false), (20, Some(1), false)]);
    assert_eq!(seqs(&log_after(&s, 0, 10)), vec![1]);
}

#[test]
fn an_upgrade_cut_short_is_finished_when_the_store_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_v4(dir.path(), 4, &commits(), 1, None);
    {
        // As a crash could leave it: the marks set and part of the keys
        // moved (each chunk is one batch), the format not yet set.
        let db = open_waiting(&sled::Config::new().path(dir.path())).unwrap();
        let tree = db.open_tree("spread").unwrap();
        let layout = Layout::default();
        tree.insert(keys::meta(upgrade::MARKS_SET), &[1u8][..])
            .unwrap();
        let some: Vec<_> = tree
            .scan_prefix([keys::v4::LATEST])
            .take(10)
            .map(Result::unwrap)
            .collect();
        for (key, raw) in some {
            let path = std::str::from_utf8(&key[1..]).unwrap();
            tree.insert(keys::latest(layout.partition_of_str(path), path), raw)
                .unwrap();
            tree.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.meta("format").unwrap().unwrap(), FORMAT.to_be_bytes());
    assert_eq!(seqs(&log_after(&s, 0, 1000)), (1..=300).collect::<Vec<_>>());
    for (path, events) in &paths {
        let times: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(history_times(&s, &Path::parse(path).unwrap()), times);
    }
}

#[test]
fn a_store_of_the_development_format_5_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.set_meta("format", &5u64.to_be_bytes()).unwrap();
        s.flush().unwrap();
    }
    let err = SledStore::open(dir.path(), 1 << 20).err().expect("refused");
    assert!(err.to_string().contains("development format"), "{err}");
}
