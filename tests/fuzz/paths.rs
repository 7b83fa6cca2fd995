//! Target `path`: `Path::parse` and `Path::parse_key` against the path
//! grammar (a reference written from the spec), valid segments, and the
//! exact byte and depth limits.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use spread_actors::model::{MAX_PATH_BYTES, MAX_PATH_SEGMENTS};
use spread_actors::{Path, PathError};

use crate::corpus::text_seeds;
use crate::harness::{bounded, cfg};
use crate::mutate::{mutated_text, text_of};

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
pub(crate) fn check_path(raw: &str) -> Result<bool, TestCaseError> {
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
pub(crate) fn segment() -> impl Strategy<Value = String> {
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

pub(crate) const PATH_PIECES: &[&str] = &[
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
