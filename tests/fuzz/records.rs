//! Target `record`: the on-disk record (`store::decode`, and
//! `store::encode`): every event round-trips, the value is everything after
//! the header, truncated and corrupt records are refused or decode
//! consistently, and huge length claims are refused within the allocation
//! budget on a 2 MiB stack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use spread_actors::model::{NodeId, MAX_TIME_MICROS};
use spread_actors::store::{decode, encode, Stored};
use spread_actors::{Event, Path, Version};

use crate::corpus::seeds;
use crate::harness::{bounded, cfg, on_small_stack};
use crate::mutate::mutated_bytes;
use crate::ops::op_string;
use crate::paths::segment;
use crate::versions_and_times::{node_id, spec_node};

/// The path every record of the corpus and the properties is decoded under.
fn record_path() -> Path {
    Path::parse("corpus/record").expect("valid path")
}

/// Checks `store::decode` on raw bytes: no panic, bounded memory, and an `Ok`
/// is consistent with the bytes (the value is everything after the header).
pub(crate) fn check_record(raw: &[u8]) -> Result<bool, TestCaseError> {
    let got = bounded(raw.len(), || decode(record_path(), raw.into()));
    if let Ok(stored) = &got {
        prop_assert_eq!(&stored.event.path, &record_path());
        prop_assert!(raw.len() >= 2);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        prop_assert!(raw.len() >= body, "decoded past the end of the header");
        if let Some(value) = &stored.event.value {
            prop_assert_eq!(&value[..], &raw[body..]);
        }
        prop_assert!(spec_node(stored.event.version.node.as_str()));
    }
    Ok(got.is_ok())
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        prop::collection::vec(segment(), 1..6),
        prop_oneof![0..=MAX_TIME_MICROS, Just(MAX_TIME_MICROS)],
        node_id(),
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..64)),
        prop::option::of(op_string()),
        prop::option::of(any::<u64>()),
        prop::option::of(op_string()),
    )
        .prop_map(
            |(segments, time, node, value, ct, expires_at, author)| Event {
                path: Path::parse(&segments.join("/")).expect("valid segments"),
                version: Version::new(time, NodeId::new(&node).expect("valid node")),
                value: value.map(Bytes::from),
                content_type: ct.map(Arc::from),
                expires_at,
                author: author.map(Arc::from),
            },
        )
}

fn arb_stored() -> impl Strategy<Value = Stored> {
    (
        arb_event(),
        prop::option::of(any::<[u8; 16]>()),
        prop::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(|(event, digest, seq, late)| Stored {
            digest: digest.unwrap_or_else(|| event.digest()),
            event,
            seq,
            late,
        })
}

fn encode_stored(s: &Stored) -> Vec<u8> {
    encode(&s.event, &s.digest, s.seq, s.late).expect("encodes")
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Every event encodes and decodes back to itself.
    #[test]
    fn records_round_trip(s in arb_stored()) {
        let raw = encode_stored(&s);
        let back = bounded(raw.len(), || decode(s.event.path.clone(), raw.as_slice().into()));
        prop_assert_eq!(back.as_ref().ok(), Some(&s));
        prop_assert!(check_record(&raw)?);
    }

    /// The value is not part of the header: any bytes after it are the value.
    #[test]
    fn record_value_is_the_tail(s in arb_stored(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let raw = encode_stored(&s);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        let swapped = [&raw[..body], &tail[..]].concat();
        let back = decode(s.event.path.clone(), swapped.as_slice().into()).expect("decodes");
        let want = s.event.value.as_ref().map(|_| Bytes::from(tail));
        prop_assert_eq!(back.event.value, want);
        prop_assert_eq!(back.event.version, s.event.version);
    }

    /// A record cut inside its length prefix or header is refused.
    #[test]
    fn truncated_headers_are_refused(s in arb_stored(), cut in any::<Index>()) {
        let raw = encode_stored(&s);
        let body = 2 + u16::from_le_bytes([raw[0], raw[1]]) as usize;
        let cut = cut.index(body);
        prop_assert!(!check_record(&raw[..cut])?, "cut at {} of {}", cut, body);
    }

    /// Corrupted records: no panic, bounded memory, consistent `Ok`s.
    #[test]
    fn corrupt_records_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("record")),
        2 => arb_stored().prop_flat_map(|s| mutated_bytes(vec![encode_stored(&s)])),
        1 => prop::collection::vec(any::<u8>(), 0..128),
    ]) {
        check_record(&raw)?;
    }
}

#[test]
fn record_refuses_huge_claims() {
    let header = |h: &[u8]| {
        let mut v = (h.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header length 65535, no header", vec![0xff, 0xff]),
        (
            "header length 65535, short header",
            vec![0xff, 0xff, 0x98, 0x01],
        ),
        (
            "header is array32 of 4 G",
            header(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "header is map32 of 4 G",
            header(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "node is str32 of 4 GB",
            header(&[0x98, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "content type is bin32 of 4 GB",
            header(&[
                0x98, 0x01, 0xa1, b'n', 0x92, 0, 0, 0xc0, 0xc2, 0xc6, 0xff, 0xff, 0xff, 0xff,
            ]),
        ),
        ("header nested 65k deep", header(&[0x91; 65_000])),
    ];
    for (name, raw) in cases {
        let ok = on_small_stack(name, Duration::from_secs(10), move || {
            bounded(raw.len(), || decode(record_path(), raw.as_slice().into())).is_ok()
        });
        assert!(!ok, "{name}: decoded");
    }
}

#[test]
fn record_header_over_64k_is_an_error() {
    let event = Event {
        path: record_path(),
        version: Version::new(1, NodeId::new("n").expect("node")),
        value: Some(Bytes::from_static(b"v")),
        content_type: Some(Arc::from("x".repeat(70_000))),
        expires_at: None,
        author: None,
    };
    assert!(encode(&event, &event.digest(), Some(1), false).is_err());
}
