//! Records of the node-local change log: one sled value per commit.
//!
//! A commit gives its new latest values consecutive seqs, so the log stores
//! them as one record keyed by the first seq (`g first`), naming each event's
//! history key in seq order: the `i`-th entry has seq `first + i`. One sled
//! key per commit instead of one per event is what keeps the log cheap on
//! the write path (every sled insert copies a leaf and later frees it).
//!
//! Layout: the tag byte [`TAG`], then for each entry its length (u32, little
//! endian) and the history key without its namespace byte. A history key
//! starts with a path, and paths never start with a control character, so
//! the tag tells a record from the bare history key that format 1 stored per
//! seq (see `SledStore::open`).

use super::StoreError;

/// First byte of every log record.
pub const TAG: u8 = 0x01;

/// Builds the log record of one commit.
#[derive(Debug)]
pub struct LogRecordBuilder {
    bytes: Vec<u8>,
    first: Option<u64>,
    next: u64,
}

impl Default for LogRecordBuilder {
    fn default() -> Self {
        LogRecordBuilder {
            bytes: vec![TAG],
            first: None,
            next: 0,
        }
    }
}

impl LogRecordBuilder {
    /// Adds the event with `seq` (the one after the previous entry's) whose
    /// history key without its namespace byte is `history_key`.
    pub fn push(&mut self, seq: u64, history_key: &[u8]) -> Result<(), StoreError> {
        match self.first {
            None => self.first = Some(seq),
            Some(_) if seq != self.next => {
                return Err(StoreError::Failed(format!(
                    "log seqs of one commit must be consecutive: {seq} after {}",
                    self.next - 1
                )))
            }
            Some(_) => {}
        }
        self.next = seq + 1;
        let len = u32::try_from(history_key.len())
            .map_err(|_| StoreError::Failed("history key too long for the log".into()))?;
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(history_key);
        Ok(())
    }

    /// The first seq and the record, or `None` if nothing was pushed.
    pub fn finish(self) -> Option<(u64, Vec<u8>)> {
        self.first.map(|first| (first, self.bytes))
    }
}

/// True if `raw` is a log record (format 2), false for a format-1 log value.
pub fn is_record(raw: &[u8]) -> bool {
    raw.first() == Some(&TAG)
}

/// The history keys (without namespace byte) named by a log record, in seq
/// order. A value without the tag yields one error.
pub fn entries(raw: &[u8]) -> Entries<'_> {
    match raw.strip_prefix(&[TAG]) {
        Some(rest) => Entries {
            rest: Some(rest),
            untagged: false,
        },
        None => Entries {
            rest: None,
            untagged: true,
        },
    }
}

/// Iterator over the entries of a log record; yields an error (once) if the
/// record is malformed.
#[derive(Debug)]
pub struct Entries<'a> {
    /// What is left to read; `None` once done or after an error.
    rest: Option<&'a [u8]>,
    /// The value is not a log record: report it once.
    untagged: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<&'a [u8], StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if std::mem::take(&mut self.untagged) {
            return Some(Err(StoreError::Corrupt(
                "a log value without its tag".into(),
            )));
        }
        let rest = self.rest.take()?;
        if rest.is_empty() {
            return None;
        }
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            return Some(Err(StoreError::Corrupt("truncated log record".into())));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if body.len() < len {
            return Some(Err(StoreError::Corrupt("truncated log record".into())));
        }
        let (entry, rest) = body.split_at(len);
        self.rest = Some(rest);
        Some(Ok(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_entries_in_seq_order() {
        let mut b = LogRecordBuilder::default();
        b.push(7, b"a\0one").unwrap();
        b.push(8, b"").unwrap();
        b.push(9, b"b/c\0three").unwrap();
        let (first, raw) = b.finish().unwrap();
        assert_eq!(first, 7);
        assert!(is_record(&raw));
        let got: Vec<&[u8]> = entries(&raw).map(Result::unwrap).collect();
        assert_eq!(got, vec![&b"a\0one"[..], b"", b"b/c\0three"]);
        assert!(LogRecordBuilder::default().finish().is_none());
    }

    #[test]
    fn gaps_and_damage_are_errors_not_panics() {
        let mut b = LogRecordBuilder::default();
        b.push(1, b"x").unwrap();
        assert!(b.push(3, b"y").is_err());

        let mut b = LogRecordBuilder::default();
        b.push(1, b"abc").unwrap();
        let (_, raw) = b.finish().unwrap();
        for cut in 2..raw.len() {
            let all: Vec<_> = entries(&raw[..cut]).collect();
            assert!(
                all.last().is_some_and(Result::is_err),
                "a record cut at {cut} bytes must fail"
            );
        }
        assert!(!is_record(b"a\0bare history key"));
        let untagged: Vec<_> = entries(b"a\0bare history key").collect();
        assert!(matches!(untagged[..], [Err(_)]));
    }
}
