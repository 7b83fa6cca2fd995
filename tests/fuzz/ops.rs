//! Targets `op_json` and `op_msgpack`: the WebSocket op decoder
//! (`ops::decode_op`, text frames as JSON, binary frames as MessagePack)
//! against the op grammar and the field limits: valid ops decode to exactly
//! what was sent, fields around and over their limits are refused exactly
//! when over, errors keep the frame's `id` (never an oversized one), and
//! huge length claims and deep nesting are refused within the allocation
//! budget on a 2 MiB stack. Also the fixed bugs of the op decoder.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};
use spread_web::encode::WireFormat;
use spread_web::error::MAX_ERROR_DETAIL_BYTES;
use spread_web::ops::{decode_op, Op, OpError, MAX_OP_ID_BYTES};
use spread_web::request::MAX_CURSOR_BYTES;

use crate::corpus::{corpus_file, seeds};
use crate::harness::{bounded, cfg, in_child, on_small_stack, passes_in_child};
use crate::mutate::{mutated_bytes, text_of};
use crate::paths::PATH_PIECES;

const OPS: &[&str] = &["subscribe", "unsubscribe", "get", "set", "delete"];

/// The fields an op may carry besides `op` and `id`: (required, optional).
fn op_fields(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match kind {
        "subscribe" => (&["path"], &["since", "from", "to"]),
        "unsubscribe" | "get" | "delete" => (&["path"], &[]),
        "set" => (&["path"], &["value", "value_b64", "content_type"]),
        _ => return None,
    })
}

/// The op grammar, written from the spec: a map with a known `op`, its
/// required string fields, optional string-or-null fields, any `id`, and
/// nothing else.
fn spec_op(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    let Some((required, optional)) = obj.get("op").and_then(Value::as_str).and_then(op_fields)
    else {
        return false;
    };
    required.iter().all(|f| obj.contains_key(*f))
        && obj.iter().all(|(k, val)| match k.as_str() {
            "op" | "id" => true,
            k if required.contains(&k) => val.is_string(),
            k if optional.contains(&k) => val.is_string() || val.is_null(),
            _ => false,
        })
}

/// The field limits of ops, written from the spec (README, Security): an
/// `id` of at most 256 bytes as JSON, a `since` of at most 128 bytes, a
/// `content_type` of at most 256 bytes of visible ASCII, spaces and tabs.
/// (The path is bounded where it is parsed, the value by the frame.)
fn spec_op_limits(v: &Value) -> bool {
    let since_ok = v["op"] != "subscribe" || v["since"].as_str().is_none_or(|s| s.len() <= 128);
    let ct_ok = v["op"] != "set"
        || v["content_type"].as_str().is_none_or(|ct| {
            ct.len() <= 256 && ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        });
    spec_id_fits(v) && since_ok && ct_ok
}

/// The web crate's constants are the documented limits.
#[test]
fn op_limits_are_the_documented_ones() {
    assert_eq!(
        (MAX_OP_ID_BYTES, MAX_CURSOR_BYTES, MAX_ERROR_DETAIL_BYTES),
        (256, 128, 2048)
    );
}

/// True when the frame has no `id`, or one of at most 256 bytes as JSON.
fn spec_id_fits(v: &Value) -> bool {
    v.get("id")
        .is_none_or(|id| serde_json::to_vec(id).expect("JSON").len() <= 256)
}

/// The `id` an error for `v` must carry: the frame's, unless it is over the
/// limit (an oversized id is never echoed).
fn spec_error_id(v: &Value) -> Option<&Value> {
    v.get("id").filter(|_| spec_id_fits(v))
}

/// Every error detail is bounded, whatever the frame quotes.
fn check_detail(e: &OpError) -> Result<(), TestCaseError> {
    prop_assert!(!e.detail.is_empty());
    prop_assert!(
        e.detail.len() <= MAX_ERROR_DETAIL_BYTES,
        "a detail of {} bytes",
        e.detail.len()
    );
    Ok(())
}

/// What a decoded op says.
struct OpParts<'a> {
    kind: &'static str,
    path: &'a str,
    id: Option<&'a Value>,
    /// The optional string fields of the op's kind, by name.
    optional: Vec<(&'static str, Option<&'a str>)>,
}

fn op_parts(op: &Op) -> OpParts<'_> {
    fn parts<'a>(kind: &'static str, path: &'a str, id: &'a Option<Value>) -> OpParts<'a> {
        OpParts {
            kind,
            path,
            id: id.as_ref(),
            optional: vec![],
        }
    }
    match op {
        Op::Subscribe {
            path,
            since,
            from,
            to,
            id,
        } => OpParts {
            optional: vec![
                ("since", since.as_deref()),
                ("from", from.as_deref()),
                ("to", to.as_deref()),
            ],
            ..parts("subscribe", path, id)
        },
        Op::Unsubscribe { path, id } => parts("unsubscribe", path, id),
        Op::Get { path, id } => parts("get", path, id),
        Op::Set {
            path,
            value,
            value_b64,
            content_type,
            id,
        } => OpParts {
            optional: vec![
                ("value", value.as_deref()),
                ("value_b64", value_b64.as_deref()),
                ("content_type", content_type.as_deref()),
            ],
            ..parts("set", path, id)
        },
        Op::Delete { path, id } => parts("delete", path, id),
    }
}

fn frame(v: &Value, format: WireFormat) -> Vec<u8> {
    match format {
        WireFormat::Json => serde_json::to_vec(v).expect("JSON"),
        WireFormat::MsgPack => rmp_serde::to_vec_named(v).expect("MessagePack"),
    }
}

fn format_name(format: WireFormat) -> &'static str {
    match format {
        WireFormat::Json => "JSON",
        WireFormat::MsgPack => "MessagePack",
    }
}

fn decode_bounded(raw: &[u8], format: WireFormat) -> Result<Op, OpError> {
    bounded(raw.len(), || decode_op(raw, format))
}

/// Checks that the frame of `v` decodes as the spec says: the same op, or an
/// error carrying `v`'s `id`.
fn check_op_value(v: &Value, format: WireFormat) -> Result<(), TestCaseError> {
    let raw = frame(v, format);
    let got = decode_bounded(&raw, format);
    let name = format_name(format);
    if let Err(e) = &got {
        check_detail(e)?;
    }
    match (got, spec_op(v) && spec_op_limits(v)) {
        (Ok(op), true) => {
            let OpParts {
                kind,
                path,
                id,
                optional,
            } = op_parts(&op);
            prop_assert_eq!(Some(kind), v["op"].as_str(), "{} {}", name, v);
            prop_assert_eq!(Some(path), v["path"].as_str());
            // `"id": null` is the same as no id.
            prop_assert_eq!(id, v.get("id").filter(|id| !id.is_null()), "{} {}", name, v);
            for (field, value) in optional {
                prop_assert_eq!(
                    value,
                    v.get(field).and_then(Value::as_str),
                    "{} {}",
                    field,
                    v
                );
            }
        }
        (Err(e), false) => {
            prop_assert_eq!(
                e.id.as_ref(),
                spec_error_id(v),
                "{} {}: {}",
                name,
                v,
                e.detail
            );
        }
        (Ok(_), false) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame of {v} decoded, but it is not a valid op"
            )))
        }
        (Err(e), true) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame of {v} refused ({}), but it is a valid op",
                e.detail
            )))
        }
    }
    Ok(())
}

/// Checks one raw frame: no panic, bounded memory, `Ok` only for a frame
/// that is exactly one valid op (a map, with no bytes after it), and errors
/// keep the frame's `id`.
pub(crate) fn check_op_bytes(raw: &[u8], format: WireFormat) -> Result<bool, TestCaseError> {
    let got = decode_bounded(raw, format);
    // The value in the frame, parsed on its own, and whether bytes follow it.
    let (parsed, trailing): (Option<Value>, bool) = match format {
        WireFormat::Json => (serde_json::from_slice(raw).ok(), false),
        WireFormat::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(raw));
            let v: Option<Value> = serde::Deserialize::deserialize(&mut de).ok();
            let trailing = (de.position() as usize) < raw.len();
            (v, trailing)
        }
    };
    let name = format_name(format);
    if let Err(e) = &got {
        check_detail(e)?;
    }
    match (&got, parsed) {
        (Ok(_), Some(v)) => {
            prop_assert!(
                spec_op(&v) && spec_op_limits(&v),
                "{} frame decoded, but it is not an op within the limits: {}",
                name,
                v
            );
            prop_assert!(
                !trailing,
                "{} frame decoded, but bytes follow the op: {:02x?}",
                name,
                raw
            );
        }
        (Ok(_), None) => {
            return Err(TestCaseError::fail(format!(
                "{name} frame {raw:02x?} decoded, but it is not a valid value"
            )))
        }
        (Err(e), Some(v)) => {
            prop_assert!(
                !spec_op(&v) || !spec_op_limits(&v) || trailing,
                "refused a valid op {}: {}",
                v,
                e.detail
            );
            if !trailing {
                prop_assert_eq!(e.id.as_ref(), spec_error_id(&v), "{}: {}", v, e.detail);
            }
        }
        (Err(e), None) => prop_assert_eq!(&e.id, &None, "an id from an unparsable frame"),
    }
    Ok(got.is_ok())
}

/// A string the ops may carry: anything, or something path-like.
pub(crate) fn op_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => text_of("abz09/", 0..12),
        1 => any::<String>(),
        1 => prop::sample::select(PATH_PIECES).prop_map(str::to_string),
    ]
}

/// An `id`: any JSON value a client may send (floats limited to ones that
/// print and parse back exactly).
fn id_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5, -1.25, 2.0, 1e-3]).prop_map(Value::from),
        op_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text_of("abc", 0..3), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid op: its kind, required and some optional fields, maybe an id.
fn valid_op() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(OPS),
        op_string(),
        prop::option::of(op_string()),
        prop::option::of(op_string()),
        0u8..4,
        prop::option::of(id_value()),
        any::<bool>(),
    )
        .prop_map(|(kind, path, a, b, which, id, nulls)| {
            let mut m = Map::new();
            m.insert("op".into(), json!(kind));
            m.insert("path".into(), json!(path));
            let optional = |m: &mut Map<String, Value>, k: &str, v: Option<String>| match v {
                Some(v) => {
                    m.insert(k.into(), json!(v));
                }
                None if nulls => {
                    m.insert(k.into(), Value::Null);
                }
                None => {}
            };
            match kind {
                "subscribe" => optional(&mut m, "since", a),
                "set" => {
                    // A value or a base64 value (or neither: an empty value).
                    let field = if which % 2 == 0 { "value" } else { "value_b64" };
                    optional(&mut m, field, a);
                    optional(&mut m, "content_type", b);
                }
                _ => {}
            }
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            Value::Object(m)
        })
}

const OP_KEYS: &[&str] = &[
    "op",
    "path",
    "id",
    "since",
    "from",
    "to",
    "value",
    "value_b64",
    "content_type",
    "x",
    "Path",
    "",
];

/// Values around the op grammar: valid ops with one thing changed (extra
/// field, unknown op, wrong type, missing path) and arbitrary JSON trees.
fn op_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        2 => op_string().prop_map(Value::from),
        1 => prop::sample::select(OPS).prop_map(Value::from),
        1 => id_value(),
    ];
    let tree = leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(OP_KEYS), inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        2 => (valid_op(), prop::sample::select(OP_KEYS), tree.clone()).prop_map(|(mut v, k, x)| {
            v[k] = x;
            v
        }),
        1 => (valid_op(), text_of("setgdlAETS ", 0..12), prop::option::of(id_value())).prop_map(|(mut v, op, id)| {
            v["op"] = json!(op);
            if let Some(id) = id {
                v["id"] = id;
            }
            v
        }),
        1 => valid_op().prop_map(|mut v| {
            v.as_object_mut().expect("object").remove("path");
            v
        }),
        1 => tree,
    ]
}

/// A string around a field limit or far over it: lengths near 128, 256 and
/// 1024 bytes (the cursor, id / content type and path limits), or up to
/// 100 KB; sometimes with a character a header cannot carry.
pub(crate) fn oversized_string() -> impl Strategy<Value = String> {
    let len = prop_oneof![
        120usize..136,
        248usize..264,
        1016usize..1032,
        Just(4096usize),
        Just(100_000usize),
    ];
    (
        len,
        prop::sample::select(vec!['a', '/', ' ', '\t', '\u{e9}', '\n', '\0', '\u{7f}']),
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(|(len, odd, at, put_odd)| {
            let mut s = "a".repeat(len);
            if put_odd && len > 0 {
                let i = at.index(len);
                s.replace_range(i..=i, odd.encode_utf8(&mut [0; 4]));
            }
            s
        })
}

/// An `id` around its limit or over it: a long string, a deep array, a
/// wide object.
fn oversized_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        oversized_string().prop_map(Value::from),
        // 127 levels inside the op's map is past the decoders' nesting
        // limit (128 with the map), a limit checked on its own below.
        prop::sample::select(vec![100usize, 120, 126, 128, 130, 140]).prop_map(|depth| {
            let mut id = json!(1);
            for _ in 0..depth {
                id = json!([id]);
            }
            id
        }),
        (20usize..40)
            .prop_map(|n| { Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect()) }),
    ]
}

/// Valid ops with one field (id, path, since, content type, value, or the
/// op's name) around or over its limit.
fn op_near_limits() -> impl Strategy<Value = Value> {
    (
        valid_op(),
        prop::sample::select(vec!["id", "path", "since", "content_type", "value", "op"]),
        oversized_string(),
        oversized_id(),
    )
        .prop_map(|(mut v, field, text, id)| {
            match field {
                "id" => v["id"] = id,
                "since" => {
                    v["op"] = json!("subscribe");
                    let keep = ["op", "path", "id"];
                    v.as_object_mut()
                        .expect("object")
                        .retain(|k, _| keep.contains(&k.as_str()));
                    v["since"] = json!(text);
                }
                "content_type" | "value" => {
                    v["op"] = json!("set");
                    let keep = ["op", "path", "id", "content_type"];
                    v.as_object_mut()
                        .expect("object")
                        .retain(|k, _| keep.contains(&k.as_str()));
                    v[field] = json!(text);
                }
                other => v[other] = json!(text),
            }
            v
        })
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Fields around and over their limits: refused exactly when over (the
    /// reference is `spec_op_limits`), with a bounded detail and no
    /// oversized id echoed, in both formats; and the raw frames never panic.
    #[test]
    fn ops_with_oversized_fields_are_refused_exactly(v in op_near_limits()) {
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
        check_op_bytes(&frame(&v, WireFormat::Json), WireFormat::Json)?;
        check_op_bytes(&frame(&v, WireFormat::MsgPack), WireFormat::MsgPack)?;
    }
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Valid ops decode, in both formats, to exactly what was sent.
    #[test]
    fn valid_ops_decode(v in valid_op()) {
        prop_assert!(spec_op(&v));
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
    }

    /// Values near the grammar decode exactly when the grammar says; errors
    /// keep the frame's id.
    #[test]
    fn ops_agree_with_the_grammar(v in op_like()) {
        check_op_value(&v, WireFormat::Json)?;
        check_op_value(&v, WireFormat::MsgPack)?;
    }

    #[test]
    fn json_frames_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("op_json")),
        1 => valid_op().prop_flat_map(|v| mutated_bytes(vec![frame(&v, WireFormat::Json)])),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        check_op_bytes(&raw, WireFormat::Json)?;
    }

    #[test]
    fn msgpack_frames_never_panic(raw in prop_oneof![
        3 => mutated_bytes(seeds("op_msgpack")),
        1 => valid_op().prop_flat_map(|v| mutated_bytes(vec![frame(&v, WireFormat::MsgPack)])),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        check_op_bytes(&raw, WireFormat::MsgPack)?;
    }
}

/// MessagePack nesting the decoder must survive on a 2 MiB stack. JSON stops
/// at serde_json's limit of 128; MessagePack currently relies on rmp-serde's
/// limit of 1024, which does not fit in 2 MiB in a debug build (see
/// `bug_msgpack_deep_nesting_overflows_the_stack`), so CI checks 300.
const MSGPACK_SAFE_DEPTH: usize = 300;

/// MessagePack frames nested `depth` deep in several shapes, and whether
/// each must be refused whatever the depth limit (the others are valid ops
/// if the limit allows their depth).
fn deep_msgpack(depth: usize) -> Vec<(String, Vec<u8>, bool)> {
    let deep_field = |field: &str| {
        let mut v = vec![0x83, 0xa2, b'o', b'p', 0xa3, b's', b'e', b't', 0xa4];
        v.extend_from_slice(b"path");
        v.extend_from_slice(&[0xa1, b'a', 0xa0 | field.len() as u8]);
        v.extend_from_slice(field.as_bytes());
        v.extend(std::iter::repeat_n(0x91, depth));
        v.push(0x90);
        v
    };
    vec![
        (
            format!("{depth} nested arrays, cut"),
            vec![0x91; depth],
            true,
        ),
        (
            format!("{depth} nested arrays"),
            [vec![0x91; depth], vec![0x90]].concat(),
            true,
        ),
        (
            format!("{depth} nested maps"),
            [[0x81, 0xa1, b'a'].repeat(depth), vec![0x80]].concat(),
            true,
        ),
        (
            format!("{depth} nested array32 claims"),
            [0xdd, 0xff, 0xff, 0xff, 0xff].repeat(depth),
            true,
        ),
        (
            format!("op with an id {depth} deep"),
            deep_field("id"),
            false,
        ),
        (
            format!("op with an extra field {depth} deep"),
            deep_field("x"),
            true,
        ),
    ]
}

/// Tiny frames that claim huge sizes, and deep nesting: each is refused
/// quickly, within the allocation budget, on a 2 MiB stack.
#[test]
fn ops_refuse_huge_claims_and_deep_nesting() {
    let mut msgpack: Vec<(String, Vec<u8>, bool)> = [
        ("array32 of 4 G", vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
        ("map32 of 4 G", vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
        ("str32 of 4 GB", vec![0xdb, 0xff, 0xff, 0xff, 0xff]),
        ("bin32 of 4 GB", vec![0xc6, 0xff, 0xff, 0xff, 0xff]),
        ("ext32 of 4 GB", vec![0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ("array16 of 64 K", vec![0xdc, 0xff, 0xff]),
        ("map16 of 64 K, 1000 given", {
            let mut v = vec![0xde, 0xff, 0xff];
            for _ in 0..1000 {
                v.extend_from_slice(&[0xa1, b'k', 0xc0]);
            }
            v
        }),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v, true))
    .collect();
    msgpack.extend(deep_msgpack(MSGPACK_SAFE_DEPTH));
    let json: Vec<(&str, Vec<u8>)> = vec![
        ("100k [", vec![b'['; 100_000]),
        (
            "100k [ then ]",
            [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
        ),
        ("100k {\"a\":", b"{\"a\":".repeat(100_000)),
        (
            "op with a 100k deep id",
            [
                b"{\"op\":\"get\",\"path\":\"a\",\"id\":".to_vec(),
                vec![b'['; 100_000],
                vec![b']'; 100_000],
                b"}".to_vec(),
            ]
            .concat(),
        ),
        (
            "a number of 100k digits",
            [b"1".repeat(100_000), b"e999999".to_vec()].concat(),
        ),
        (
            "an unterminated 1 MB string",
            [b"\"".to_vec(), b"a".repeat(1 << 20)].concat(),
        ),
    ];
    let cases = msgpack
        .into_iter()
        .map(|(n, v, must_fail)| (n, v, must_fail, WireFormat::MsgPack))
        .chain(
            json.into_iter()
                .map(|(n, v)| (n.to_string(), v, true, WireFormat::Json)),
        );
    for (name, raw, must_fail, format) in cases {
        let (ok, id) = on_small_stack(&name, Duration::from_secs(10), move || {
            let r = decode_bounded(&raw, format);
            (r.is_ok(), r.err().and_then(|e| e.id))
        });
        if must_fail {
            assert!(!ok, "{name}: decoded");
            assert!(
                id.is_none(),
                "{name}: an id from a frame that is not a map: {id:?}"
            );
        }
    }
}

/// Deep but legal nesting inside an `id` is accepted, echoed back intact.
#[test]
fn ops_accept_moderately_nested_ids() {
    let mut id = json!(1);
    for _ in 0..100 {
        id = json!([id]);
    }
    let v = json!({"op": "get", "path": "a", "id": id});
    for format in [WireFormat::Json, WireFormat::MsgPack] {
        let raw = frame(&v, format);
        let op = on_small_stack("nested id", Duration::from_secs(10), move || {
            decode_bounded(&raw, format).map(|op| op_parts(&op).id.cloned())
        });
        assert_eq!(op.expect("decodes"), Some(v["id"].clone()));
    }
}

// ---------------------------------------------------------------------------
// Fixed bugs (inputs in the corpus as `bug-*`): each test asserts the right
// behaviour, so the bug cannot come back.
// ---------------------------------------------------------------------------

/// rmp-serde's default depth limit (1024) is too deep for a 2 MiB thread in a
/// debug build: ~1000 bytes of `0x91` abort the process. The fix is a lower
/// limit (e.g. 128, like serde_json) on the MessagePack deserializer.
#[test]
fn bug_msgpack_deep_nesting_overflows_the_stack() {
    if in_child() {
        let mut frames = vec![(
            "corpus".to_string(),
            corpus_file("op_msgpack", "bug-op_msgpack-deep-nesting"),
        )];
        for depth in [1000, 100_000] {
            frames.extend(deep_msgpack(depth).into_iter().map(|(n, v, _)| (n, v)));
        }
        for (name, raw) in frames {
            // Refused (a sane depth limit) or decoded (a depth the stack
            // holds), but never a crash.
            on_small_stack(&name, Duration::from_secs(10), move || {
                decode_bounded(&raw, WireFormat::MsgPack).is_ok()
            });
        }
        return;
    }
    assert!(
        passes_in_child(
            module_path!(),
            "bug_msgpack_deep_nesting_overflows_the_stack"
        ),
        "decoding deeply nested MessagePack on a 2 MiB stack crashed"
    );
}

/// A MessagePack frame is one op, but bytes after the op are ignored (the
/// JSON decoder refuses trailing data). rmp-serde's `from_slice` does not
/// check that the input was consumed.
#[test]
fn bug_msgpack_trailing_bytes_are_accepted() {
    let raw = corpus_file("op_msgpack", "bug-op_msgpack-trailing-bytes");
    assert!(decode_op(&raw, WireFormat::MsgPack).is_err());
    assert!(check_op_bytes(&raw, WireFormat::MsgPack).is_ok());
}

/// Ops are maps, but serde's internally tagged enums also take the fields as
/// a sequence in declaration order, so `["get", "a"]` (JSON or MessagePack)
/// is a `get` of `a`. Not a crash, but an undocumented input surface that
/// depends on field order.
#[test]
fn bug_ops_in_array_form_are_accepted() {
    for (target, format) in [
        ("op_json", WireFormat::Json),
        ("op_msgpack", WireFormat::MsgPack),
    ] {
        let raw = corpus_file(target, &format!("bug-{target}-array-form"));
        assert!(decode_op(&raw, format).is_err(), "{target}");
        assert!(check_op_bytes(&raw, format).is_ok(), "{target}");
    }
    check_op_value(&json!(["set", "a", "v", null, null, 7]), WireFormat::Json)
        .expect("a set op as an array is refused");
}
