//! The stored form of an event: `[header length: u16 LE][MessagePack header][value]`.
//!
//! The header (rmp-serde) holds everything but the path (the key has it) and
//! the value; the value follows raw so a read can hand out a slice of sled's
//! buffer without copying or decoding it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::{Digest, Event, NodeId, Path, Version};

use super::StoreError;

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    time: u64,
    #[serde(borrow)]
    node: Cow<'a, str>,
    /// The digest as two integers: MessagePack would write a byte array
    /// as 16 separate numbers, and decoding those dominated a read.
    digest: (u64, u64),
    seq: Option<u64>,
    deleted: bool,
    #[serde(borrow)]
    content_type: Option<Cow<'a, str>>,
    expires_at: Option<u64>,
    #[serde(borrow)]
    author: Option<Cow<'a, str>>,
    /// It arrived too late to become the value (history only). Absent in
    /// records of format 3 and before, whose late events had no seq.
    #[serde(default)]
    late: bool,
}

/// An event as read back from the store, with what the store adds to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The event.
    pub event: Event,
    /// Its content digest.
    pub digest: Digest,
    /// Its node-local change number. Every event gets one (a late one too)
    /// since format 4; `None` for a late event written before.
    pub seq: Option<u64>,
    /// It arrived too late to become the value: it is in history only, and
    /// streams to clients skip it. (Written since format 4; a late event of
    /// an older store has `seq: None` and this false.)
    pub late: bool,
}

/// The node id and content type decoded last on this thread. Most records
/// of a node share them, so a read reuses them instead of allocating.
#[derive(Default)]
struct Recent {
    node: Option<NodeId>,
    content_type: Option<Arc<str>>,
}

impl Recent {
    fn node(&mut self, id: &str) -> Option<NodeId> {
        if let Some(n) = self.node.as_ref().filter(|n| n.as_str() == id) {
            return Some(n.clone());
        }
        let n = NodeId::new(id).ok()?;
        self.node = Some(n.clone());
        Some(n)
    }

    fn content_type(&mut self, ct: &str) -> Arc<str> {
        if let Some(c) = self.content_type.as_ref().filter(|c| &***c == ct) {
            return c.clone();
        }
        let c: Arc<str> = Arc::from(ct);
        self.content_type = Some(c.clone());
        c
    }
}

thread_local! {
    static RECENT: std::cell::RefCell<Recent> = std::cell::RefCell::new(Recent::default());
}

fn split_digest(d: &Digest) -> (u64, u64) {
    let (hi, lo) = d.split_at(8);
    (
        u64::from_be_bytes(hi.try_into().expect("8 bytes")),
        u64::from_be_bytes(lo.try_into().expect("8 bytes")),
    )
}

fn join_digest((hi, lo): (u64, u64)) -> Digest {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&hi.to_be_bytes());
    d[8..].copy_from_slice(&lo.to_be_bytes());
    d
}

/// Encodes an event for the store.
pub fn encode(
    event: &Event,
    digest: &Digest,
    seq: Option<u64>,
    late: bool,
) -> Result<Vec<u8>, StoreError> {
    let header = Header {
        time: event.version.time,
        node: Cow::Borrowed(event.version.node.as_str()),
        digest: split_digest(digest),
        seq,
        deleted: event.value.is_none(),
        content_type: event.content_type.as_deref().map(Cow::Borrowed),
        expires_at: event.expires_at,
        author: event.author.as_deref().map(Cow::Borrowed),
        late,
    };
    let value = event.value.as_deref().unwrap_or(&[]);
    let mut out = Vec::with_capacity(2 + 64 + value.len());
    out.extend_from_slice(&[0, 0]);
    rmp_serde::encode::write(&mut out, &header).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let header_len = u16::try_from(out.len() - 2)
        .map_err(|_| StoreError::Corrupt("record header over 64 KiB".into()))?;
    out[..2].copy_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(value);
    Ok(out)
}

/// Decodes a record of `path`; the value is a zero-copy slice of `raw`.
pub fn decode(path: Path, raw: sled::IVec) -> Result<Stored, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("record of '{path}': {what}"));
    if raw.len() < 2 {
        return Err(corrupt("truncated"));
    }
    let header_len = u16::from_le_bytes([raw[0], raw[1]]) as usize;
    let body_start = 2 + header_len;
    if raw.len() < body_start {
        return Err(corrupt("truncated header"));
    }
    let header: Header<'_> =
        rmp_serde::from_slice(&raw[2..body_start]).map_err(|e| corrupt(&e.to_string()))?;
    let node = RECENT
        .with(|recent| recent.borrow_mut().node(&header.node))
        .ok_or_else(|| corrupt("bad node id"))?;
    let content_type = header
        .content_type
        .map(|c| RECENT.with(|recent| recent.borrow_mut().content_type(&c)));
    let author = header.author.map(|a| Arc::from(&*a));
    let (time, digest, seq, deleted, expires_at, late) = (
        header.time,
        join_digest(header.digest),
        header.seq,
        header.deleted,
        header.expires_at,
        header.late,
    );
    let value = if deleted {
        None
    } else {
        Some(Bytes::from_owner(raw).slice(body_start..))
    };
    Ok(Stored {
        event: Event {
            path,
            version: Version::new(time, node),
            value,
            content_type,
            expires_at,
            author,
        },
        digest,
        seq,
        late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_and_tombstones() {
        let event = Event {
            path: Path::parse("a/b").unwrap(),
            version: Version::new(9, NodeId::new("n").unwrap()),
            value: Some(Bytes::from_static(b"\x00\xffhello")),
            content_type: Some(Arc::from("application/octet-stream")),
            expires_at: Some(99),
            author: Some(Arc::from("alice")),
        };
        let d = event.digest();
        let raw = encode(&event, &d, Some(3), false).unwrap();
        let back = decode(event.path.clone(), raw.into()).unwrap();
        assert_eq!(
            back,
            Stored {
                event: event.clone(),
                digest: d,
                seq: Some(3),
                late: false,
            }
        );

        let tomb = Event {
            value: None,
            content_type: None,
            author: None,
            ..event
        };
        let raw = encode(&tomb, &tomb.digest(), Some(4), true).unwrap();
        let back = decode(tomb.path.clone(), raw.into()).unwrap();
        assert_eq!(back.event, tomb);
        assert_eq!((back.seq, back.late), (Some(4), true));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let p = Path::parse("x").unwrap();
        for raw in [&b""[..], b"\x05", b"\xff\xff\x01", b"\x02\x00\xc1\xc1"] {
            assert!(decode(p.clone(), raw.into()).is_err());
        }
    }
}
