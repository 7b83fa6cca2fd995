//! Resume cursors: `"<incarnation>:<seq>"`.
//!
//! `incarnation` names one store (random, fixed when the data directory is
//! created), `seq` a position in its change log. A cursor from another node or
//! a rebuilt store can never be mistaken for a position in this one.

use std::fmt;
use std::sync::Arc;

use crate::error::NodeError;

/// A position in one store's change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The store it belongs to.
    pub incarnation: Arc<str>,
    /// The last change seen.
    pub seq: u64,
}

impl Cursor {
    /// Parses `"<incarnation>:<seq>"`.
    pub fn parse(s: &str) -> Result<Cursor, NodeError> {
        let (inc, seq) = s.trim().rsplit_once(':').ok_or(NodeError::BadCursor)?;
        let valid_inc = !inc.is_empty()
            && inc.len() <= 64
            && inc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_inc || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NodeError::BadCursor);
        }
        let seq = seq.parse().map_err(|_| NodeError::BadCursor)?;
        Ok(Cursor {
            incarnation: Arc::from(inc),
            seq,
        })
    }

    /// True if `since` is a cursor of the store `incarnation` names: a
    /// subscription with it resumes (whether that part of the log is still
    /// there is another matter).
    pub fn names_store(since: Option<&str>, incarnation: &str) -> bool {
        since
            .and_then(|s| Cursor::parse(s).ok())
            .is_some_and(|c| *c.incarnation == *incarnation)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.incarnation, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let c = Cursor::parse("ab12:42").unwrap();
        assert_eq!(c.seq, 42);
        assert_eq!(c.to_string(), "ab12:42");
        for bad in [
            "",
            "42",
            ":42",
            "ab:",
            "ab:-1",
            "a b:1",
            "ab:1x",
            "ab:99999999999999999999999",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
