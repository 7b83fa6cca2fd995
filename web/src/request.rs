//! Reading requests: paths from URLs, query parameters, conditional and
//! time headers, and bodies with a size limit.

use std::collections::HashMap;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use spread_actors::model::parse_time;
use spread_actors::{Path, Precondition, Version};

use crate::error::ApiError;

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

/// Query parameters, or a clear error.
pub fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))
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
            return parse_time(v)
                .map(Some)
                .map_err(|e| ApiError::BadTime(format!("{name}: {e}")));
        }
    }
    Ok(None)
}

/// The write precondition from `If-Match` / `If-None-Match`.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
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
