//! Reading requests: paths from URLs, query parameters, conditional and
//! time headers, and bodies with a size limit.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use spread_actors::model::limits::{check_content_type, FieldError};
use spread_actors::model::{parse_time, MAX_PATH_BYTES};
use spread_actors::{Path, Precondition, Version};

use crate::auth::MAX_TOKEN_BYTES;
use crate::error::ApiError;

// Limits on the inputs read here, each checked before the input is used and
// answered with a `400` naming the field. Over HTTP/1.1 actix-web refuses a
// request head over 128 KiB with `431` before any of this runs; over HTTP/2
// headers can be larger, so these limits are what holds there.

/// Longest resume cursor (`?since=`, `Last-Event-ID`, a WebSocket
/// `subscribe`'s `since`). A cursor is `<incarnation>:<seq>`: at most
/// 64 + 1 + 20 bytes, with room for surrounding spaces.
pub const MAX_CURSOR_BYTES: usize = 128;
/// Longest `If-Match` header, and all `If-None-Match` headers together. A
/// version is at most 87 bytes quoted; this leaves room for a short list.
pub const MAX_CONDITION_HEADER_BYTES: usize = 1024;
/// Longest explicit-time header (`X-Spread-Time`, `X-Spread-Etag`, `Etag`):
/// a time is at most 16 digits, quoted and maybe `W/`-prefixed.
pub const MAX_TIME_HEADER_BYTES: usize = 64;
/// Longest query string, percent-encoded (it may carry a token).
pub const MAX_QUERY_BYTES: usize = MAX_TOKEN_BYTES + 4096;
/// Longest value of a query parameter that is a number or a word (`?limit`,
/// `?from`, `?to`, `?ttl`, `?w`, `?format`, `?values`, `?at`, …).
pub const MAX_QUERY_WORD_BYTES: usize = 64;

/// The most bytes the query parameter `name` may hold once decoded, for the
/// parameters Spread reads (others are ignored, bounded by
/// [`MAX_QUERY_BYTES`] as a whole).
fn query_param_limit(name: &str) -> Option<usize> {
    Some(match name {
        "since" => MAX_CURSOR_BYTES,
        // A listing's page cursor is the last path of the previous page.
        "after" => MAX_PATH_BYTES,
        crate::auth::TOKEN_QUERY => MAX_TOKEN_BYTES,
        // A rollback's `to` may be a version: 16 digits, a dot, a node id.
        "to" => 96,
        "limit" | "from" | "ttl" | "w" | "format" | "values" | "at" | "local" | "recursive"
        | "depth" => MAX_QUERY_WORD_BYTES,
        _ => return None,
    })
}

/// `400 bad_request` when a resume cursor is longer than any cursor can be.
/// (A cursor of a sane length that does not parse is not an error: the
/// stream starts with `reset`, as API.md says.)
pub fn check_cursor(field: &str, cursor: &str) -> Result<(), ApiError> {
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(ApiError::BadRequest(format!(
            "{field} is {} bytes; a cursor is at most {MAX_CURSOR_BYTES}",
            cursor.len()
        )));
    }
    Ok(())
}

/// Refuses every method but `POST` with `405 method_not_allowed`.
pub fn require_post(req: &HttpRequest) -> Result<(), ApiError> {
    match *req.method() {
        actix_web::http::Method::POST => Ok(()),
        _ => Err(ApiError::MethodNotAllowed(req.method().to_string())),
    }
}

/// Refuses every method but `GET` and `HEAD` with `405 method_not_allowed`.
pub fn require_read(req: &HttpRequest) -> Result<(), ApiError> {
    match *req.method() {
        actix_web::http::Method::GET | actix_web::http::Method::HEAD => Ok(()),
        _ => Err(ApiError::MethodNotAllowed(req.method().to_string())),
    }
}

/// The path after a route prefix (`/raw`, `/sse`, …), percent-decoded and
/// validated. The root comes back as the root path.
pub fn path_after(req: &HttpRequest, route: &str) -> Result<Path, ApiError> {
    let raw = req.uri().path().strip_prefix(route).unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadPath("path is not valid UTF-8".into()))?;
    Path::parse(&decoded).map_err(|e| ApiError::BadPath(e.to_string()))
}

/// Like [`path_after`], refusing the root (a value needs a path).
pub fn key_after(req: &HttpRequest, route: &str) -> Result<Path, ApiError> {
    let path = path_after(req, route)?;
    if path.is_root() {
        return Err(ApiError::BadPath("path is empty".into()));
    }
    Ok(path)
}

/// Query parameters, or a clear error: `400 bad_request` for a query string
/// over [`MAX_QUERY_BYTES`] or a parameter over its limit.
pub fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    let raw = req.query_string();
    if raw.len() > MAX_QUERY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "query string is {} bytes; at most {MAX_QUERY_BYTES} are allowed",
            raw.len()
        )));
    }
    let q = web::Query::<HashMap<String, String>>::from_query(raw)
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    for (name, value) in &q {
        if let Some(limit) = query_param_limit(name) {
            if value.len() > limit {
                return Err(ApiError::BadRequest(format!(
                    "?{name} is {} bytes; at most {limit} are allowed",
                    value.len()
                )));
            }
        }
    }
    Ok(q)
}

/// A numeric query parameter.
pub fn query_u64(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("?{name} must be a whole number")))
        })
        .transpose()
}

/// A time query parameter (`?at=`, `?from=`, `?to=`): microseconds since
/// the epoch or RFC 3339.
pub fn query_moment(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|v| {
            spread_actors::model::parse_moment(v)
                .map_err(|e| ApiError::BadTime(format!("?{name}: {e}")))
        })
        .transpose()
}

/// A playback asked by `from` and `to` (moments, as `?from=` and `?to=`
/// give them): `None` without `from`; `to` alone, or before `from`, is an
/// error.
pub fn playback(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Option<spread_actors::Playback>, ApiError> {
    let moment = |name: &str, v: &str| {
        spread_actors::model::parse_moment(v).map_err(|e| ApiError::BadTime(format!("{name}: {e}")))
    };
    let Some(from) = from.map(|v| moment("from", v)).transpose()? else {
        return match to {
            Some(_) => Err(ApiError::BadRequest(
                "to ends a playback: give from too".into(),
            )),
            None => Ok(None),
        };
    };
    let to = to.map(|v| moment("to", v)).transpose()?;
    if to.is_some_and(|to| to < from) {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    Ok(Some(spread_actors::Playback { from, to }))
}

/// `?w=`: the owners a write waits for (default quorum).
pub fn quorum(
    q: &HashMap<String, String>,
) -> Result<spread_actors::cluster::wire::WriteQuorum, ApiError> {
    match q.get("w") {
        Some(w) => w
            .parse()
            .map_err(|_| ApiError::BadRequest("?w must be 1, quorum or all".into())),
        None => Ok(Default::default()),
    }
}

/// A boolean query parameter (`true`/`false`/`1`/`0`).
pub fn query_bool(q: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    q.get(name)
        .map(|v| match v.as_str() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::BadRequest(format!(
                "?{name} must be true or false"
            ))),
        })
        .transpose()
}

/// `400 bad_request` when the header `name` is longer than `limit` bytes
/// (all its lines together).
fn check_header_len(headers: &HeaderMap, name: &str, limit: usize) -> Result<(), ApiError> {
    let len: usize = headers.get_all(name).map(|v| v.len()).sum();
    if len > limit {
        return Err(ApiError::BadRequest(format!(
            "header {name} is {len} bytes; at most {limit} are allowed"
        )));
    }
    Ok(())
}

/// `400 bad_request` unless the conditional headers (`If-Match`,
/// `If-None-Match`) are within [`MAX_CONDITION_HEADER_BYTES`].
pub fn check_condition_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    check_header_len(headers, "if-match", MAX_CONDITION_HEADER_BYTES)?;
    check_header_len(headers, "if-none-match", MAX_CONDITION_HEADER_BYTES)
}

/// The `Last-Event-ID` header, if any: `400 bad_request` when it is longer
/// than [`MAX_CURSOR_BYTES`]; ignored when it is not ASCII or empty.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    check_header_len(headers, "last-event-id", MAX_CURSOR_BYTES)?;
    Ok(headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

/// The content type a write stores: the `Content-Type` header, checked like
/// every stored content type (at most `MAX_CONTENT_TYPE_BYTES`, visible ASCII,
/// spaces and tabs, so that a read can send it back as a header), else
/// `400 bad_request` naming it.
pub fn content_type(headers: &HeaderMap) -> Result<Option<Arc<str>>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let refuse = |e: FieldError| ApiError::BadRequest(e.to_string());
    // A value that is not visible ASCII is refused as such; the rest of the
    // check (length included) is the engine's own.
    let ct = v
        .to_str()
        .map_err(|_| refuse(FieldError::ContentTypeChars))?;
    check_content_type(ct).map_err(refuse)?;
    Ok(Some(Arc::from(ct)))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest(format!("header {name} is not ASCII")))
        })
        .transpose()
}

/// The explicit event time: `X-Spread-Time: <µs>`, or the seed's
/// `X-Spread-Etag` / `Etag: "<µs>"`.
pub fn explicit_time(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    for name in ["x-spread-time", "x-spread-etag", "etag"] {
        if let Some(v) = header_str(headers, name)? {
            if v.len() > MAX_TIME_HEADER_BYTES {
                return Err(ApiError::BadTime(format!(
                    "{name} is {} bytes; at most {MAX_TIME_HEADER_BYTES} are allowed",
                    v.len()
                )));
            }
            return parse_time(v)
                .map(Some)
                .map_err(|e| ApiError::BadTime(format!("{name}: {e}")));
        }
    }
    Ok(None)
}

/// The write precondition from `If-Match` / `If-None-Match`.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    check_condition_headers(headers)?;
    if let Some(v) = header_str(headers, "if-match")? {
        if v.trim() == "*" {
            return Ok(Precondition::IfPresent);
        }
        // A tag that is not a version can never match.
        return Ok(match v.parse::<Version>() {
            Ok(version) => Precondition::IfMatch(version),
            Err(_) => {
                return Err(ApiError::PreconditionFailed(format!(
                    "If-Match {v} names no version of this path"
                )))
            }
        });
    }
    if let Some(v) = header_str(headers, "if-none-match")? {
        if v.trim() == "*" {
            return Ok(Precondition::IfAbsent);
        }
        return Err(ApiError::BadRequest(
            "on writes, If-None-Match supports only *".into(),
        ));
    }
    Ok(Precondition::None)
}

/// True if an `If-None-Match` header lists `etag` (or is `*`).
pub fn none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag))
}

/// Reads a write's body up to `limit` bytes. No body at all (no
/// `Content-Length`, nothing sent) is `missing_body`; `Content-Length: 0` is
/// an empty value.
pub async fn body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = match header_str(req.headers(), "content-length")? {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::BadRequest("Content-Length is not a number".into()))?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the body failed: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    if declared.is_none() && buf.is_empty() {
        return Err(ApiError::MissingBody);
    }
    Ok(buf.freeze())
}
