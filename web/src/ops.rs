//! The ops a WebSocket client sends, and their decoding from JSON text or
//! MessagePack binary frames. Pure functions: no I/O, no panics on any input
//! (fuzzed in `tests/fuzz/`).
//!
//! Decoding also bounds the fields no later parser bounds: the `id` (echoed
//! in every reply: at most [`MAX_OP_ID_BYTES`] as JSON), a `subscribe`'s
//! `since` ([`MAX_CURSOR_BYTES`]) and a `set`'s `content_type` (at most
//! `MAX_CONTENT_TYPE_BYTES`, and characters a header can carry). The `path`
//! is bounded where it is parsed (`bad_path` past 1024 bytes), a value by
//! the frame size.

use serde::Deserialize;
use spread_actors::model::limits::check_content_type;

use crate::encode::WireFormat;
use crate::error::bounded_detail;
use crate::request::MAX_CURSOR_BYTES;

/// Longest `id` an op may carry, as JSON text (MessagePack ids are measured
/// as their JSON form). Every reply echoes it, so it is bounded like any
/// field; the bound also bounds its nesting (at most 128 levels).
pub const MAX_OP_ID_BYTES: usize = 256;

/// An op a client sends (API.md, Streams).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Stream a prefix (resuming after `since`, or playing history back
    /// from `from`, up to `to`).
    Subscribe {
        path: String,
        since: Option<String>,
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Stop streaming a prefix.
    Unsubscribe {
        path: String,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Read one value.
    Get {
        path: String,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Write one value (`value` as text or `value_b64`).
    Set {
        path: String,
        value: Option<String>,
        value_b64: Option<String>,
        content_type: Option<String>,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Delete one value.
    Delete {
        path: String,
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

impl Op {
    /// Checks the fields of a decoded op against their limits; the detail
    /// names the field.
    fn check_limits(&self) -> Result<(), String> {
        match self {
            Op::Subscribe {
                since: Some(since), ..
            } if since.len() > MAX_CURSOR_BYTES => Err(format!(
                "since is {} bytes; a cursor is at most {MAX_CURSOR_BYTES}",
                since.len()
            )),
            Op::Set {
                content_type: Some(ct),
                ..
            } => check_content_type(ct).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    /// The request id a reply must carry, if the client gave one.
    pub fn id(&self) -> Option<&serde_json::Value> {
        match self {
            Op::Subscribe { id, .. }
            | Op::Unsubscribe { id, .. }
            | Op::Get { id, .. }
            | Op::Set { id, .. }
            | Op::Delete { id, .. } => id.as_ref(),
        }
    }
}

/// Why a frame is not an op: the detail for the client, and the frame's `id`
/// when it had one (so the error reply can name it).
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    /// The `id` field of the frame, if it parsed that far.
    pub id: Option<serde_json::Value>,
    /// What is wrong.
    pub detail: String,
}

/// Deepest nesting a MessagePack frame may have (serde_json's own limit):
/// rmp-serde's default of 1024 can overflow a thread's stack.
const MAX_MSGPACK_DEPTH: usize = 128;

/// Decodes one client frame: exactly one op, given as a map.
pub fn decode_op(raw: &[u8], format: WireFormat) -> Result<Op, OpError> {
    let invalid = |detail: String| OpError { id: None, detail };
    let value: serde_json::Value = match format {
        WireFormat::Json => serde_json::from_slice(raw)
            .map_err(|e| invalid(format!("frame is not valid JSON: {e}")))?,
        WireFormat::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(raw));
            de.set_max_depth(MAX_MSGPACK_DEPTH);
            let value = serde::Deserialize::deserialize(&mut de)
                .map_err(|e| invalid(format!("frame is not valid MessagePack: {e}")))?;
            if de.position() != raw.len() as u64 {
                return Err(invalid("frame has bytes after its op".into()));
            }
            value
        }
    };
    if !value.is_object() {
        return Err(invalid("an op is a map with an \"op\" field".into()));
    }
    let id = value.get("id").cloned();
    if id.as_ref().is_some_and(|id| !id_fits(id)) {
        return Err(invalid(format!(
            "id is over {MAX_OP_ID_BYTES} bytes as JSON; send a shorter one"
        )));
    }
    let op = match serde_json::from_value::<Op>(value) {
        Ok(op) => op,
        Err(e) => {
            return Err(OpError {
                id,
                // serde quotes unknown op and field names: bounded.
                detail: bounded_detail(&format!("unknown or malformed op: {e}")).into_owned(),
            });
        }
    };
    match op.check_limits() {
        Ok(()) => Ok(op),
        Err(detail) => Err(OpError { id, detail }),
    }
}

/// True when `id` is at most [`MAX_OP_ID_BYTES`] as JSON text; stops
/// writing as soon as it is over, so a huge id costs no more than the limit.
fn id_fits(id: &serde_json::Value) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(MAX_OP_ID_BYTES), id).is_ok()
}
