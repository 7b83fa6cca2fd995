//! Moments in time as clients name them: microseconds since the Unix epoch,
//! or RFC 3339 (`2026-12-06T05:00:00Z`, fractions down to the microsecond).
//! Used by `?at=`, `?from=`, `?to=` and rollback targets.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::version::{parse_time, NodeId, Version, MAX_TIME_MICROS};

/// Why a moment is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MomentError {
    /// Neither microseconds nor RFC 3339, or outside what a version can carry.
    #[error("a time must be microseconds since 1970 (up to {MAX_TIME_MICROS}) or RFC 3339, e.g. 2026-12-06T05:00:00Z (or, where a version is taken, \"<time>.<node>\"); got '{0}'")]
    Malformed(String),
}

/// Longest text taken as a moment (RFC 3339 with nanoseconds and an offset
/// is 35 bytes).
const MAX_MOMENT_BYTES: usize = 64;

/// Parses microseconds since the Unix epoch or an RFC 3339 date-time (its
/// fraction truncated to microseconds).
pub fn parse_moment(s: &str) -> Result<u64, MomentError> {
    let text = s.trim();
    let bad = || {
        let shown: String = text.chars().take(MAX_MOMENT_BYTES).collect();
        MomentError::Malformed(shown)
    };
    if text.len() > MAX_MOMENT_BYTES {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return parse_time(text).map_err(|_| bad());
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad())?;
    let micros = at.unix_timestamp_nanos() / 1000;
    if !(0..=MAX_TIME_MICROS as i128).contains(&micros) {
        return Err(bad());
    }
    Ok(micros as u64)
}

/// A point in a path's history: it covers every event whose version is at
/// or before it. From a time, every event of that time or earlier; from a
/// version, that event and those ordered before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOf {
    /// Events up to this time (µs)…
    pub time: u64,
    /// …and, at exactly `time`, up to this node id (every node when `None`).
    pub node: Option<NodeId>,
}

impl AsOf {
    /// Every event at or before `time`.
    pub fn time(time: u64) -> AsOf {
        AsOf { time, node: None }
    }

    /// `version` and every event ordered before it.
    pub fn version(version: &Version) -> AsOf {
        AsOf {
            time: version.time,
            node: Some(version.node.clone()),
        }
    }

    /// Parses a version (`<time>.<node>`) or a moment ([`parse_moment`]).
    pub fn parse(s: &str) -> Result<AsOf, MomentError> {
        match s.trim().parse::<Version>() {
            Ok(version) => Ok(AsOf::version(&version)),
            Err(_) => parse_moment(s).map(AsOf::time),
        }
    }

    /// True if `version` is at or before this point.
    pub fn includes(&self, version: &Version) -> bool {
        version.time < self.time
            || (version.time == self.time && self.node.as_ref().is_none_or(|n| version.node <= *n))
    }
}

/// A time in microseconds as RFC 3339 in UTC with microseconds, for
/// messages people read.
pub fn format_moment(micros: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{micros} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_and_rfc3339_name_the_same_moment() {
        assert_eq!(parse_moment("1765000000123456"), Ok(1_765_000_000_123_456));
        assert_eq!(
            parse_moment("2025-12-06T05:46:40.123456Z"),
            Ok(1_764_999_999_000_000 + 1_000_000 + 123_456)
        );
        assert_eq!(
            parse_moment("2025-12-06T06:46:40+01:00"),
            parse_moment("2025-12-06T05:46:40Z")
        );
        // Nanoseconds are truncated to the microsecond.
        assert_eq!(parse_moment("1970-01-01T00:00:00.000001999Z"), Ok(1));
        assert_eq!(parse_moment(" 42 "), Ok(42));
    }

    #[test]
    fn bad_moments_are_named() {
        for bad in [
            "",
            "yesterday",
            "-5",
            "1969-12-31T23:59:59Z",
            "2025-12-06",
            "9007199254740992",
            "2025-13-01T00:00:00Z",
        ] {
            let err = parse_moment(bad).expect_err(bad);
            assert!(err.to_string().contains("RFC 3339"), "{err}");
        }
        let long = "9".repeat(200);
        assert!(parse_moment(&long).unwrap_err().to_string().len() < 300);
    }

    #[test]
    fn a_point_of_history_is_a_version_or_a_moment() {
        let v: Version = "100.b".parse().unwrap();
        let as_of = AsOf::parse("100.b").unwrap();
        assert_eq!(as_of, AsOf::version(&v));
        assert!(as_of.includes(&"100.a".parse().unwrap()));
        assert!(as_of.includes(&v));
        assert!(!as_of.includes(&"100.c".parse().unwrap()));
        assert!(!as_of.includes(&"101.a".parse().unwrap()));
        let t = AsOf::parse("100").unwrap();
        assert_eq!(t, AsOf::time(100));
        assert!(t.includes(&"100.zzz".parse().unwrap()));
        assert!(!t.includes(&"101.a".parse().unwrap()));
        assert_eq!(
            AsOf::parse("1970-01-01T00:00:00.0001Z").unwrap(),
            AsOf::time(100)
        );
        assert!(AsOf::parse("100.not valid").is_err());
    }

    #[test]
    fn formatted_moments_parse_back() {
        for t in [0, 1, 1_765_000_000_123_456, MAX_TIME_MICROS] {
            let text = format_moment(t);
            assert_eq!(parse_moment(&text), Ok(t), "{text}");
        }
    }
}
