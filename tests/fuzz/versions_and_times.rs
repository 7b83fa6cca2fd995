//! Targets `time` and `version`: `model::parse_time` and
//! `"<time>.<node>".parse::<Version>()`, plain or ETag-quoted, against the
//! grammar; every valid time and version round-trips. Also the node-id and
//! padding generators the cursor and record targets share, and the fixed
//! bugs of both targets.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use spread_actors::model::{parse_time, NodeId, MAX_TIME_MICROS};
use spread_actors::Version;

use crate::corpus::{replay_bugs, text_seeds};
use crate::harness::{bounded, cfg};
use crate::mutate::{mutated_text, text_of};

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

pub(crate) fn spec_node(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn spec_version(raw: &str) -> Option<(u64, String)> {
    let (time, node) = spec_unquote(raw)?.split_once('.')?;
    let time = spec_time_digits(time)?;
    spec_node(node).then(|| (time, node.to_string()))
}

/// Checks `parse_time` on one input: no panic, bounded memory, `Ok` values
/// in range that round-trip, and agreement with the grammar.
pub(crate) fn check_time(raw: &str) -> Result<bool, TestCaseError> {
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
pub(crate) fn check_version(raw: &str) -> Result<bool, TestCaseError> {
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

const NODE_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

pub(crate) const VERSION_PIECES: &[&str] = &[
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

pub(crate) fn node_id() -> impl Strategy<Value = String> {
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

/// Surrounding whitespace, which the parsers trim.
pub(crate) fn padding() -> impl Strategy<Value = String> {
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
}

// ---------------------------------------------------------------------------
// Fixed bugs (inputs in the corpus as `bug-*`): each test asserts the right
// behaviour, so the bug cannot come back.
// ---------------------------------------------------------------------------

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
