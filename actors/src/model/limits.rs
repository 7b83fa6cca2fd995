//! Limits on the fields of a write, checked before a write enters a
//! partition: every event that reaches the committer can be encoded, so one
//! client's write can never fail a commit group holding others' writes.
//!
//! The edges (HTTP, WebSocket, CLI) check the same limits to answer with a
//! precise `400`; these checks are the engine's own guard, for embedded
//! callers too.

use bytes::Bytes;

/// Longest content type stored with a value. RFC 6838 allows 127 characters
/// for a type and as many for a subtype; parameters fit in the rest.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;
/// Longest author (a token's `sub`) stored with an event.
pub const MAX_AUTHOR_BYTES: usize = 256;
/// Largest value the engine takes. The HTTP and WebSocket limits are lower
/// by default (16 MiB); this bounds what an embedded caller may write.
pub const MAX_VALUE_BYTES: usize = 1 << 30;
/// Longest time to live a write may ask for (100 years, in seconds).
pub const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// Why a field of a write is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The content type is too long.
    #[error("content type is {0} bytes; at most {MAX_CONTENT_TYPE_BYTES} are allowed")]
    ContentTypeTooLong(usize),
    /// The content type has a character a header value cannot carry.
    #[error("content type may hold only visible ASCII, spaces and tabs")]
    ContentTypeChars,
    /// The author is too long.
    #[error("author (the token's subject) is {0} bytes; at most {MAX_AUTHOR_BYTES} are allowed")]
    AuthorTooLong(usize),
    /// The value is too large (its size, and the most allowed).
    #[error("value is {0} bytes; at most {1} are allowed")]
    ValueTooLarge(usize, usize),
    /// The time to live is out of range.
    #[error("ttl must be 1 to {MAX_TTL_SECS} seconds")]
    Ttl,
}

/// Checks a content type: bounded, and a valid HTTP header value (it is sent
/// back as `Content-Type` on reads).
pub fn check_content_type(ct: &str) -> Result<(), FieldError> {
    if ct.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(FieldError::ContentTypeTooLong(ct.len()));
    }
    if !ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(FieldError::ContentTypeChars);
    }
    Ok(())
}

/// Checks an author.
pub fn check_author(author: &str) -> Result<(), FieldError> {
    if author.len() > MAX_AUTHOR_BYTES {
        return Err(FieldError::AuthorTooLong(author.len()));
    }
    Ok(())
}

/// Checks a value's size against `max` (at most [`MAX_VALUE_BYTES`]; a
/// cluster's nodes take less, see `cluster::MAX_VALUE_BYTES`).
pub fn check_value(value: &Bytes, max: usize) -> Result<(), FieldError> {
    let max = max.min(MAX_VALUE_BYTES);
    if value.len() > max {
        return Err(FieldError::ValueTooLarge(value.len(), max));
    }
    Ok(())
}

/// Checks a time to live.
pub fn check_ttl(ttl_secs: u64) -> Result<(), FieldError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(FieldError::Ttl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bounded_by_the_callers_limit_within_the_engines() {
        let value = Bytes::from(vec![0u8; 100]);
        assert_eq!(check_value(&value, 100), Ok(()));
        assert_eq!(
            check_value(&value, 99),
            Err(FieldError::ValueTooLarge(100, 99))
        );
        assert_eq!(check_value(&value, usize::MAX), Ok(()));
        assert_eq!(
            FieldError::ValueTooLarge(100, 99).to_string(),
            "value is 100 bytes; at most 99 are allowed"
        );
    }

    #[test]
    fn content_types_are_bounded_and_header_safe() {
        assert_eq!(
            check_content_type("application/json; charset=utf-8"),
            Ok(())
        );
        assert_eq!(check_content_type(""), Ok(()));
        let long = "a".repeat(MAX_CONTENT_TYPE_BYTES + 1);
        assert_eq!(
            check_content_type(&long),
            Err(FieldError::ContentTypeTooLong(MAX_CONTENT_TYPE_BYTES + 1))
        );
        assert_eq!(check_content_type(&long[1..]), Ok(()));
        for bad in ["text/plain\r\nX: y", "text/\u{e9}", "a\0b", "a\u{7f}"] {
            assert_eq!(
                check_content_type(bad),
                Err(FieldError::ContentTypeChars),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn authors_and_ttls_are_bounded() {
        assert!(check_author(&"x".repeat(MAX_AUTHOR_BYTES)).is_ok());
        assert!(check_author(&"x".repeat(MAX_AUTHOR_BYTES + 1)).is_err());
        assert!(check_ttl(0).is_err());
        assert!(check_ttl(1).is_ok());
        assert!(check_ttl(MAX_TTL_SECS).is_ok());
        assert!(check_ttl(MAX_TTL_SECS + 1).is_err());
    }
}
