//! The export format, shared by the node and the command line: one event
//! per line of JSON (the shape of `/history` events, so `seq`, `time` and
//! `node` ride along; an import ignores `seq` and checks the other two
//! against `version`), or one MessagePack map per event with the value as
//! raw bytes (`format=msgpack`).

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spread_actors::model::limits::{check_author, check_content_type};
use spread_actors::{Event, NodeId, Path, Stored, Version};

use crate::encode::{to_json, EventJson};

/// The format of an export or an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// One MessagePack map per event, back to back.
    MsgPack,
}

impl Format {
    /// `json` or `msgpack`.
    pub fn parse(name: &str) -> Result<Format, String> {
        match name {
            "json" => Ok(Format::Json),
            "msgpack" => Ok(Format::MsgPack),
            other => Err(format!("unknown format '{other}' (json or msgpack)")),
        }
    }

    /// The media type of an export in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-ndjson",
            Format::MsgPack => "application/msgpack",
        }
    }
}

/// An event as a MessagePack export carries it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The path.
    pub path: String,
    /// `"<time>.<node>"`.
    pub version: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The value; none for a delete.
    #[serde(default)]
    pub value: Option<Bytes>,
    /// When it expires (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// An event as a JSON export line carries it (fields of API.md's events).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    path: String,
    version: String,
    time: Option<u64>,
    node: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    seq: Option<u64>,
    author: Option<String>,
    deleted: Option<bool>,
    content_type: Option<String>,
    value: Option<String>,
    value_b64: Option<String>,
    expires_at: Option<u64>,
}

/// One event of an export, encoded, newline included for JSON.
pub fn encode(stored: &Stored, format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut line = to_json(&EventJson::stored(stored, true));
            line.push(b'\n');
            line
        }
        Format::MsgPack => {
            let e = &stored.event;
            crate::encode::to_msgpack(&Record {
                path: e.path.as_str().to_string(),
                version: e.version.to_string(),
                author: e.author.as_deref().map(str::to_string),
                content_type: e.content_type.as_deref().map(str::to_string),
                value: e.value.clone(),
                expires_at: e.expires_at,
            })
        }
    }
}

/// The event of one JSON line; the error says what is wrong with it.
pub fn parse_line(line: &[u8]) -> Result<Event, String> {
    let l: Line = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let version: Version = l.version.parse().map_err(|e| format!("version: {e}"))?;
    if l.time.is_some_and(|t| t != version.time)
        || l.node
            .as_deref()
            .is_some_and(|n| n != version.node.as_str())
    {
        return Err(format!("time and node disagree with version {version}"));
    }
    let value = match (l.value, l.value_b64) {
        (Some(_), Some(_)) => return Err("both value and value_b64".into()),
        (Some(text), None) => Some(Bytes::from(text)),
        (None, Some(b64)) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("value_b64: {e}"))?,
        )),
        (None, None) => None,
    };
    match (l.deleted, value.is_some()) {
        (Some(true), true) => return Err("a deleted event has no value".into()),
        (Some(false), false) => return Err("no value (and not deleted)".into()),
        _ => {}
    }
    event(
        &l.path,
        version,
        (value, l.content_type, l.expires_at, l.author),
    )
}

/// The event of one MessagePack record.
pub fn from_record(r: Record) -> Result<Event, String> {
    let version: Version = r.version.parse().map_err(|e| format!("version: {e}"))?;
    event(
        &r.path,
        version,
        (r.value, r.content_type, r.expires_at, r.author),
    )
}

/// A value, its content type, its expiry and its author.
type Fields = (Option<Bytes>, Option<String>, Option<u64>, Option<String>);

fn event(path: &str, version: Version, fields: Fields) -> Result<Event, String> {
    let (value, content_type, expires_at, author) = fields;
    let path = Path::parse_key(path).map_err(|e| format!("path: {e}"))?;
    if path.is_root() {
        return Err("path: the root is not a path".into());
    }
    if let Some(ct) = &content_type {
        check_content_type(ct).map_err(|e| e.to_string())?;
    }
    if let Some(a) = &author {
        check_author(a).map_err(|e| e.to_string())?;
    }
    Ok(Event {
        path,
        version: Version::new(
            version.time,
            NodeId::new(version.node.as_str()).map_err(|e| e.to_string())?,
        ),
        value,
        content_type: content_type.map(Into::into),
        expires_at,
        author: author.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: Option<&[u8]>) -> Stored {
        Stored {
            event: Event {
                path: Path::parse_key("a/b").unwrap(),
                version: "17.n1".parse().unwrap(),
                value: value.map(Bytes::copy_from_slice),
                content_type: Some("text/plain".into()),
                expires_at: Some(99),
                author: Some("ann".into()),
            },
            digest: [0; 16],
            seq: Some(3),
            late: false,
        }
    }

    #[test]
    fn events_round_trip_in_both_formats() {
        for value in [
            Some(&b"text"[..]),
            Some(&[0xff, 0x00][..]),
            Some(&b""[..]),
            None,
        ] {
            let s = stored(value);
            let line = encode(&s, Format::Json);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse_line(&line[..line.len() - 1]).unwrap(), s.event);
            let record: Record = rmp_serde::from_slice(&encode(&s, Format::MsgPack)).unwrap();
            assert_eq!(from_record(record).unwrap(), s.event);
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            (
                r#"{"path":"a","version":"1.n","value":"x","extra":1}"#,
                "unknown field",
            ),
            (r#"{"path":"a","version":"x","value":"x"}"#, "version"),
            (r#"{"path":"a//b","version":"1.n","value":"x"}"#, "path"),
            (r#"{"path":"","version":"1.n","value":"x"}"#, "path"),
            (
                r#"{"path":"a","version":"1.n","time":2,"value":"x"}"#,
                "disagree",
            ),
            (
                r#"{"path":"a","version":"1.n","deleted":true,"value":"x"}"#,
                "deleted",
            ),
            (
                r#"{"path":"a","version":"1.n","deleted":false}"#,
                "no value",
            ),
            (
                r#"{"path":"a","version":"1.n","value_b64":"%%"}"#,
                "value_b64",
            ),
            (
                r#"{"path":"a","version":"1.n","value":"x","content_type":"a\u0001"}"#,
                "content type",
            ),
            ("not json", "expected"),
        ];
        for (line, want) in cases {
            let err = parse_line(line.as_bytes()).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
