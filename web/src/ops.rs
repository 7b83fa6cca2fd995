//! The ops a WebSocket client sends, and their decoding from JSON text or
//! MessagePack binary frames. Pure functions: no I/O, no panics on any input
//! (fuzzed in `tests/fuzz.rs`).

use serde::Deserialize;

use crate::encode::WireFormat;

/// An op a client sends (API.md, Streams).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Stream a prefix (resuming after `since`).
    Subscribe {
        path: String,
        since: Option<String>,
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
    serde_json::from_value::<Op>(value).map_err(|e| OpError {
        id,
        detail: format!("unknown or malformed op: {e}"),
    })
}
