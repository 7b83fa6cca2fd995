//! `Path`: a validated, normalized hierarchical key (`rooms/42/messages/7`).
//!
//! Parsed once at the edge; everything past the edge holds a `Path` and never
//! re-validates. The empty path is the root: it names no value but is a valid
//! prefix (subscribe to or list everything).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest path accepted, in bytes (after percent-decoding).
pub const MAX_PATH_BYTES: usize = 1024;
/// Most segments a path may have.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// Why a string is not a valid path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Two `/` in a row, or a `/` at both ends of a segment.
    #[error("empty segment in path")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("segment '{0}' is not allowed")]
    DotSegment(&'static str),
    /// A control character (U+0000–U+001F, U+007F–U+009F).
    #[error("control character in path")]
    ControlCharacter,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("path is {0} bytes, the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// More than [`MAX_PATH_SEGMENTS`] segments.
    #[error("path has {0} segments, the limit is {MAX_PATH_SEGMENTS}")]
    TooDeep(usize),
    /// The root was given where a value's path is needed.
    #[error("path is empty")]
    Empty,
}

/// A normalized path: segments joined by `/`, no leading or trailing `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(Arc<str>);

impl Path {
    /// Parses a path, ignoring one leading and one trailing `/`. The root (`""`)
    /// is accepted; use [`Path::parse_key`] where a value's path is needed.
    pub fn parse(raw: &str) -> Result<Path, PathError> {
        let s = raw.strip_prefix('/').unwrap_or(raw);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(s.len()));
        }
        if s.is_empty() {
            return Ok(Path::root());
        }
        // One pass over the bytes (this is on every read): segment by
        // segment, the first fault found wins.
        let bytes = s.as_bytes();
        let mut segments = 0usize;
        let mut start = 0;
        let mut control = false;
        for i in 0..=bytes.len() {
            let Some(&b) = bytes.get(i).filter(|&&b| b != b'/') else {
                segments += 1;
                match &bytes[start..i] {
                    b"" => return Err(PathError::EmptySegment),
                    b"." => return Err(PathError::DotSegment(".")),
                    b".." => return Err(PathError::DotSegment("..")),
                    _ if control => return Err(PathError::ControlCharacter),
                    _ => {}
                }
                start = i + 1;
                continue;
            };
            // Control characters are U+0000–U+001F, U+007F (one byte) and
            // U+0080–U+009F (0xC2 then 0x80–0x9F in UTF-8).
            control |= b < 0x20
                || b == 0x7f
                || (b == 0xc2 && bytes.get(i + 1).is_some_and(|&n| n <= 0x9f));
        }
        if segments > MAX_PATH_SEGMENTS {
            return Err(PathError::TooDeep(segments));
        }
        Ok(Path(Arc::from(s)))
    }

    /// Parses the path of a value: like [`Path::parse`] but the root is refused.
    pub fn parse_key(raw: &str) -> Result<Path, PathError> {
        let path = Path::parse(raw)?;
        if path.is_root() {
            return Err(PathError::Empty);
        }
        Ok(path)
    }

    /// The root path, prefix of every path.
    pub fn root() -> Path {
        Path(Arc::from(""))
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalized text, without leading or trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// True if `self` is `other` or one of its ancestors (segment-wise).
    pub fn covers(&self, other: &Path) -> bool {
        covers(self.as_str(), other.as_str())
    }

    /// The first `depth` segments joined by `/` (the whole path if shorter).
    pub fn head(&self, depth: usize) -> &str {
        match self.0.match_indices('/').nth(depth.saturating_sub(1)) {
            Some((i, _)) if depth > 0 => &self.0[..i],
            _ if depth == 0 => "",
            _ => &self.0,
        }
    }

    /// Every prefix that covers this path, from the root to the path itself.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let s: &str = &self.0;
        std::iter::once("")
            .chain(s.match_indices('/').map(move |(i, _)| &s[..i]))
            .chain((!s.is_empty()).then_some(s))
    }
}

/// Segment-wise prefix test on normalized path strings.
pub fn covers(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({:?})", &*self.0)
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Path::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_segment_is_reported_before_the_depth() {
        let deep = format!("{}/a/../b", vec!["s"; 40].join("/"));
        assert_eq!(Path::parse(&deep), Err(PathError::DotSegment("..")));
    }

    #[test]
    fn normalizes_leading_and_trailing_slash() {
        assert_eq!(Path::parse("/a/b/").unwrap().as_str(), "a/b");
        assert!(Path::parse("/").unwrap().is_root());
        assert!(Path::parse("").unwrap().is_root());
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(Path::parse("a//b"), Err(PathError::EmptySegment));
        assert_eq!(Path::parse("a/../b"), Err(PathError::DotSegment("..")));
        assert_eq!(Path::parse("./b"), Err(PathError::DotSegment(".")));
        assert_eq!(Path::parse("a/\u{7}"), Err(PathError::ControlCharacter));
        assert_eq!(Path::parse("a/\nb"), Err(PathError::ControlCharacter));
        assert_eq!(
            Path::parse(&"x".repeat(2048)),
            Err(PathError::TooLong(2048))
        );
        let deep = vec!["s"; 33].join("/");
        assert_eq!(Path::parse(&deep), Err(PathError::TooDeep(33)));
        assert!(Path::parse(&vec!["s"; 32].join("/")).is_ok());
        assert_eq!(Path::parse_key("/"), Err(PathError::Empty));
    }

    #[test]
    fn covers_is_segment_wise() {
        let a = Path::parse("a").unwrap();
        assert!(a.covers(&Path::parse("a/b").unwrap()));
        assert!(a.covers(&a));
        assert!(!a.covers(&Path::parse("ab").unwrap()));
        assert!(Path::root().covers(&a));
    }

    #[test]
    fn head_and_ancestors() {
        let p = Path::parse("rooms/42/messages/7").unwrap();
        assert_eq!(p.head(2), "rooms/42");
        assert_eq!(p.head(9), "rooms/42/messages/7");
        assert_eq!(p.head(0), "");
        let all: Vec<&str> = p.ancestors().collect();
        assert_eq!(
            all,
            vec![
                "",
                "rooms",
                "rooms/42",
                "rooms/42/messages",
                "rooms/42/messages/7"
            ]
        );
        assert_eq!(Path::root().ancestors().collect::<Vec<_>>(), vec![""]);
    }
}
