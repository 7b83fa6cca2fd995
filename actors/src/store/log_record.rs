//! Records of the change log.
//!
//! Each partition has its own log (see `keys`): a reader of one partition
//! reads nothing of the others. Every event gets a node-wide seq (clients'
//! cursors stay `<incarnation>:<seq>` for any prefix), so the entries of one
//! partition have increasing seqs with gaps where other partitions took
//! theirs, and each entry carries its seq.
//!
//! A commit writes its entries as one *pending* record (`Q <first seq>`),
//! and the store keeps them in memory by partition; now and then a commit
//! *folds* them: each partition's pending entries become one record of its
//! log (`G part <last seq>`) and the pending records go (see
//! `pending_log`). So a commit inserts one new sled key, as when the log
//! was one (inserting new sled keys is what costs, see `pages`), and a
//! partition's log grows by one key per fold. Keying a partition's records
//! by their *last* seq makes both directions one range step: the records
//! holding seqs after `s` start at `G part s+1`, and those entirely below
//! `t` end before `G part t`.
//!
//! Layout: the tag byte [`TAG`], then per entry its seq (u64, little
//! endian), its length (u32, little endian) and the event's name `path \0
//! order` (see `keys::logged`). Format 4 kept one node-wide log of records
//! tagged [`V4_TAG`] without seqs (the `i`-th entry had seq `first + i`);
//! [`v4_entries`] reads them to upgrade such a store.

use super::StoreError;

/// First byte of every log record.
pub const TAG: u8 = 0x02;
/// First byte of a format-4 log record.
pub const V4_TAG: u8 = 0x01;

/// Builds a log record.
#[derive(Debug, Clone)]
pub struct LogRecordBuilder {
    bytes: Vec<u8>,
    last: Option<u64>,
}

impl Default for LogRecordBuilder {
    fn default() -> Self {
        LogRecordBuilder {
            bytes: vec![TAG],
            last: None,
        }
    }
}

impl LogRecordBuilder {
    /// Adds the event with `seq` (above the previous entry's) named `name`
    /// (`path \0 order`).
    pub fn push(&mut self, seq: u64, name: &[u8]) -> Result<(), StoreError> {
        if self.last.is_some_and(|last| seq <= last) {
            return Err(StoreError::Failed(format!(
                "log seqs of a partition must increase: {seq} after {}",
                self.last.unwrap_or(0)
            )));
        }
        let len = u32::try_from(name.len())
            .map_err(|_| StoreError::Failed("event name too long for the log".into()))?;
        self.bytes.extend_from_slice(&seq.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(name);
        self.last = Some(seq);
        Ok(())
    }

    /// The seq of the last entry, if any.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// The record.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// The entries of a record: `(seq, name)` in seq order; an error (once) if
/// the record is malformed.
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

/// Iterator over the entries of a log record.
#[derive(Debug)]
pub struct Entries<'a> {
    /// What is left to read; `None` once done or after an error.
    rest: Option<&'a [u8]>,
    /// The value is not a log record: report it once.
    untagged: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(u64, &'a [u8]), StoreError>;

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
        let truncated = || Some(Err(StoreError::Corrupt("truncated log record".into())));
        let Some((seq, body)) = rest.split_first_chunk::<8>() else {
            return truncated();
        };
        let Some((len, body)) = body.split_first_chunk::<4>() else {
            return truncated();
        };
        let len = u32::from_le_bytes(*len) as usize;
        if body.len() < len {
            return truncated();
        }
        let (name, rest) = body.split_at(len);
        self.rest = Some(rest);
        Some(Ok((u64::from_le_bytes(*seq), name)))
    }
}

/// The entries of a format-4 record (history keys without their namespace
/// byte, in seq order), or of a format-1 log value (one bare history key).
pub fn v4_entries(raw: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let Some(mut rest) = raw.strip_prefix(&[V4_TAG]) else {
        return Ok(vec![raw]);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, body) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| StoreError::Corrupt("truncated format-4 log record".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if body.len() < len {
            return Err(StoreError::Corrupt("truncated format-4 log record".into()));
        }
        out.push(&body[..len]);
        rest = &body[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_entries_with_their_seqs() {
        let mut b = LogRecordBuilder::default();
        assert_eq!(b.last(), None);
        b.push(7, b"a\0one").unwrap();
        b.push(9, b"").unwrap();
        assert_eq!(b.last(), Some(9));
        b.push(12, b"b/c\0three").unwrap();
        let raw = b.finish();
        let got: Vec<(u64, &[u8])> = entries(&raw).map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![(7, &b"a\0one"[..]), (9, b""), (12, b"b/c\0three")]
        );
    }

    #[test]
    fn disorder_and_damage_are_errors_not_panics() {
        let mut b = LogRecordBuilder::default();
        b.push(3, b"x").unwrap();
        assert!(b.push(3, b"y").is_err());
        assert!(b.push(2, b"y").is_err());

        let mut b = LogRecordBuilder::default();
        b.push(1, b"abc").unwrap();
        let raw = b.finish();
        for cut in 2..raw.len() {
            let all: Vec<_> = entries(&raw[..cut]).collect();
            assert!(
                all.last().is_some_and(Result::is_err),
                "a record cut at {cut} bytes must fail"
            );
        }
        let untagged: Vec<_> = entries(b"a\0bare history key").collect();
        assert!(matches!(untagged[..], [Err(_)]));
    }

    #[test]
    fn format_4_records_and_format_1_values_are_read_for_the_upgrade() {
        let mut raw = vec![V4_TAG];
        for e in [&b"a\0x"[..], b"bc\0y"] {
            raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        assert_eq!(v4_entries(&raw).unwrap(), vec![&b"a\0x"[..], b"bc\0y"]);
        assert!(v4_entries(&raw[..raw.len() - 1]).is_err());
        assert_eq!(v4_entries(b"p\0bare").unwrap(), vec![&b"p\0bare"[..]]);
    }
}
