//! `/list/{prefix}` and `/history/{path}`: JSON listings.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use spread_actors::HistoryRange;

use crate::encode::{to_json, EventJson};
use crate::error::ApiError;
use crate::request::{key_after, path_after, query, query_bool, query_u64, require_read};
use crate::AppState;

/// Entries per page when `?limit=` is not given.
const DEFAULT_LIMIT: u64 = 1000;
/// Most entries per page.
const MAX_LIMIT: u64 = 10_000;

fn limit(q: &std::collections::HashMap<String, String>) -> Result<usize, ApiError> {
    let limit = query_u64(q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "?limit must be 1 to {MAX_LIMIT}"
        )));
    }
    Ok(limit as usize)
}

#[derive(Serialize)]
struct Entry<'a> {
    path: &'a str,
    version: String,
    size: usize,
    content_type: Option<&'a str>,
}

#[derive(Serialize)]
struct Listing<'a> {
    entries: Vec<Entry<'a>>,
    next: Option<&'a str>,
}

/// `GET /list/{prefix}`.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/list")?;
    identity.require_read(&prefix)?;
    let q = query(&req)?;
    let limit = limit(&q)?;
    let page = state
        .node
        .list(&prefix, q.get("after").map(String::as_str), limit)?;
    let entries: Vec<Entry<'_>> = page
        .iter()
        .map(|s| Entry {
            path: s.event.path.as_str(),
            version: s.event.version.to_string(),
            size: s.event.value.as_ref().map_or(0, |v| v.len()),
            content_type: s.event.content_type.as_deref(),
        })
        .collect();
    let next = (page.len() == limit)
        .then(|| page.last().map(|s| s.event.path.as_str()))
        .flatten();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&Listing { entries, next })))
}

#[derive(Serialize)]
struct History<'a> {
    events: Vec<EventJson<'a>>,
}

/// `GET /history/{path}`.
pub async fn history(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let path = key_after(&req, "/history")?;
    identity.require_read(&path)?;
    let q = query(&req)?;
    let range = HistoryRange {
        from: query_u64(&q, "from")?.unwrap_or(0),
        to: query_u64(&q, "to")?.unwrap_or(u64::MAX),
        limit: limit(&q)?,
    };
    if range.from > range.to {
        return Err(ApiError::BadRequest("?from is after ?to".into()));
    }
    let with_values = query_bool(&q, "values")?.unwrap_or(true);
    let events = state.node.history_of(&path, range)?;
    let events = events
        .iter()
        .map(|s| EventJson::stored(s, with_values))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&History { events })))
}
