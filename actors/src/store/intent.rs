//! A commit's *intent*: every key it writes, in one sled value written
//! before the keys themselves, so a commit needs no `sled::Batch`.
//!
//! Why: sled makes a batch atomic with a manifest that it writes to its log
//! on its own (it seals the log buffer right behind it), so a durable commit
//! cost two log writes, each a `pwrite` and a `sync_file_range` handed to
//! sled's I/O threads. A single insert is atomic by itself. A commit inserts
//! its intent under meta `intent` (overwriting the previous commit's), then
//! sets and removes its keys one by one; a flush then covers both.
//!
//! Why it is safe: sled recovers a prefix of its log (it drops a torn
//! segment and every segment after it, see sled's `pagecache::segment`).
//! So after a crash either a commit's intent is lost, and then so are all of
//! its keys (they were written after it), or the intent is there with some
//! prefix of its keys, and replaying it when the store is opened completes
//! the commit. The intent a commit overwrites is complete: its keys were all
//! written before the new intent, so any prefix holding the new one holds
//! them. Replaying an intent whose keys are all there changes nothing, and
//! only commits write the keys an intent names.
//!
//! A commit that fails partway (sled could not write its log) leaves its
//! intent, and the store completes it when next opened: its writers were
//! told it failed, so it may or may not appear, like any write whose answer
//! was an error. Meanwhile nothing builds on the half-written state: the
//! store refuses every later commit until it is reopened.
//!
//! Layout: the tag byte [`TAG`], then per operation a kind byte ([`SET`] or
//! [`REMOVE`]), the key's length (u32, little endian) and the key, and for a
//! set the value's length (u32, little endian) and the value.

use sled::IVec;

use super::StoreError;

/// First byte of every intent.
pub const TAG: u8 = 0x01;
/// Kind byte of an operation that sets a key.
pub const SET: u8 = b's';
/// Kind byte of an operation that removes a key.
pub const REMOVE: u8 = b'r';

/// The largest intent a commit writes. A bigger commit is applied as one
/// `sled::Batch` instead (which also removes the previous intent): sled
/// would spill a value over an eighth of its 512 KiB segments into a file
/// of its own, which costs more than the batch.
pub const MAX_BYTES: usize = 64 * 1024;

/// One write of a commit: set `key` to the value, or remove it (`None`).
pub type Op = (Vec<u8>, Option<IVec>);

/// An [`Op`] read back from a stored intent, borrowing its bytes.
pub type OpRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// The size [`encode`] gives `ops`.
pub fn encoded_len(ops: &[Op]) -> usize {
    1 + ops
        .iter()
        .map(|(key, value)| 1 + 4 + key.len() + value.as_ref().map_or(0, |v| 4 + v.len()))
        .sum::<usize>()
}

/// The intent of `ops`, in order.
pub fn encode(ops: &[Op]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(encoded_len(ops));
    out.push(TAG);
    for (key, value) in ops {
        out.push(if value.is_some() { SET } else { REMOVE });
        put_bytes(&mut out, key)?;
        if let Some(value) = value {
            put_bytes(&mut out, value)?;
        }
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| StoreError::Failed("a key or value too long for an intent".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The operations of an intent, in the order they were written.
pub fn decode(raw: &[u8]) -> Result<Vec<OpRef<'_>>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("bad commit intent: {what}"));
    let mut rest = match raw.split_first() {
        Some((&TAG, rest)) => rest,
        _ => return Err(bad("unknown tag")),
    };
    let mut ops = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        rest = after;
        let key = take_bytes(&mut rest).ok_or_else(|| bad("truncated key"))?;
        let value = match kind {
            SET => Some(take_bytes(&mut rest).ok_or_else(|| bad("truncated value"))?),
            REMOVE => None,
            _ => return Err(bad("unknown operation")),
        };
        ops.push((key, value));
    }
    Ok(ops)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, after) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if after.len() < len {
        return None;
    }
    let (bytes, after) = after.split_at(len);
    *rest = after;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<Op> {
        vec![
            (b"ha\0o1".to_vec(), Some(IVec::from(&b"page"[..]))),
            (b"g12345678".to_vec(), None),
            (b"la".to_vec(), Some(IVec::from(&b""[..]))),
            (b"mhead".to_vec(), Some(IVec::from(vec![7u8; 300]))),
        ]
    }

    #[test]
    fn intents_round_trip_in_order_with_their_size_known_in_advance() {
        let ops = ops();
        let raw = encode(&ops).unwrap();
        assert_eq!(raw.len(), encoded_len(&ops));
        let back: Vec<Op> = decode(&raw)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.map(IVec::from)))
            .collect();
        assert_eq!(back, ops);
        assert_eq!(decode(&encode(&[]).unwrap()).unwrap(), Vec::new());
    }

    #[test]
    fn a_cut_or_altered_intent_is_reported_corrupt() {
        let ops = ops();
        let raw = encode(&ops).unwrap();
        // Every cut that ends inside an operation is refused (cuts between
        // operations decode to a shorter list, which sled's checksums rule
        // out in a stored value; the test pins the parser's own bounds).
        let boundaries: Vec<usize> = (0..ops.len()).map(|n| encoded_len(&ops[..n])).collect();
        for cut in 0..raw.len() {
            let result = decode(&raw[..cut]);
            if boundaries.contains(&cut) {
                assert!(result.is_ok(), "cut at {cut}");
            } else {
                assert!(
                    matches!(result, Err(StoreError::Corrupt(_))),
                    "cut at {cut}"
                );
            }
        }
        let mut bad_kind = raw.clone();
        bad_kind[1] = b'x';
        assert!(matches!(decode(&bad_kind), Err(StoreError::Corrupt(_))));
        let mut bad_tag = raw;
        bad_tag[0] = 0x02;
        assert!(matches!(decode(&bad_tag), Err(StoreError::Corrupt(_))));
    }
}
