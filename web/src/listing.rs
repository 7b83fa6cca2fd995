//! `/list/{prefix}` and `/history/{path}`: JSON listings, read off the HTTP
//! worker (in a cluster, where the data is held); a history is streamed as
//! it is read, in bounded steps.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use spread_actors::model::Digest;
use spread_actors::node::ListPage;
use spread_actors::node::HISTORY_ANSWER_BYTES;
use spread_actors::{HistoryRange, Path, Version};

use crate::encode::{to_json, EventJson};
use crate::error::ApiError;
use crate::request::{
    key_after, path_after, query, query_bool, query_moment, query_u64, require_read,
};
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

/// `GET /list/{prefix}`. The store is read on a blocking thread: a page
/// may skip up to `limit` + [`spread_actors::node::LIST_SCAN_SLACK`] entries
/// (tombstones), and
/// the HTTP worker serves other requests meanwhile.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/list")?;
    identity.require_read(&prefix)?;
    let q = query(&req)?;
    let limit = limit(&q)?;
    let after = q.get("after").cloned();
    let at = query_moment(&q, "at")?;
    // A cluster lists the whole prefix, each partition read where it is
    // held, unless `?local=true` asks for this node's own store.
    let page = if query_bool(&q, "local")?.unwrap_or(false) {
        let node = state.node.clone();
        let listing = web::block(move || node.list_at(&prefix, after.as_deref(), limit, at))
            .await
            .map_err(|_| ApiError::Unavailable)??;
        ListPage::from(&listing)
    } else {
        state.node.read_list(&prefix, after, limit, at).await?
    };
    let entries: Vec<Entry<'_>> = page
        .entries
        .iter()
        .map(|e| Entry {
            path: e.path.as_str(),
            version: e.version.to_string(),
            size: e.size,
            content_type: e.content_type.as_deref(),
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&Listing {
            entries,
            next: page.next.as_deref(),
        })))
}

/// Events read per step of a history at first; later steps read about
/// [`HISTORY_STEP_BYTES`] of values.
const HISTORY_FIRST_STEP: usize = 8;
/// Most events read per step of a history.
const HISTORY_MAX_STEP: usize = 256;
/// Value bytes a step of a history aims to read: with values, a history is
/// sent as it is read, a step at a time, so a request holds about this much
/// (or one value, when a value is larger) instead of every value at once.
const HISTORY_STEP_BYTES: usize = 1 << 20;

/// Where a history being sent stands.
struct HistoryCursor {
    node: spread_actors::Node,
    /// Read this node's own store (`?local=true`), not the owners'.
    local: bool,
    path: Path,
    range: HistoryRange,
    with_values: bool,
    /// Events sent so far.
    sent: usize,
    /// The last event sent: the next step reads the events after it.
    last: Option<(Version, Digest)>,
    /// Events to read in the next step.
    step: usize,
    /// True once the last step was read.
    done: bool,
    /// The opening `{"events":[` went out.
    opened: bool,
}

impl HistoryCursor {
    /// Reads the next step on a blocking thread and encodes the events it
    /// has not sent yet; `None` once the history is out.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, ApiError>, HistoryCursor)> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            out.extend_from_slice(b"{\"events\":[");
        }
        let left = self.range.limit - self.sent;
        // Each step goes on after the last event sent.
        let range = HistoryRange {
            limit: self.step.min(left),
            ..self.range
        };
        let after = self.last.clone();
        let (node, path) = (self.node.clone(), self.path.clone());
        let read = if self.local {
            web::block(move || {
                node.history_bounded(&path, range, HISTORY_ANSWER_BYTES, after.as_ref())
            })
            .await
        } else {
            Ok(node.read_history(&path, range, after).await)
        };
        let (events, cut) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Some((Err(e.into()), self.finished())),
            Err(_) => return Some((Err(ApiError::Unavailable), self.finished())),
        };
        // A step cut at its byte bound is not the end.
        let full = events.len() == range.limit || cut;
        let mut value_bytes = 0;
        for stored in &events {
            if self.sent > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&to_json(&EventJson::stored(stored, self.with_values)));
            value_bytes += stored.event.value.as_ref().map_or(0, |v| v.len());
            self.sent += 1;
            self.last = Some((stored.event.version.clone(), stored.digest));
        }
        if !full || self.sent >= self.range.limit || events.is_empty() {
            self.done = true;
        } else if self.with_values {
            let per_event = (value_bytes / events.len()).max(1);
            self.step = (HISTORY_STEP_BYTES / per_event).clamp(1, HISTORY_MAX_STEP);
        } else {
            self.step = HISTORY_MAX_STEP;
        }
        if self.done {
            out.extend_from_slice(b"]}");
        }
        Some((Ok(Bytes::from(out)), self))
    }

    fn finished(mut self) -> HistoryCursor {
        self.done = true;
        self
    }
}

/// `GET /history/{path}`: sent as it is read, a step at a time, at the pace
/// the client reads it. A store failure after the first step cuts the body
/// short (the JSON is then incomplete: the status was already sent).
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
        from: query_moment(&q, "from")?.unwrap_or(0),
        to: query_moment(&q, "to")?.unwrap_or(u64::MAX),
        limit: limit(&q)?,
    };
    if range.from > range.to {
        return Err(ApiError::BadRequest("?from is after ?to".into()));
    }
    let with_values = query_bool(&q, "values")?.unwrap_or(true);
    let cursor = HistoryCursor {
        node: state.node.clone(),
        local: query_bool(&q, "local")?.unwrap_or(false),
        path,
        range,
        with_values,
        sent: 0,
        last: None,
        step: if with_values {
            HISTORY_FIRST_STEP
        } else {
            HISTORY_MAX_STEP
        },
        done: false,
        opened: false,
    };
    // The first step is read before answering, so that its failure is an
    // error status rather than a cut body.
    let (first, cursor) = cursor.next_chunk().await.expect("a first step");
    let first = first?;
    let rest = futures_util::stream::unfold(cursor, HistoryCursor::next_chunk);
    let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}
