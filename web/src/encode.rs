//! JSON and MessagePack shapes of events, stream items and write reports
//! (API.md, "Events" and "Write report").

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use spread_actors::{Change, Event, Stored, StreamItem, WriteReport, WriteStatus};

/// An event as clients see it. `kind` and `cursor` are set on stream frames.
#[derive(Serialize)]
pub struct EventJson<'a> {
    /// Frame type on WebSocket (`snapshot`, `update`, `reply`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Request id a WebSocket reply answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    /// Resume cursor (stream frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The path.
    pub path: &'a str,
    /// `"<time>.<node>"`.
    pub version: String,
    /// Version time, µs.
    pub time: u64,
    /// Origin node.
    pub node: &'a str,
    /// Node-local change number (`null` for an event kept only in history).
    pub seq: Option<u64>,
    /// Who wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<&'a str>,
    /// Tombstone?
    pub deleted: bool,
    /// Media type.
    pub content_type: Option<&'a str>,
    /// The value, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    /// The value in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// Expiry time, µs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl<'a> EventJson<'a> {
    /// The JSON shape of `event`.
    pub fn new(event: &'a Event, seq: Option<u64>, with_value: bool) -> EventJson<'a> {
        let (value, value_b64) = match (&event.value, with_value) {
            (Some(v), true) => match std::str::from_utf8(v) {
                Ok(text) => (Some(text), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(v)),
                ),
            },
            _ => (None, None),
        };
        EventJson {
            kind: None,
            id: None,
            cursor: None,
            path: event.path.as_str(),
            version: event.version.to_string(),
            time: event.version.time,
            node: event.version.node.as_str(),
            seq,
            author: event.author.as_deref(),
            deleted: event.value.is_none(),
            content_type: event.content_type.as_deref(),
            value,
            value_b64,
            expires_at: event.expires_at,
        }
    }

    /// The shape of a stored event.
    pub fn stored(stored: &'a Stored, with_value: bool) -> EventJson<'a> {
        EventJson::new(&stored.event, stored.seq, with_value)
    }
}

/// JSON text of a serializable value (infallible for our shapes).
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        log::error!("JSON encoding failed: {e}");
        b"{}".to_vec()
    })
}

/// MessagePack (with field names) of a serializable value.
pub fn to_msgpack<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap_or_else(|e| {
        log::error!("MessagePack encoding failed: {e}");
        Vec::new()
    })
}

/// The propagation part of a write report.
#[derive(Serialize)]
pub struct Propagation {
    /// Local subscribers notified.
    pub subscribers: usize,
    /// Nodes it was sent to.
    pub peers: usize,
    /// Owners that acked.
    pub acked: usize,
    /// Owners.
    pub of: usize,
}

/// A write report (API.md).
#[derive(Serialize)]
pub struct ReportJson<'a> {
    /// Frame type on WebSocket (`reply`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Request id a WebSocket reply answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    /// `new`, `existing` or `too_late`.
    pub status: &'static str,
    /// The path.
    pub path: &'a str,
    /// The write's version.
    pub version: String,
    /// The version it replaced.
    pub previous: Option<String>,
    /// The version that stands, when too late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Its seq in the change log, when it wrote an event (`new`, and
    /// `too_late`, which joins history).
    pub seq: Option<u64>,
    /// How it propagated.
    pub propagation: Propagation,
}

impl<'a> ReportJson<'a> {
    /// The JSON shape of a report.
    pub fn new(report: &'a WriteReport) -> ReportJson<'a> {
        ReportJson {
            kind: None,
            id: None,
            status: match report.status {
                WriteStatus::New => "new",
                WriteStatus::Existing => "existing",
                WriteStatus::TooLate => "too_late",
            },
            path: report.path.as_str(),
            version: report.version.to_string(),
            previous: report.previous.as_ref().map(ToString::to_string),
            current: report.current.as_ref().map(ToString::to_string),
            seq: report.seq,
            propagation: Propagation {
                subscribers: report.subscribers,
                peers: report.peers,
                acked: report.acked,
                of: report.of,
            },
        }
    }
}

/// Wire format of a WebSocket session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    /// Text frames of JSON.
    Json,
    /// Binary frames of MessagePack.
    MsgPack,
}

/// Frame-cache slots of [`Change::frame`], one per encoding.
const SLOT_SSE: usize = 0;
const SLOT_WS_JSON: usize = 1;
const SLOT_WS_MSGPACK: usize = 2;

/// The `{"cursor": …}` body of `ready`, `reset` and `ping` frames.
#[derive(Serialize)]
struct Marker<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
}

fn change_json<'a>(change: &'a Change, kind: &'static str, live: bool) -> EventJson<'a> {
    let mut json = EventJson::new(&change.event, Some(change.seq), true);
    json.kind = Some(kind);
    json.cursor = live.then(|| change.cursor.to_string());
    json
}

/// One Server-Sent Event for a stream item; `None` for the final `Lagged`
/// (the stream just ends and the client reconnects with `Last-Event-ID`).
pub fn sse_frame(item: &StreamItem) -> Option<Bytes> {
    let sse = |event: &str, id: Option<String>, data: &[u8]| {
        let mut out = Vec::with_capacity(data.len() + 64);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
        if let Some(id) = id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    };
    let data_of = |change: &Change, live: bool| {
        let mut json = change_json(change, "", live);
        json.kind = None;
        to_json(&json)
    };
    Some(match item {
        // Snapshot events carry no `id:`: a resume point exists only from
        // `ready` on (a cut mid-snapshot must restart the snapshot).
        StreamItem::Snapshot(change) => sse("snapshot", None, &data_of(change, false)),
        StreamItem::Update(change) => change.frame(SLOT_SSE, |c| {
            sse("update", Some(c.cursor.to_string()), &data_of(c, true))
        }),
        // No `id:`: a playback cut short starts again (as a snapshot does).
        StreamItem::Played(change) => sse("playback", None, &data_of(change, false)),
        StreamItem::End { .. } => sse(
            "end",
            None,
            &to_json(&serde_json::json!({ "cursor": null })),
        ),
        StreamItem::Ready { cursor, .. } => {
            let c = cursor.to_string();
            sse(
                "ready",
                Some(c.clone()),
                &to_json(&serde_json::json!({ "cursor": c })),
            )
        }
        StreamItem::Reset { .. } => sse(
            "reset",
            None,
            &to_json(&serde_json::json!({ "cursor": null })),
        ),
        StreamItem::Ping { cursor } => sse("ping", Some(cursor.to_string()), b"{}"),
        StreamItem::Failed { prefix, detail } => {
            sse("error", None, &to_json(&failure(prefix.as_str(), detail)))
        }
        StreamItem::Lagged => return None,
    })
}

/// The body of the last event of a stream whose snapshot could not be read:
/// `{"type": "error", "id": null, "error": "internal", "detail", "path"}`.
fn failure<'a>(path: &'a str, detail: &'a str) -> serde_json::Value {
    serde_json::json!({
        "type": "error",
        "id": null,
        "error": "internal",
        "detail": format!("the snapshot could not be read whole: {detail}"),
        "path": path,
    })
}

/// One WebSocket frame payload for a stream item (`None` for `Lagged`,
/// which closes the socket).
pub fn ws_frame(item: &StreamItem, format: WireFormat) -> Option<Bytes> {
    let encode = |value: &dyn erased::Encode| match format {
        WireFormat::Json => Bytes::from(value.json()),
        WireFormat::MsgPack => Bytes::from(value.msgpack()),
    };
    Some(match item {
        StreamItem::Snapshot(change) => encode(&change_json(change, "snapshot", false)),
        StreamItem::Update(change) => {
            let slot = match format {
                WireFormat::Json => SLOT_WS_JSON,
                WireFormat::MsgPack => SLOT_WS_MSGPACK,
            };
            change.frame(slot, |c| encode(&change_json(c, "update", true)))
        }
        StreamItem::Ready { prefix, cursor } => encode(&Marker {
            kind: "ready",
            cursor: Some(cursor.to_string()),
            path: Some(prefix.as_str()),
        }),
        StreamItem::Played(change) => encode(&change_json(change, "playback", false)),
        StreamItem::End { prefix } => encode(&Marker {
            kind: "end",
            cursor: None,
            path: Some(prefix.as_str()),
        }),
        StreamItem::Reset { prefix } => encode(&Marker {
            kind: "reset",
            cursor: None,
            path: Some(prefix.as_str()),
        }),
        StreamItem::Ping { cursor } => encode(&Marker {
            kind: "ping",
            cursor: Some(cursor.to_string()),
            path: None,
        }),
        StreamItem::Failed { prefix, detail } => encode(&failure(prefix.as_str(), detail)),
        StreamItem::Lagged => return None,
    })
}

/// Encoding behind a trait object, so one closure serves every shape.
pub mod erased {
    use serde::Serialize;

    /// A value that encodes to JSON and MessagePack.
    pub trait Encode {
        /// JSON bytes.
        fn json(&self) -> Vec<u8>;
        /// MessagePack bytes.
        fn msgpack(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Encode for T {
        fn json(&self) -> Vec<u8> {
            super::to_json(self)
        }
        fn msgpack(&self) -> Vec<u8> {
            super::to_msgpack(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spread_actors::Path;

    fn failed() -> StreamItem {
        StreamItem::Failed {
            prefix: Path::parse("rooms/1").unwrap(),
            detail: "disk on fire".into(),
        }
    }

    /// The body every client gets as the last event of a stream whose
    /// snapshot could not be read.
    fn assert_failure(json: &serde_json::Value) {
        assert_eq!(json["type"], "error");
        assert_eq!(json["id"], serde_json::Value::Null);
        assert_eq!(json["error"], "internal");
        assert_eq!(json["path"], "rooms/1");
        assert!(
            json["detail"].as_str().unwrap().contains("disk on fire"),
            "{json}"
        );
    }

    #[test]
    fn a_failed_snapshot_is_an_sse_error_event_with_data() {
        let frame = sse_frame(&failed()).expect("a frame, not the end");
        let text = std::str::from_utf8(&frame).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("an `error` event with a data line: {text:?}"));
        assert_failure(&serde_json::from_str(data).unwrap());
    }

    #[test]
    fn a_failed_snapshot_is_a_websocket_error_frame_in_both_formats() {
        let json = ws_frame(&failed(), WireFormat::Json).expect("a frame");
        assert_failure(&serde_json::from_slice(&json).unwrap());
        let msgpack = ws_frame(&failed(), WireFormat::MsgPack).expect("a frame");
        assert_failure(&rmp_serde::from_slice(&msgpack).unwrap());
    }
}
