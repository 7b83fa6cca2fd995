//! `GET /export/{prefix}` streams every event under a prefix, history
//! included (`spread export`); `POST /import` merges such a stream back by
//! the LWW rule (`spread import`). The format is `transfer`'s.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use spread_actors::Event;

use crate::encode::to_json;
use crate::error::{bounded_detail, ApiError};
use crate::request::{body, path_after, query, require_read};
use crate::transfer::{self, Format, Record};
use crate::AppState;

/// Bad records an import answer names at most.
const MAX_REPORTED: usize = 20;
/// The largest import body, beside twice the largest value (base64 and JSON
/// escapes make a value longer on the wire): `spread import` sends a file in
/// batches below it.
pub const IMPORT_BATCH_BYTES: usize = 32 << 20;

fn format_of(q: &std::collections::HashMap<String, String>) -> Result<Format, ApiError> {
    q.get("format")
        .map_or(Ok(Format::Json), |f| Format::parse(f))
        .map_err(ApiError::BadRequest)
}

/// `GET /export/{prefix}` (needs read access to the prefix): the events as
/// they are read, a chunk at a time. A store failure midway cuts the body
/// (the client sees the transfer fail, never a short export that looks
/// whole).
pub async fn export(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/export")?;
    identity.require_read(&prefix)?;
    let format = format_of(&query(&req)?)?;
    let chunks = state.node.export(&prefix)?;
    let body = stream::unfold(chunks, move |mut chunks| async move {
        let chunk = match chunks.recv().await? {
            Ok(chunk) => chunk,
            Err(e) => {
                log::error!("an export stopped: {e}");
                return Some((Err(actix_web::error::ErrorInternalServerError(e)), chunks));
            }
        };
        let mut out = Vec::new();
        for stored in &chunk {
            out.extend_from_slice(&transfer::encode(stored, format));
        }
        Some((Ok(web::Bytes::from(out)), chunks))
    });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .streaming(body))
}

#[derive(Serialize)]
struct BadRecord {
    line: usize,
    detail: String,
}

#[derive(Serialize)]
struct Refused {
    error: &'static str,
    detail: String,
    lines: Vec<BadRecord>,
}

/// The events of an import body, or every bad record (its line, or its
/// number for MessagePack, counted from 1).
fn parse(body: &[u8], format: Format) -> Result<Vec<Event>, Vec<BadRecord>> {
    let mut events = Vec::new();
    let mut bad = Vec::new();
    let mut take = |n: usize, parsed: Result<Event, String>| match parsed {
        Ok(e) => events.push(e),
        Err(detail) => bad.push(BadRecord { line: n, detail }),
    };
    match format {
        Format::Json => {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    take(i + 1, transfer::parse_line(line));
                }
            }
        }
        Format::MsgPack => {
            let mut rest = body;
            let mut n = 0;
            while !rest.is_empty() {
                n += 1;
                let mut de = rmp_serde::Deserializer::new(&mut rest);
                match Record::deserialize(&mut de) {
                    Ok(r) => take(n, transfer::from_record(r)),
                    // The stream cannot be followed past a record it
                    // cannot read.
                    Err(e) => {
                        take(n, Err(e.to_string()));
                        break;
                    }
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(events)
    } else {
        Err(bad)
    }
}

/// `POST /import` (needs write access to every path in it): checks every
/// record, then merges them all; a bad record refuses the whole body with
/// `400` naming the bad lines, and nothing is merged.
pub async fn import(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    crate::request::require_post(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let format = format_of(&query(&req)?)?;
    let limit = IMPORT_BATCH_BYTES + 2 * state.config.max_body_bytes;
    let body = body(&req, payload, limit).await?;
    let events = match parse(&body, format) {
        Ok(events) => events,
        Err(mut bad) => {
            let total = bad.len();
            bad.truncate(MAX_REPORTED);
            let named: Vec<String> = bad
                .iter()
                .map(|b| format!("line {}: {}", b.line, b.detail))
                .collect();
            let refused = Refused {
                error: "bad_request",
                detail: bounded_detail(&format!(
                    "{total} bad record(s), nothing imported: {}",
                    named.join("; ")
                ))
                .into_owned(),
                lines: bad,
            };
            return Ok(HttpResponse::BadRequest()
                .content_type("application/json")
                .body(to_json(&refused)));
        }
    };
    for e in &events {
        identity.require_write(&e.path)?;
    }
    let count = events.len();
    let report = state.node.import(events).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&serde_json::json!({
            "events": count,
            "new": report.new,
            "existing": report.existing,
            "too_late": report.too_late,
        }))))
}
