//! Bounded fuzzing of every parser and decoder that takes untrusted input.
//!
//! Targets (one corpus directory each, under `tests/corpus/`):
//!
//! | corpus dir    | target                                                        |
//! |---------------|---------------------------------------------------------------|
//! | `path`        | `Path::parse` and `Path::parse_key`                           |
//! | `time`        | `model::parse_time` (µs, plain or ETag-quoted)                |
//! | `version`     | `"<time>.<node>".parse::<Version>()` (plain or ETag-quoted)   |
//! | `cursor`      | `Cursor::parse` (`"<incarnation>:<seq>"`)                     |
//! | `op_json`     | `ops::decode_op(_, WireFormat::Json)` (WebSocket text frames) |
//! | `op_msgpack`  | `ops::decode_op(_, WireFormat::MsgPack)` (binary frames)      |
//! | `record`      | `store::decode` (the on-disk record), and `store::encode`     |
//! | (generated)   | every HTTP route in process, every header and query parameter |
//! |               | the web crate reads (`http_inputs_never_answer_5xx`)          |
//!
//! Fields are also fed around and far over their limits (README, Security,
//! "Limits"): op ids, cursors, content types, paths and op names up to
//! 100 KB, and headers up to 100 KB (as HTTP/2 allows). Ops must be refused
//! exactly when a field is over its limit, an oversized id is never echoed,
//! every error detail is bounded, and no HTTP input gets a 5xx (but `501`).
//!
//! (The peer frame decoder does not exist yet; give it a directory and a
//! `check_*` function here when it does.)
//!
//! What is checked: no input panics; no input makes a decoder allocate more
//! than a small constant plus a small multiple of the input's size (a global
//! allocator in this test binary counts the bytes live on the decoding thread
//! and refuses any single allocation over 256 MiB, so a decoder that trusts a
//! length prefix aborts the run with "memory allocation of N bytes failed"
//! instead of eating the machine); deeply nested input fails cleanly on a
//! 2 MiB thread; every `Ok` satisfies the target's invariants and round-trips
//! through its printed form; the text parsers agree with a reference written
//! from the grammar; valid ops and records built by generators decode to
//! exactly what was encoded.
//!
//! Running: `cargo test --test fuzz` runs a short campaign (under ~30 s in a
//! debug build). A longer local campaign sets the number of cases of every
//! property (the defaults are in the `cfg(..)` calls below):
//!
//! ```text
//! SPREAD_FUZZ_CASES=200000 cargo test --release --test fuzz
//! ```
//!
//! Corpus: `tests/corpus/<target>/`, one input per file, the file's exact
//! bytes (binary allowed; text targets need UTF-8; no trailing newline unless
//! it is part of the input). Every file is replayed by `corpus_replay`; names
//! starting `ok-` must be accepted, `err-` must be refused, anything else must
//! only not panic. The properties also start from mutated corpus files.
//!
//! Adding a regression: when a property fails, proptest prints the minimal
//! input. Write those exact bytes to `tests/corpus/<target>/ok-<what>` or
//! `err-<what>` (failure persistence files are turned off; the corpus is the
//! record). A known bug that is not fixed yet goes in as `bug-<target>-<what>`
//! (skipped by `corpus_replay`) with an `#[ignore = "..."]` test that asserts
//! the right behaviour; when it is fixed, rename the file to `ok-`/`err-` and
//! remove the `ignore`.
//!
//! Fixed bugs (the `bug_*` tests, with their inputs kept as `bug-*` corpus
//! files): deep MessagePack nesting, bytes after a MessagePack op, ops given
//! as arrays, `W/42` taken as a time, malformed quoting in versions. Every
//! property checks the exact grammar.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};
use spread_actors::model::{
    parse_time, NodeId, MAX_PATH_BYTES, MAX_PATH_SEGMENTS, MAX_TIME_MICROS,
};
use spread_actors::store::{decode, encode, Stored};
use spread_actors::{Cursor, Event, Path, PathError, Version};
use spread_web::encode::WireFormat;
use spread_web::error::MAX_ERROR_DETAIL_BYTES;
use spread_web::ops::{decode_op, Op, OpError, MAX_OP_ID_BYTES};
use spread_web::request::MAX_CURSOR_BYTES;

// ---------------------------------------------------------------------------
// Campaign size
// ---------------------------------------------------------------------------

/// Proptest settings for one property: `default` cases, or `SPREAD_FUZZ_CASES`.
/// Failures are not persisted to files: regressions go into the corpus.
fn cfg(default: u32) -> ProptestConfig {
    let cases = std::env::var("SPREAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------

/// The system allocator, counting the bytes live on each thread while a
/// [`bounded`] section runs.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// No single allocation above this is granted inside a [`bounded`] section.
const HARD_CAP: usize = 256 << 20;
/// Every decode may hold this much regardless of its input...
const ALLOC_FLOOR: usize = 1 << 20;
/// ...plus this much per input byte.
const ALLOC_PER_BYTE: usize = 64;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let live = LIVE.get() + size as i64;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

fn note_free(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            LIVE.set(LIVE.get() - size as i64);
        }
    });
}

fn refused(size: usize) -> bool {
    size > HARD_CAP && TRACKING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with a
// null pointer (which `GlobalAlloc` allows); the counters are plain
// thread-local cells with const initializers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a new block then the old one freed: the peak sees both.
            note_alloc(new_size);
            note_free(layout.size());
        }
        p
    }
}

/// Runs `f` and returns its result and the most bytes it had live at once on
/// this thread (allocations made inside `f`, minus those it freed).
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            TRACKING.set(false);
        }
    }
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let off = Off;
    let r = f();
    drop(off);
    (r, PEAK.get().max(0) as usize)
}

/// Runs a decoder on an input of `input_len` bytes and asserts that it held
/// at most `ALLOC_FLOOR + ALLOC_PER_BYTE * input_len` bytes at once.
fn bounded<R>(input_len: usize, f: impl FnOnce() -> R) -> R {
    let budget = ALLOC_FLOOR + ALLOC_PER_BYTE * input_len;
    let (r, peak) = peak_bytes(f);
    assert!(
        peak <= budget,
        "decoding {input_len} bytes held {peak} bytes at once (budget {budget})"
    );
    r
}

/// The budget check itself works: a decoder that allocates from a claimed
/// size instead of the input is caught.
#[test]
fn allocation_budget_is_enforced() {
    // (black_box: in a release build the allocations could be optimized out.)
    let over = catch_unwind(|| bounded(5, || black_box(vec![0u8; ALLOC_FLOOR + 1024]).len()));
    assert!(
        over.is_err(),
        "an allocation over the budget went unnoticed"
    );
    let within = bounded(5, || black_box(vec![0u8; ALLOC_FLOOR / 2]).len());
    assert_eq!(within, ALLOC_FLOOR / 2);
    // Memory freed inside the section does not count twice.
    let churn = bounded(5, || {
        (0..64)
            .map(|_| black_box(vec![1u8; ALLOC_FLOOR / 4]).len())
            .sum::<usize>()
    });
    assert_eq!(churn, 64 * (ALLOC_FLOOR / 4));
}

/// Runs `f` on a fresh thread with a 2 MiB stack (the default for spawned
/// threads, so a server worker) and fails if it overflows, panics or takes
/// longer than `limit`. A stack overflow aborts the whole test binary; the
/// thread's name (in the abort message) says which input did it.
fn on_small_stack<R: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let start = Instant::now();
    let r = std::thread::Builder::new()
        .name(format!("2 MiB stack: {name}"))
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .unwrap_or_else(|_| panic!("{name}: the decoder panicked"));
    let took = start.elapsed();
    assert!(took < limit, "{name}: took {took:?}, limit {limit:?}");
    r
}

// ---------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
        .join(target)
}

/// Every `(file name, bytes)` of a target's corpus, sorted by name. Panics if
/// the directory is missing or empty, so a renamed directory cannot silently
/// turn the replay into a no-op.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("corpus entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).expect("corpus file");
            (name, bytes)
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// Corpus inputs usable as proptest seeds (known bugs left out).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    corpus(target)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("bug-"))
        .map(|(_, bytes)| bytes)
        .collect()
}

fn text_seeds(target: &str) -> Vec<String> {
    seeds(target)
        .into_iter()
        .map(|b| String::from_utf8(b).expect("text corpus files are UTF-8"))
        .collect()
}

/// One corpus file of a target, by name (for the known-bug tests).
fn corpus_file(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Mutation
// ---------------------------------------------------------------------------

/// An edit: kind (insert, remove, replace, truncate), where, and what.
type Edit<T> = (u8, Index, T);

fn apply_edits<T: Clone>(mut items: Vec<T>, edits: &[Edit<Vec<T>>]) -> Vec<T> {
    for (kind, at, piece) in edits {
        let i = at.index(items.len() + 1);
        match kind % 8 {
            0..=2 => {
                items.splice(i..i, piece.iter().cloned());
            }
            3 | 4 => {
                if i < items.len() {
                    items.remove(i);
                }
            }
            5 | 6 => {
                let end = (i + piece.len()).min(items.len());
                items.splice(i..end, piece.iter().cloned());
            }
            _ => items.truncate(i),
        }
    }
    items
}

/// Corpus strings, each with 0–5 edits made of `pieces` or arbitrary chars.
fn mutated_text(
    seeds: Vec<String>,
    pieces: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(pieces).prop_map(|p| p.chars().collect::<Vec<_>>()),
        1 => prop::collection::vec(any::<char>(), 1..3),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<u8>(), any::<Index>(), piece), 0..6),
    )
        .prop_map(|(seed, edits)| {
            apply_edits(seed.chars().collect(), &edits)
                .into_iter()
                .collect()
        })
}

/// Byte seeds, each with 0–6 edits made of format-significant bytes or noise.
fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        &[0xdd, 0xff, 0xff, 0xff, 0xff],       // array32, 4 G elements
        &[0xdf, 0xff, 0xff, 0xff, 0xff],       // map32
        &[0xdb, 0xff, 0xff, 0xff, 0xff],       // str32
        &[0xc6, 0xff, 0xff, 0xff, 0xff],       // bin32
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01], // ext32
        &[0xdc, 0xff, 0xff],                   // array16
        &[0x91],
        &[0x81, 0xa1, b'a'],
        &[0xc0],
        &[0xc1], // never used
        &[0xcb],
        &[0xff, 0xff],
        &[0x00],
        b"\"",
        b"[",
        b"{",
        b"}",
        b"]",
        b",",
        b":",
        b"\\u0000",
        b"\\ud800",
        b"1e999",
        b"\"id\":7,",
        b"\"op\"",
        b"null",
    ];
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..4),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<u8>(), any::<Index>(), piece), 0..7),
    )
        .prop_map(|(seed, edits)| apply_edits(seed, &edits))
}

/// Strings of `len` characters from `alphabet` (much cheaper to generate in
/// a debug build than a regex strategy).
fn text_of(
    alphabet: &'static str,
    len: impl Into<prop::collection::SizeRange>,
) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), len).prop_map(String::from_iter)
}

const NODE_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

// ---------------------------------------------------------------------------
// Target: Path
// ---------------------------------------------------------------------------

/// The path grammar, written from the spec: the normalized text, or `None`.
fn spec_path(raw: &str) -> Option<String> {
    let s = raw.strip_prefix('/').unwrap_or(raw);
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.is_empty() {
        return Some(String::new());
    }
    let segments: Vec<&str> = s.split('/').collect();
    let ok = s.len() <= MAX_PATH_BYTES
        && segments.len() <= MAX_PATH_SEGMENTS
        && segments.iter().all(|seg| {
            !seg.is_empty() && *seg != "." && *seg != ".." && !seg.chars().any(char::is_control)
        });
    ok.then(|| s.to_string())
}

/// Checks `Path::parse` and `Path::parse_key` on one input; returns whether
/// `parse` accepted it.
fn check_path(raw: &str) -> Result<bool, TestCaseError> {
    let parsed = bounded(raw.len(), || Path::parse(raw));
    let keyed = bounded(raw.len(), || Path::parse_key(raw));
    let stripped = raw.strip_prefix('/').unwrap_or(raw);
    let stripped = stripped.strip_suffix('/').unwrap_or(stripped);
    match (&parsed, spec_path(raw)) {
        (Ok(p), Some(want)) => {
            let s = p.as_str();
            prop_assert_eq!(s, want.as_str());
            prop_assert!(!s.starts_with('/') && !s.ends_with('/'), "{:?}", p);
            prop_assert!(s.len() <= MAX_PATH_BYTES);
            let segments: Vec<&str> = p.segments().collect();
            prop_assert!(segments.len() <= MAX_PATH_SEGMENTS);
            prop_assert_eq!(segments.join("/"), s);
            for seg in &segments {
                prop_assert!(!seg.is_empty() && *seg != "." && *seg != "..");
                prop_assert!(!seg.chars().any(char::is_control));
            }
            prop_assert_eq!(Path::parse(s).ok(), Some(p.clone()), "round trip");
            prop_assert_eq!(Path::parse(&format!("/{s}/")).ok(), Some(p.clone()));
            prop_assert_eq!(p.to_string(), s);
            prop_assert_eq!(p.is_root(), s.is_empty());
            if p.is_root() {
                prop_assert_eq!(keyed, Err(PathError::Empty));
            } else {
                prop_assert_eq!(keyed.as_ref(), Ok(p));
            }
        }
        (Err(e), None) => {
            // The error names a defect the input really has.
            let segments: Vec<&str> = stripped.split('/').collect();
            let real = match e {
                PathError::TooLong(n) => *n == stripped.len() && *n > MAX_PATH_BYTES,
                PathError::TooDeep(n) => *n == segments.len() && *n > MAX_PATH_SEGMENTS,
                PathError::EmptySegment => segments.contains(&""),
                PathError::DotSegment(d) => segments.contains(d),
                PathError::ControlCharacter => stripped.chars().any(char::is_control),
                PathError::Empty => false,
            };
            prop_assert!(real, "{:?} for {:?}", e, raw);
            prop_assert_eq!(keyed.as_ref(), Err(e), "parse_key agrees");
        }
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "Path::parse({raw:?}) = {got:?}, the grammar says {want:?}"
            )))
        }
    }
    Ok(parsed.is_ok())
}

/// A valid segment: no `/`, no control character, not `.` or `..`.
fn segment() -> impl Strategy<Value = String> {
    // Mapped rather than filtered, so long campaigns do not run out of rejects.
    let not_special = |c: char| if c == '/' || c.is_control() { '_' } else { c };
    prop_oneof![
        3 => text_of("abcxyz0189_-", 1..8),
        1 => prop::collection::vec(any::<char>().prop_map(not_special), 1..6)
            .prop_map(String::from_iter),
        1 => text_of(".a", 1..5),
    ]
    .prop_map(|s| {
        if s == "." || s == ".." {
            format!("{s}a")
        } else {
            s
        }
    })
}

const PATH_PIECES: &[&str] = &[
    "/", "//", ".", "..", "/./", "/../", "\0", "\u{7}", "\n", "\u{7f}", "\u{85}", "\u{9f}",
    "\u{a0}", "é", "😀", "%2F", "%00", " ", "a", "\u{200b}", "\u{feff}",
];

fn path_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_text(text_seeds("path"), PATH_PIECES),
        2 => prop::collection::vec(
            prop::sample::select(&["/", "//", ".", "a", "é", "\u{85}", "\u{7}", " ", "%00"][..]),
            0..30,
        )
        .prop_map(|parts| parts.concat()),
        1 => prop::collection::vec(segment(), 28..36).prop_map(|s| s.join("/")),
        1 => text_of("ab/", 1000..1060),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Any string: no panic, bounded memory, and the result is the grammar's.
    #[test]
    fn path_parse_agrees_with_the_grammar(raw in path_input()) {
        check_path(&raw)?;
    }
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Strings built from valid segments always parse, to their joined form.
    #[test]
    fn path_from_valid_segments_parses(
        mut segments in prop::collection::vec(segment(), 1..=MAX_PATH_SEGMENTS),
        lead in any::<bool>(),
        trail in any::<bool>(),
    ) {
        while segments.join("/").len() > MAX_PATH_BYTES {
            segments.pop();
        }
        let joined = segments.join("/");
        let raw = format!("{}{joined}{}", if lead { "/" } else { "" }, if trail { "/" } else { "" });
        let p = Path::parse(&raw);
        prop_assert_eq!(p.as_ref().map(Path::as_str), Ok(joined.as_str()));
        prop_assert_eq!(Path::parse_key(&raw), p);
        prop_assert!(check_path(&raw)?);
    }
}

#[test]
fn path_limits_are_exact() {
    let at = "a".repeat(MAX_PATH_BYTES);
    assert_eq!(
        Path::parse(&at).map(|p| p.as_str().len()),
        Ok(MAX_PATH_BYTES)
    );
    let over = "a".repeat(MAX_PATH_BYTES + 1);
    assert_eq!(
        Path::parse(&over),
        Err(PathError::TooLong(MAX_PATH_BYTES + 1))
    );
    // The slashes that are ignored do not count.
    assert!(Path::parse(&format!("/{at}/")).is_ok());
    let deep = vec!["s"; MAX_PATH_SEGMENTS].join("/");
    assert!(Path::parse(&deep).is_ok());
    let deeper = vec!["s"; MAX_PATH_SEGMENTS + 1].join("/");
    assert_eq!(
        Path::parse(&deeper),
        Err(PathError::TooDeep(MAX_PATH_SEGMENTS + 1))
    );
    // 4-byte characters: the limit is in bytes, not characters.
    let emoji = "😀".repeat(MAX_PATH_BYTES / 4 + 1);
    assert!(matches!(Path::parse(&emoji), Err(PathError::TooLong(_))));
    // A megabyte of slashes is refused by length before it is split.
    let slashes = "/".repeat(1 << 20);
    let r = bounded(slashes.len(), || Path::parse(&slashes));
    assert!(matches!(r, Err(PathError::TooLong(_))));
}

// ---------------------------------------------------------------------------
// Targets: time, version, cursor
// ---------------------------------------------------------------------------

/// The text inside the accepted quoting: `x`, `"x"` or `W/"x"` (after
/// trimming surrounding whitespace), or `None` for anything else.
fn spec_unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("W/") {
        return rest.strip_prefix('"')?.strip_suffix('"');
    }
    match s.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(s),
    }
}

/// A time: 1–16 ASCII digits, at most `MAX_TIME_MICROS`.
fn spec_time_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|t| *t <= MAX_TIME_MICROS)
}

fn spec_time(raw: &str) -> Option<u64> {
    spec_time_digits(spec_unquote(raw)?)
}

fn spec_node(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn spec_version(raw: &str) -> Option<(u64, String)> {
    let (time, node) = spec_unquote(raw)?.split_once('.')?;
    let time = spec_time_digits(time)?;
    spec_node(node).then(|| (time, node.to_string()))
}

fn spec_cursor(raw: &str) -> Option<(String, u64)> {
    let (inc, seq) = raw.trim().rsplit_once(':')?;
    if !spec_node(inc) || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((inc.to_string(), seq.parse().ok()?))
}

/// Checks `parse_time` on one input: no panic, bounded memory, `Ok` values
/// in range that round-trip, and agreement with the grammar.
fn check_time(raw: &str) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || parse_time(raw));
    let want = spec_time(raw);
    match (&got, want) {
        (Ok(t), _) => {
            prop_assert!(*t <= MAX_TIME_MICROS);
            prop_assert_eq!(parse_time(&t.to_string()), Ok(*t));
            prop_assert_eq!(parse_time(&format!("W/\"{t}\"")), Ok(*t));
            prop_assert_eq!(Some(*t), want, "parse_time({:?})", raw);
        }
        (Err(_), None) => {}
        (Err(e), Some(t)) => {
            return Err(TestCaseError::fail(format!(
                "parse_time({raw:?}) = Err({e:?}), the grammar says {t}"
            )))
        }
    }
    Ok(got.is_ok())
}

/// Checks `Version::from_str` on one input, as [`check_time`] does.
fn check_version(raw: &str) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || raw.parse::<Version>());
    let want = spec_version(raw);
    match (&got, &want) {
        (Ok(v), _) => {
            prop_assert!(v.time <= MAX_TIME_MICROS);
            prop_assert!(spec_node(v.node.as_str()));
            let text = v.to_string();
            prop_assert_eq!(text.parse::<Version>().ok(), Some(v.clone()), "round trip");
            prop_assert_eq!(
                format!("\"{text}\"").parse::<Version>().ok(),
                Some(v.clone())
            );
            prop_assert_eq!(
                format!("W/\"{text}\"").parse::<Version>().ok(),
                Some(v.clone())
            );
            let have = (v.time, v.node.as_str().to_string());
            prop_assert_eq!(Some(have), want, "{:?}.parse::<Version>()", raw);
        }
        (Err(_), None) => {}
        (Err(e), Some(w)) => {
            return Err(TestCaseError::fail(format!(
                "{raw:?}.parse::<Version>() = Err({e:?}), the grammar says {w:?}"
            )))
        }
    }
    Ok(got.is_ok())
}

fn check_cursor(raw: &str) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || Cursor::parse(raw));
    let want = spec_cursor(raw);
    match (&got, want) {
        (Ok(c), Some((inc, seq))) => {
            prop_assert_eq!(&*c.incarnation, inc.as_str());
            prop_assert_eq!(c.seq, seq);
            prop_assert_eq!(Cursor::parse(&c.to_string()).ok(), Some(c.clone()));
        }
        (Err(_), None) => {}
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "Cursor::parse({raw:?}) = {got:?}, the grammar says {want:?}"
            )))
        }
    }
    Ok(got.is_ok())
}

const VERSION_PIECES: &[&str] = &[
    "\"",
    "W/",
    "W/\"",
    ".",
    ":",
    " ",
    "\t",
    "\n",
    "0",
    "9",
    "9007199254740991",
    "9007199254740992",
    "18446744073709551616",
    "-",
    "+",
    "_",
    "a",
    "é",
    "\u{0}",
    "١",
];

fn node_id() -> impl Strategy<Value = String> {
    text_of(NODE_CHARS, 1..=64)
}

fn time_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_text(text_seeds("time"), VERSION_PIECES),
        2 => text_of(" \"W/0123456789", 0..24),
        1 => any::<String>(),
    ]
}

fn version_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_text(text_seeds("version"), VERSION_PIECES),
        2 => text_of(" \"W/0123456789.ax_-", 0..24),
        1 => any::<String>(),
    ]
}

fn cursor_input() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_text(text_seeds("cursor"), VERSION_PIECES),
        2 => text_of(" :0123456789ax_-", 0..24),
        1 => any::<String>(),
    ]
}

/// Surrounding whitespace, which the parsers trim.
fn padding() -> impl Strategy<Value = String> {
    text_of(" \t\r\n", 0..=2)
}

proptest! {
    #![proptest_config(cfg(3000))]

    #[test]
    fn time_parse_agrees_with_the_grammar(raw in time_input()) {
        check_time(&raw)?;
    }

    /// Every time up to the limit parses, in every quoting; every time above
    /// it is refused.
    #[test]
    fn every_time_in_range_parses(
        t in prop_oneof![0..=MAX_TIME_MICROS, Just(MAX_TIME_MICROS), Just(0)],
        over in (MAX_TIME_MICROS + 1)..=u64::MAX,
        pad in padding(),
    ) {
        for text in [t.to_string(), format!("\"{t}\""), format!("W/\"{t}\"")] {
            prop_assert_eq!(parse_time(&format!("{pad}{text}{pad}")), Ok(t));
        }
        prop_assert!(parse_time(&over.to_string()).is_err());
        let quoted_over = format!("\"{over}\"");
        prop_assert!(parse_time(&quoted_over).is_err());
    }

    #[test]
    fn version_parse_agrees_with_the_grammar(raw in version_input()) {
        check_version(&raw)?;
    }

    /// Every valid version prints and parses back to itself, in every quoting.
    #[test]
    fn every_valid_version_round_trips(
        t in prop_oneof![0..=MAX_TIME_MICROS, Just(MAX_TIME_MICROS)],
        node in node_id(),
        pad in padding(),
    ) {
        let v = Version::new(t, NodeId::new(&node).expect("valid node id"));
        let text = v.to_string();
        prop_assert_eq!(&text, &format!("{t}.{node}"));
        for quoted in [text.clone(), format!("\"{text}\""), format!("W/\"{text}\"")] {
            prop_assert_eq!(format!("{pad}{quoted}{pad}").parse::<Version>(), Ok(v.clone()));
        }
        let too_late = format!("{}.{node}", MAX_TIME_MICROS + 1);
        prop_assert!(too_late.parse::<Version>().is_err());
        let bad_node = format!("{t}.{node}!");
        prop_assert!(bad_node.parse::<Version>().is_err());
    }

    #[test]
    fn cursor_parse_agrees_with_the_grammar(raw in cursor_input()) {
        check_cursor(&raw)?;
    }

    #[test]
    fn every_valid_cursor_round_trips(inc in node_id(), seq in any::<u64>(), pad in padding()) {
        let c = Cursor::parse(&format!("{pad}{inc}:{seq}{pad}")).expect("valid cursor");
        prop_assert_eq!(&*c.incarnation, inc.as_str());
        prop_assert_eq!(c.seq, seq);
        prop_assert_eq!(c.to_string(), format!("{inc}:{seq}"));
        prop_assert_eq!(Cursor::parse(&c.to_string()).ok(), Some(c));
    }
}

// ---------------------------------------------------------------------------
// Target: WebSocket ops
// ---------------------------------------------------------------------------

const OPS: &[&str] = &["subscribe", "unsubscribe", "get", "set", "delete"];

/// The fields an op may carry besides `op` and `id`: (required, optional).
fn op_fields(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "subscribe" => (&["path"], &["since"]),
        "unsubscribe" | "get" | "delete" => (&["path"], &[]),
        "set" => (&["path"], &["value", "value_b64", "content_type"]),
        _ => return None,
    })
}

/// The op grammar, written from the spec: a map with a known `op`, its
/// required string fields, optional string-or-null fields, any `id`, and
/// nothing else.
fn spec_op(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    let Some((required, optional)) = obj.get("op").and_then(Value::as_str).and_then(op_fields)
    else {
        return false;
    };
    required.iter().all(|f| obj.contains_key(*f))
        && obj.iter().all(|(k, val)| match k.as_str() {
            "op" | "id" => true,
            k if required.contains(&k) => val.is_string(),
            k if optional.contains(&k) => val.is_string() || val.is_null(),
            _ => false,
        })
}

/// The field limits of ops, written from the spec (README, Security): an
/// `id` of at most 256 bytes as JSON, a `since` of at most 128 bytes, a
/// `content_type` of at most 256 bytes of visible ASCII, spaces and tabs.
/// (The path is bounded where it is parsed, the value by the frame.)
fn spec_op_limits(v: &Value) -> bool {
    let since_ok = v["op"] != "subscribe" || v["since"].as_str().is_none_or(|s| s.len() <= 128);
    let ct_ok = v["op"] != "set"
        || v["content_type"].as_str().is_none_or(|ct| {
            ct.len() <= 256 && ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        });
    spec_id_fits(v) && since_ok && ct_ok
}

/// The web crate's constants are the documented limits.
#[test]
fn op_limits_are_the_documented_ones() {
    assert_eq!(
        (MAX_OP_ID_BYTES, MAX_CURSOR_BYTES, MAX_ERROR_DETAIL_BYTES),
        (256, 128, 2048)
    );
}

/// True when the frame has no `id`, or one of at most 256 bytes as JSON.
fn spec_id_fits(v: &Value) -> bool {
    v.get("id")
        .is_none_or(|id| serde_json::to_vec(id).expect("JSON").len() <= 256)
}

/// The `id` an error for `v` must carry: the frame's, unless it is over the
/// limit (an oversized id is never echoed).
fn spec_error_id(v: &Value) -> Option<&Value> {
    v.get("id").filter(|_| spec_id_fits(v))
}

/// Every error detail is bounded, whatever the frame quotes.
fn check_detail(e: &OpError) -> Result<(), TestCaseError> {
    prop_assert!(!e.detail.is_empty());
    prop_assert!(
        e.detail.len() <= MAX_ERROR_DETAIL_BYTES,
        "a detail of {} bytes",
        e.detail.len()
    );
    Ok(())
}

/// What a decoded op says.
struct OpParts<'a> {
    kind: &'static str,
    path: &'a str,
    id: Option<&'a Value>,
    /// The optional string fields of the op's kind, by name.
    optional: Vec<(&'static str, Option<&'a str>)>,
}

fn op_parts(op: &Op) -> OpParts<'_> {
    fn parts<'a>(kind: &'static str, path: &'a str, id: &'a Option<Value>) -> OpParts<'a> {
        OpParts {
            kind,
            path,
            id: id.as_ref(),
            optional: vec![],
        }
    }
    match op {
        Op::Subscribe { path, since, id } => OpParts {
            optional: vec![("since", since.as_deref())],
            ..parts("subscribe", path, id)
        },
        Op::Unsubscribe { path, id } => parts("unsubscribe", path, id),
        Op::Get { path, id } => parts("get", path, id),
        Op::Set {
            path,
            value,
            value_b64,
            content_type,
            id,
        } => OpParts {
            optional: vec![
                ("value", value.as_deref()),
                ("value_b64", value_b64.as_deref()),
                ("content_type", content_type.as_deref()),
            ],
            ..parts("set", path, id)
        },
        Op::Delete { path, id } => parts("delete", path, id),
    }
}

fn frame(v: &Value, format: WireFormat) -> Vec<u8> {
    match format {
        WireFormat::Json => serde_json::to_vec(v).expect("JSON"),
        WireFormat::MsgPack => rmp_serde::to_vec_named(v).expect("MessagePack"),
    }
}

fn format_name(format: WireFormat) -> &'static str {
    match format {
        WireFormat::Json => "JSON",
        WireFormat::MsgPack => "MessagePack",
    }
}

fn decode_bounded(raw: &[u8], format: WireFormat) -> Result<Op, OpError> {
    bounded(raw.len(), || decode_op(raw, format))
}

/// Checks that the frame of `v` decodes as the spec says: the same op, or an
/// error carrying `v`'s `id`.
fn check_op_value(v: &Value, format: WireFormat) -> Result<(), TestCaseError> {
    let raw = frame(v, format);
    let got = decode_bounded(&raw, format);
    let name = format_name(format);
    if let Err(e) = &got {
        check_detail(e)?;
    }
    match (got, spec_op(v) && spec_op_limits(v)) {
        (Ok(op), true) => {
            let OpParts {
                kind,
                path,
                id,
                optional,
            } = op_parts(&op);
            prop_assert_eq!(Some(kind), v["op"].as_str(), "{} {}", name, v);
            prop_assert_eq!(Some(path), v["path"].as_str());
            // `"id": null` is the same as no id.
            prop_assert_eq!(id, v.get("id").filter(|id| !id.is_null()), "{} {}", name, v);
            for (field, value) in optional {
                prop_assert_eq!(
                    value,
                    v.get(field).and_then(Value::as_str),
                    "{} {}",
                    field,
                    v
                );
            }
        }
        (Err(e), false) => {
            prop_assert_eq!(
                e.id.as_ref(),
                spec_error_id(v),
                "{} {}: {}",
                name,
                v,
                e.detail
            );
        }
        (Ok(_), false) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame of {v} decoded, but it is not a valid op"
            )))
        }
        (Err(e), true) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame of {v} refused ({}), but it is a valid op",
                e.detail
            )))
        }
    }
    Ok(())
}

/// Checks one raw frame: no panic, bounded memory, `Ok` only for a frame
/// that is exactly one valid op (a map, with no bytes after it), and errors
/// keep the frame's `id`.
fn check_op_bytes(raw: &[u8], format: WireFormat) -> Result<bool, TestCaseError> {
    let got = decode_bounded(raw, format);
    // The value in the frame, parsed on its own, and whether bytes follow it.
    let (parsed, trailing): (Option<Value>, bool) = match format {
        WireFormat::Json => (serde_json::from_slice(raw).ok(), false),
        WireFormat::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(raw));
            let v: Option<Value> = serde::Deserialize::deserialize(&mut de).ok();
            let trailing = (de.position() as usize) < raw.len();
            (v, trailing)
        }
    };
    let name = format_name(format);
    if let Err(e) = &got {
        check_detail(e)?;
    }
    match (&got, parsed) {
        (Ok(_), Some(v)) => {
            prop_assert!(
                spec_op(&v) && spec_op_limits(&v),
                "{} frame decoded, but it is not an op within the limits: {}",
                name,
                v
            );
            prop_assert!(
                !trailing,
                "{} frame decoded, but bytes follow the op: {:02x?}",
                name,
                raw
            );
        }
        (Ok(_), None) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame {raw:02x?} decoded, but it is not a valid value"
            )))
        }
        (Err(e), Some(v)) => {
            prop_assert!(
                !spec_op(&v) || !spec_op_limits(&v) || trailing,
                "refused a valid op {}: {}",
                v,
                e.detail
            );
            if !trailing {
                prop_assert_eq!(e.id.as_ref(), spec_error_id(&v), "{}: {}", v, e.detail);
            }
        }
        (Err(e), None) => prop_assert_eq!(&e.id, &None, "an id from an unparsable frame"),
    }
    Ok(got.is_ok())
}

/// A string the ops may carry: anything, or something path-like.
fn op_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text_of("abz09/", 0..12),
        1 => any::<String>(),
        1 => prop::sample::select(PATH_PIECES).prop_map(str::to_string),
    ]
}

/// An `id`: any JSON value a client may send (floats limited to ones that
/// print and parse back exactly).
fn id_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5, -1.25, 2.0, 1e-3]).prop_map(Value::from),
        op_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text_of("abc", 0..3), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid op: its kind, required and some optional fields, maybe an id.
fn valid_op() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(OPS),
        op_string(),
        prop::option::of(op_string()),
        prop::option::of(op_string()),
        0u8..4,
        prop::option::of(id_value()),
        any::<bool>(),
    )
        .prop_map(|(kind, path, a, b, which, id, nulls)| {
            let mut m = Map::new();
            m.insert("op".into(), json!(kind));
            m.insert("path".into(), json!(path));
            let optional = |m: &mut Map<String, Value>, k: &str, v: Option<String>| match v {
                Some(v) => {
                    m.insert(k.into(), json!(v));
                }
                None if nulls => {
                    m.insert(k.into(), Value::Null);
                }
                None => {}
            };
            match kind {
                "subscribe" => optional(&mut m, "since", a),
                "set" => {
                    // A value or a base64 value (or neither: an empty value).
                    let field = if which % 2 == 0 { "value" } else { "value_b64" };
                    optional(&mut m, field, a);
                    optional(&mut m, "content_type", b);
                }
                _ => {}
            }
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            Value::Object(m)
        })
}

const OP_KEYS: &[&str] = &[
    "op",
    "path",
    "id",
    "since",
    "value",
    "value_b64",
    "content_type",
    "x",
    "Path",
    "",
];

/// Values around the op grammar: valid ops with one thing changed (extra
/// field, unknown op, wrong type, missing path) and arbitrary JSON trees.
fn op_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        2 => op_string().prop_map(Value::from),
        1 => prop::sample::select(OPS).prop_map(Value::from),
        1 => id_value(),
    ];
    let tree = leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(OP_KEYS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        2 => (valid_op(), prop::sample::select(OP_KEYS), tree.clone()).prop_map(|(mut v, k, x)| {
            v[k] = x;
            v
        }),
        1 => (valid_op(), text_of("setgdlAETS ", 0..12), prop::option::of(id_value())).prop_map(|(mut v, op, id)| {
            v["op"] = json!(op);
            if let Some(id) = id {
                v["id"] = id;
            }
            v
        }),
        1 => valid_op().prop_map(|mut v| {
            v.as_object_mut().expect("object").remove("path");
            v
        }),
        1 => tree,
    ]
}

/// A string around a field limit or far over it: lengths near 128, 256 and
/// 1024 bytes (the cursor, id / content type and path limits), or up to
/// 100 KB; sometimes with a character a header cannot carry.
fn oversized_string() -> impl Strategy<Value = String> {
    let len = prop_oneof![
        120usize..136,
        248usize..264,
        1016usize..1032,
        Just(4096usize),
        Just(100_000usize),
    ];
    (
        len,
        prop::sample::select(vec!['a', '/', ' ', '\t', '\u{e9}', '\n', '\0', '\u{7f}']),
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(|(len, odd, at, put_odd)| {
            let mut s = "a".repeat(len);
            if put_odd && len > 0 {
                let i = at.index(len);
                s.replace_range(i..=i, odd.encode_utf8(&mut [0; 4]));
            }
            s
        })
}

/// An `id` around its limit or over it: a long string, a deep array, a
/// wide object.
fn oversized_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        oversized_string().prop_map(Value::from),
        // 127 levels inside the op's map is past the decoders' nesting
        // limit (128 with the map), a limit checked on its own below.
        prop::sample::select(vec![100usize, 120, 126, 128, 130, 140]).prop_map(|depth| {
            let mut id = json!(1);
            for _ in 0..depth {
                id = json!([id]);
            }
            id
        }),
        (20usize..40)
            .prop_map(|n| { Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect()) }),
    ]
}

/// Valid ops with one field (id, path, since, content type, value, or the
/// op's name) around or over its limit.
fn op_near_limits() -> impl Strategy<Value = Value> {
    (
        valid_op(),
        prop::sample::select(vec!["id", "path", "since", "content_type", "value", "op"]),
        oversized_string(),
        oversized_id(),
    )
        .prop_map(|(mut v, field, text, id)| {
            match field {
                "id" => v["id"] = id,
                "since" => {
                    v["op"] = json!("subscribe");
                    let keep = ["op", "path", "id"];
                    v.as_object_mut()
                        .expect("object")
                        .retain(|k, _| keep.contains(&k.as_str()));
                    v["since"] = json!(text);
                }
                "content_type" | "value" => {
                    v["op"] = json!("set");
                    let keep = ["op", "path", "id", "content_type"];
                    v.as_object_mut()
                        .expect("object")
                        .retain(|k, _| keep.contains(&k.as_str()));
                    v[field] = json!(text);
                }
                other => v[other] = json!(text),
            }
            v
        })
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Fields around and over their limits: refused exactly when over (the
    /// reference is `spec_op_limits`), with a bounded detail and no
    /// oversized id echoed, in both formats; and the raw frames never panic.
    #[test]
    fn ops_with_oversized_fields_are_refused_exactly(v in op_near_limits()) {
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
        check_op_bytes(&frame(&v, WireFormat::Json), WireFormat::Json)?;
        check_op_bytes(&frame(&v, WireFormat::MsgPack), WireFormat::MsgPack)?;
    }
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Valid ops decode, in both formats, to exactly what was sent.
    #[test]
    fn valid_ops_decode(v in valid_op()) {
        prop_assert!(spec_op(&v));
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
    }

    /// Values near the grammar decode exactly when the grammar says; errors
    /// keep the frame's id.
    #[test]
    fn ops_agree_with_the_grammar(v in op_like()) {
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
    }

    #[test]
    fn json_frames_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("op_json")),
        1 => valid_op().prop_flat_map(|v| mutated_bytes(vec![frame(&v, WireFormat::Json)])),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        check_op_bytes(&raw, WireFormat::Json)?;
    }

    #[test]
    fn msgpack_frames_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("op_msgpack")),
        1 => valid_op().prop_flat_map(|v| mutated_bytes(vec![frame(&v, WireFormat::MsgPack)])),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        check_op_bytes(&raw, WireFormat::MsgPack)?;
    }
}

/// MessagePack nesting the decoder must survive on a 2 MiB stack. JSON stops
/// at serde_json's limit of 128; MessagePack currently relies on rmp-serde's
/// limit of 1024, which does not fit in 2 MiB in a debug build (see
/// `bug_msgpack_deep_nesting_overflows_the_stack`), so CI checks 300.
const MSGPACK_SAFE_DEPTH: usize = 300;

/// MessagePack frames nested `depth` deep in several shapes, and whether
/// each must be refused whatever the depth limit (the others are valid ops
/// if the limit allows their depth).
fn deep_msgpack(depth: usize) -> Vec<(String, Vec<u8>, bool)> {
    let deep_field = |field: &str| {
        let mut v = vec![0x83, 0xa2, b'o', b'p', 0xa3, b's', b'e', b't', 0xa4];
        v.extend_from_slice(b"path");
        v.extend_from_slice(&[0xa1, b'a', 0xa0 | field.len() as u8]);
        v.extend_from_slice(field.as_bytes());
        v.extend(std::iter::repeat_n(0x91, depth));
        v.push(0x90);
        v
    };
    vec![
        (
            format!("{depth} nested arrays, cut"),
            vec![0x91; depth],
            true,
        ),
        (
            format!("{depth} nested arrays"),
            [vec![0x91; depth], vec![0x90]].concat(),
            true,
        ),
        (
            format!("{depth} nested maps"),
            [[0x81, 0xa1, b'a'].repeat(depth), vec![0x80]].concat(),
            true,
        ),
        (
            format!("{depth} nested array32 claims"),
            [0xdd, 0xff, 0xff, 0xff, 0xff].repeat(depth),
            true,
        ),
        (
            format!("op with an id {depth} deep"),
            deep_field("id"),
            false,
        ),
        (
            format!("op with an extra field {depth} deep"),
            deep_field("x"),
            true,
        ),
    ]
}

/// Tiny frames that claim huge sizes, and deep nesting: each is refused
/// quickly, within the allocation budget, on a 2 MiB stack.
#[test]
fn ops_refuse_huge_claims_and_deep_nesting() {
    let mut msgpack: Vec<(String, Vec<u8>, bool)> = [
        ("array32 of 4 G", vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
        ("map32 of 4 G", vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
        ("str32 of 4 GB", vec![0xdb, 0xff, 0xff, 0xff, 0xff]),
        ("bin32 of 4 GB", vec![0xc6, 0xff, 0xff, 0xff, 0xff]),
        ("ext32 of 4 GB", vec![0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ("array16 of 64 K", vec![0xdc, 0xff, 0xff]),
        ("map16 of 64 K, 1000 given", {
            let mut v = vec![0xde, 0xff, 0xff];
            for _ in 0..1000 {
                v.extend_from_slice(&[0xa1, b'k', 0xc0]);
            }
            v
        }),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v, true))
    .collect();
    msgpack.extend(deep_msgpack(MSGPACK_SAFE_DEPTH));
    let json: Vec<(&str, Vec<u8>)> = vec![
        ("100k [", vec![b'['; 100_000]),
        (
            "100k [ then ]",
            [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
        ),
        ("100k {\"a\":", b"{\"a\":".repeat(100_000)),
        (
            "op with a 100k deep id",
            [
                b"{\"op\":\"get\",\"path\":\"a\",\"id\":".to_vec(),
                vec![b'['; 100_000],
                vec![b']'; 100_000],
                b"}".to_vec(),
            ]
            .concat(),
        ),
        (
            "a number of 100k digits",
            [b"1".repeat(100_000), b"e999999".to_vec()].concat(),
        ),
        (
            "an unterminated 1 MB string",
            [b"\"".to_vec(), b"a".repeat(1 << 20)].concat(),
        ),
    ];
    let cases = msgpack
        .into_iter()
        .map(|(n, v, must_fail)| (n, v, must_fail, WireFormat::MsgPack))
        .chain(
            json.into_iter()
                .map(|(n, v)| (n.to_string(), v, true, WireFormat::Json)),
        );
    for (name, raw, must_fail, format) in cases {
        let (ok, id) = on_small_stack(&name, Duration::from_secs(10), move || {
            let r = decode_bounded(&raw, format);
            (r.is_ok(), r.err().and_then(|e| e.id))
        });
        if must_fail {
            assert!(!ok, "{name}: decoded");
            assert!(
                id.is_none(),
                "{name}: an id from a frame that is not a map: {id:?}"
            );
        }
    }
}

/// Deep but legal nesting inside an `id` is accepted, echoed back intact.
#[test]
fn ops_accept_moderately_nested_ids() {
    let mut id = json!(1);
    for _ in 0..100 {
        id = json!([id]);
    }
    let v = json!({"op": "get", "path": "a", "id": id});
    for format in [WireFormat::Json, WireFormat::MsgPack] {
        let raw = frame(&v, format);
        let op = on_small_stack("nested id", Duration::from_secs(10), move || {
            decode_bounded(&raw, format).map(|op| op_parts(&op).id.cloned())
        });
        assert_eq!(op.expect("decodes"), Some(v["id"].clone()));
    }
}

// ---------------------------------------------------------------------------
// Target: store records
// ---------------------------------------------------------------------------

fn record_path() -> Path {
    Path::parse("corpus/record").expect("valid path")
}

/// Checks `store::decode` on raw bytes: no panic, bounded memory, and an `Ok`
/// is consistent with the bytes (the value is everything after the header).
fn check_record(raw: &[u8]) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || decode(record_path(), raw.into()));
    if let Ok(stored) = &got {
        prop_assert_eq!(&stored.event.path, &record_path());
        prop_assert!(raw.len() >= 2);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        prop_assert!(raw.len() >= body, "decoded past the end of the header");
        if let Some(value) = &stored.event.value {
            prop_assert_eq!(&value[..], &raw[body..]);
        }
        prop_assert!(spec_node(stored.event.version.node.as_str()));
    }
    Ok(got.is_ok())
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        prop::collection::vec(segment(), 1..6),
        prop_oneof![0..=MAX_TIME_MICROS, Just(MAX_TIME_MICROS)],
        node_id(),
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..64)),
        prop::option::of(op_string()),
        prop::option::of(any::<u64>()),
        prop::option::of(op_string()),
    )
        .prop_map(
            |(segments, time, node, value, ct, expires_at, author)| Event {
                path: Path::parse(&segments.join("/")).expect("valid segments"),
                version: Version::new(time, NodeId::new(&node).expect("valid node")),
                value: value.map(Bytes::from),
                content_type: ct.map(Arc::from),
                expires_at,
                author: author.map(Arc::from),
            },
        )
}

fn arb_stored() -> impl Strategy<Value = Stored> {
    (
        arb_event(),
        prop::option::of(any::<[u8; 16]>()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, digest, seq)| Stored {
            digest: digest.unwrap_or_else(|| event.digest()),
            event,
            seq,
        })
}

fn encode_stored(s: &Stored) -> Vec<u8> {
    encode(&s.event, &s.digest, s.seq).expect("encodes")
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Every event encodes and decodes back to itself.
    #[test]
    fn records_round_trip(s in arb_stored()) {
        let raw = encode_stored(&s);
        let back = bounded(raw.len(), || decode(s.event.path.clone(), raw.as_slice().into()));
        prop_assert_eq!(back.as_ref().ok(), Some(&s));
        prop_assert!(check_record(&raw)?);
    }

    /// The value is not part of the header: any bytes after it are the value.
    #[test]
    fn record_value_is_the_tail(s in arb_stored(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let raw = encode_stored(&s);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        let swapped = [&raw[..body], &tail[..]].concat();
        let back = decode(s.event.path.clone(), swapped.as_slice().into()).expect("decodes");
        let want = s.event.value.as_ref().map(|_| Bytes::from(tail));
        prop_assert_eq!(back.event.value, want);
        prop_assert_eq!(back.event.version, s.event.version);
    }

    /// A record cut inside its length prefix or header is refused.
    #[test]
    fn truncated_headers_are_refused(s in arb_stored(), cut in any::<Index>()) {
        let raw = encode_stored(&s);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        let cut = cut.index(body);
        prop_assert!(!check_record(&raw[..cut])?, "cut at {} of {}", cut, body);
    }

    /// Corrupted records: no panic, bounded memory, consistent `Ok`s.
    #[test]
    fn corrupt_records_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("record")),
        2 => arb_stored().prop_flat_map(|s| mutated_bytes(vec![encode_stored(&s)])),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]) {
        check_record(&raw)?;
    }
}

#[test]
fn record_refuses_huge_claims() {
    let header = |h: &[u8]| {
        let mut v = (h.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header length 65535, no header", vec![0xff, 0xff]),
        (
            "header length 65535, short header",
            vec![0xff, 0xff, 0x98, 0x01],
        ),
        (
            "header is array32 of 4 G",
            header(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "header is map32 of 4 G",
            header(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "node is str32 of 4 GB",
            header(&[0x98, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "content type is bin32 of 4 GB",
            header(&[
                0x98, 0x01, 0xa1, b'n', 0x92, 0, 0, 0xc0, 0xc2, 0xc6, 0xff, 0xff, 0xff, 0xff,
            ]),
        ),
        ("header nested 65k deep", header(&[0x91; 65_000])),
    ];
    for (name, raw) in cases {
        let ok = on_small_stack(name, Duration::from_secs(10), move || {
            bounded(raw.len(), || decode(record_path(), raw.as_slice().into())).is_ok()
        });
        assert!(!ok, "{name}: decoded");
    }
}

#[test]
fn record_header_over_64k_is_an_error() {
    let event = Event {
        path: record_path(),
        version: Version::new(1, NodeId::new("n").expect("node")),
        value: Some(Bytes::from_static(b"v")),
        content_type: Some(Arc::from("x".repeat(70_000))),
        expires_at: None,
        author: None,
    };
    assert!(encode(&event, &event.digest(), Some(1)).is_err());
}

// ---------------------------------------------------------------------------
// Corpus replay
// ---------------------------------------------------------------------------

/// Runs one corpus input through its target's checks: `Ok(accepted)`, or why
/// a check failed.
fn run_target(target: &str, bytes: &[u8]) -> Result<bool, String> {
    let text = || std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"));
    let r = match target {
        "path" => check_path(text()?),
        "time" => check_time(text()?),
        "version" => check_version(text()?),
        "cursor" => check_cursor(text()?),
        "op_json" => check_op_bytes(bytes, WireFormat::Json),
        "op_msgpack" => check_op_bytes(bytes, WireFormat::MsgPack),
        "record" => check_record(bytes),
        other => return Err(format!("no target named {other}")),
    };
    r.map_err(|e| e.to_string())
}

const TARGETS: &[&str] = &[
    "path",
    "time",
    "version",
    "cursor",
    "op_json",
    "op_msgpack",
    "record",
];

/// Replays every corpus file (except known bugs): `ok-*` must be accepted,
/// `err-*` refused, and nothing may panic or fail a check.
#[test]
fn corpus_replay() {
    let mut failures = Vec::new();
    let mut count = 0;
    for target in TARGETS {
        for (name, bytes) in corpus(target) {
            if name.starts_with("bug-") {
                continue;
            }
            count += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| run_target(target, &bytes)));
            let problem = match outcome {
                Err(_) => Some("panicked".to_string()),
                Ok(Err(e)) => Some(e),
                Ok(Ok(accepted)) if name.starts_with("ok-") && !accepted => {
                    Some("refused, expected Ok".into())
                }
                Ok(Ok(accepted)) if name.starts_with("err-") && accepted => {
                    Some("accepted, expected Err".into())
                }
                Ok(Ok(_)) => None,
            };
            if let Some(p) = problem {
                failures.push(format!("{target}/{name}: {p}"));
            }
        }
    }
    assert!(count >= 50, "only {count} corpus files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every corpus directory belongs to a target, so no file is silently skipped.
#[test]
fn corpus_has_no_stray_directories() {
    let root = corpus_dir("");
    for entry in std::fs::read_dir(&root).expect("corpus root") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            TARGETS.contains(&name.as_str()),
            "tests/corpus/{name} is not a target"
        );
    }
}

// ---------------------------------------------------------------------------
// Fixed bugs (inputs in the corpus as `bug-*`): each test asserts the right
// behaviour, so the bug cannot come back.
// ---------------------------------------------------------------------------

/// Runs the current test again in a child process with `SPREAD_FUZZ_CHILD`
/// set, and returns whether it passed: for checks that abort the process
/// (a stack overflow) rather than panic.
fn passes_in_child(test: &str) -> bool {
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("SPREAD_FUZZ_CHILD", "1")
        .status()
        .expect("run the test binary");
    status.success()
}

fn in_child() -> bool {
    std::env::var_os("SPREAD_FUZZ_CHILD").is_some()
}

/// rmp-serde's default depth limit (1024) is too deep for a 2 MiB thread in a
/// debug build: ~1000 bytes of `0x91` abort the process. The fix is a lower
/// limit (e.g. 128, like serde_json) on the MessagePack deserializer.
#[test]
fn bug_msgpack_deep_nesting_overflows_the_stack() {
    if in_child() {
        let mut frames = vec![(
            "corpus".to_string(),
            corpus_file("op_msgpack", "bug-op_msgpack-deep-nesting"),
        )];
        for depth in [1000, 100_000] {
            frames.extend(deep_msgpack(depth).into_iter().map(|(n, v, _)| (n, v)));
        }
        for (name, raw) in frames {
            // Refused (a sane depth limit) or decoded (a depth the stack
            // holds), but never a crash.
            on_small_stack(&name, Duration::from_secs(10), move || {
                decode_bounded(&raw, WireFormat::MsgPack).is_ok()
            });
        }
        return;
    }
    assert!(
        passes_in_child("bug_msgpack_deep_nesting_overflows_the_stack"),
        "decoding deeply nested MessagePack on a 2 MiB stack crashed"
    );
}

/// A MessagePack frame is one op, but bytes after the op are ignored (the
/// JSON decoder refuses trailing data). rmp-serde's `from_slice` does not
/// check that the input was consumed.
#[test]
fn bug_msgpack_trailing_bytes_are_accepted() {
    let raw = corpus_file("op_msgpack", "bug-op_msgpack-trailing-bytes");
    assert!(decode_op(&raw, WireFormat::MsgPack).is_err());
    assert!(check_op_bytes(&raw, WireFormat::MsgPack).is_ok());
}

/// Ops are maps, but serde's internally tagged enums also take the fields as
/// a sequence in declaration order, so `["get", "a"]` (JSON or MessagePack)
/// is a `get` of `a`. Not a crash, but an undocumented input surface that
/// depends on field order.
#[test]
fn bug_ops_in_array_form_are_accepted() {
    for (target, format) in [
        ("op_json", WireFormat::Json),
        ("op_msgpack", WireFormat::MsgPack),
    ] {
        let raw = corpus_file(target, &format!("bug-{target}-array-form"));
        assert!(decode_op(&raw, format).is_err(), "{target}");
        assert!(check_op_bytes(&raw, format).is_ok(), "{target}");
    }
    check_op_value(&json!(["set", "a", "v", null, null, 7]), WireFormat::Json)
        .expect("a set op as an array is refused");
}

/// Every `bug-<target>-*` corpus file of `target`, through its checks.
fn replay_bugs(target: &str) {
    let bugs: Vec<_> = corpus(target)
        .into_iter()
        .filter(|(name, _)| name.starts_with(&format!("bug-{target}-")))
        .collect();
    assert!(!bugs.is_empty(), "no bug files for {target}");
    let failures: Vec<String> = bugs
        .iter()
        .filter_map(|(name, bytes)| {
            run_target(target, bytes)
                .err()
                .map(|e| format!("{target}/{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `W/` (weak ETag) is stripped whether or not quotes follow, so `W/42` is
/// taken for the time 42. `unquote` should strip `W/` only before `"…"`.
#[test]
fn bug_time_accepts_unquoted_weak_prefix() {
    replay_bugs("time");
}

/// `Version::from_str` unquotes the whole text, then hands the time half to
/// `parse_time`, which trims and unquotes again: `5 .x`, `"5".x`, `" 5.x"`,
/// `W/"5".x`, `W/W/"5".x` and `W/5.x` are all taken for `5.x`. The time half
/// should be checked as plain digits.
#[test]
fn bug_version_accepts_malformed_quoting() {
    replay_bugs("version");
}

// ---------------------------------------------------------------------------
// Target: HTTP inputs (in process; generated, no corpus)
// ---------------------------------------------------------------------------

/// One request built from fuzzed parts: every header and query parameter
/// the web crate reads, with values that are valid, malformed, or around and
/// far over their limits (headers up to 100 KB, as HTTP/2 allows).
#[derive(Clone, Debug)]
struct HttpInput {
    method: &'static str,
    route: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    /// Index into the tokens of the secured app (`None`: no token).
    token: Option<usize>,
    body: Option<Vec<u8>>,
}

impl HttpInput {
    /// A short description (field lengths, not their bytes) for failures.
    fn describe(&self) -> String {
        let short = |s: &str| {
            let cut: String = s.chars().take(40).collect();
            format!("{cut:?}({} bytes)", s.len())
        };
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", short(v)))
            .collect();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", short(v)))
            .collect();
        format!(
            "{} /{}/{} query {query:?} headers {headers:?} token {:?} body {:?}",
            self.method,
            self.route,
            short(&self.path),
            self.token,
            self.body.as_ref().map(Vec::len)
        )
    }

    fn uri(&self) -> String {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        const PATH: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
        // `http::Uri` takes at most 64 KiB: a longer path is cut (still far
        // over the path limit).
        let mut path = String::new();
        for c in self.path.chars() {
            let piece = utf8_percent_encode(c.encode_utf8(&mut [0; 4]), PATH).to_string();
            if path.len() + piece.len() > 30_000 {
                break;
            }
            path.push_str(&piece);
        }
        let mut uri = format!("/{}/{path}", self.route);
        for (i, (k, v)) in self.query.iter().enumerate() {
            let pair = format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC));
            if uri.len() + pair.len() > 60_000 {
                break;
            }
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&pair);
        }
        uri
    }
}

/// A header or query value: a plausible one, or one near or over a limit.
fn http_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "", "*", "1", "0", "true", "json", "msgpack", "quorum", "all", "3153600000",
            "3153600001", "18446744073709551616", "\"1700000000000000.n1\"", "W/\"1\"",
            "ab:1", "text/plain", "Bearer x", "spread_token=x",
        ])
        .prop_map(str::to_string),
        1 => text_of("0123456789.:\"W/ ,*abz", 0..40),
        2 => oversized_string(),
    ]
}

fn http_input() -> impl Strategy<Value = HttpInput> {
    let query_name = prop::sample::select(vec![
        "since",
        "after",
        "limit",
        "from",
        "to",
        "ttl",
        "w",
        "format",
        "values",
        "at",
        "access_token",
        "x",
    ]);
    let header_name = prop::sample::select(vec![
        "content-type",
        "if-match",
        "if-none-match",
        "x-spread-time",
        "x-spread-etag",
        "etag",
        "last-event-id",
        "content-length",
        "authorization",
        "cookie",
    ]);
    (
        prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]),
        prop::sample::select(vec![
            "raw", "list", "history", "sse", "wss", "rollback", "metrics",
        ]),
        prop_oneof![3 => op_string(), 1 => oversized_string()],
        prop::collection::vec((query_name, http_value()), 0..4),
        prop::collection::vec((header_name, http_value()), 0..4),
        prop::option::of(0usize..4),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
    )
        .prop_map(
            |(method, route, path, query, headers, token, body)| HttpInput {
                method,
                route,
                path,
                query,
                headers,
                token,
                body,
            },
        )
}

/// The request of `input` (with `tokens[input.token]` as its bearer).
fn http_request(input: &HttpInput, tokens: &[String]) -> actix_web::test::TestRequest {
    use actix_web::http::header::HeaderValue;
    let mut req = actix_web::test::TestRequest::default()
        .method(input.method.parse().expect("method"))
        .uri(&input.uri());
    for (name, value) in &input.headers {
        // Values a header cannot carry never reach a server.
        if let Ok(v) = HeaderValue::from_str(value) {
            req = req.append_header((*name, v));
        }
    }
    if let Some(t) = input.token.and_then(|i| tokens.get(i)) {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    if let Some(body) = &input.body {
        req = req.set_payload(body.clone());
    }
    req
}

/// Checks an answer: never a 5xx but `501` (parts of the contract not
/// served yet), and every JSON error names a code and a bounded detail.
async fn check_http_answer<B: actix_web::body::MessageBody>(
    res: actix_web::dev::ServiceResponse<B>,
) -> Result<(), String> {
    use actix_web::test;
    let status = res.status().as_u16();
    if status >= 500 && status != 501 {
        let body = test::read_body(res).await;
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let json = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/json");
    // A 200 SSE stream never ends: it is dropped unread.
    if status >= 400 && json {
        let body = test::read_body(res).await;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{status}: {e}"))?;
        let detail = v["detail"].as_str().unwrap_or("");
        if !v["error"].is_string() || detail.is_empty() || detail.len() > MAX_ERROR_DETAIL_BYTES {
            return Err(format!("{status}: bad error body of {} bytes", body.len()));
        }
    }
    Ok(())
}

/// HTTP requests with every field the web crate reads fuzzed, sent in
/// process to an open node and to one that requires tokens (with tokens
/// that are valid, have a 257-byte or 100 KB subject, or are 100 KB long):
/// no input panics or gets a 5xx (but `501`), and every error is a bounded
/// JSON body.
#[actix_web::test]
async fn http_inputs_never_answer_5xx() {
    use actix_web::{test, web, App};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use spread_web::{auth::Auth, metrics::Metrics, AppState, WebConfig};

    const SECRET: &str = "fuzz-secret";
    let claims = |sub: String| json!({"sub": sub, "exp": 4_000_000_000u64, "spread": {"read": [""], "write": [""]}});
    let sign = |c: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    let tokens = vec![
        sign(claims("alice".into())),
        sign(claims("s".repeat(257))),
        sign(claims("s".repeat(100_000))),
        format!("{}x", sign(claims("bob".into()))),
    ];

    let dir = tempfile::tempdir().expect("temp dir");
    let node = spread_actors::Node::open(spread_actors::Config::new(dir.path())).expect("node");
    let app_with = |auth: Auth| {
        let state = web::Data::new(AppState {
            node: node.clone(),
            config: WebConfig {
                auth,
                ..WebConfig::default()
            },
            metrics: Arc::new(Metrics::new()),
            streams: Arc::default(),
        });
        test::init_service(App::new().app_data(state).configure(spread_web::routes))
    };
    let open = app_with(Auth::off()).await;
    let secured = app_with(Auth::new(SECRET, None, 0).expect("key")).await;

    let cases = cfg(300).cases;
    let mut runner = TestRunner::deterministic();
    let strategy = http_input();
    let mut failures = Vec::new();
    for _ in 0..cases {
        let input = strategy.new_tree(&mut runner).expect("input").current();
        let answers = [
            http_request(&input, &tokens).send_request(&open).await,
            http_request(&input, &tokens).send_request(&secured).await,
        ];
        for (name, answer) in ["open", "secured"].into_iter().zip(answers) {
            let outcome = check_http_answer(answer).await;
            if let Err(e) = outcome {
                failures.push(format!("{name}: {} -> {e}", input.describe()));
            }
        }
    }
    node.shutdown();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
