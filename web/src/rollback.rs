//! `POST /rollback/{path}?to=<version or time>`: writes, as new events, the
//! values paths had then (`?recursive=true`: every path under it). History
//! is never rewritten; subscribers see ordinary updates.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use spread_actors::model::AsOf;
use spread_actors::Write;

use crate::encode::{to_json, ReportJson};
use crate::error::ApiError;
use crate::request::{path_after, query, query_bool, quorum};
use crate::AppState;

#[derive(Serialize)]
struct FailedJson {
    path: String,
    error: &'static str,
    detail: String,
}

#[derive(Serialize)]
struct TreeJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    reports: Vec<ReportJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<FailedJson>,
    unchanged: usize,
}

/// `POST /rollback/{path}` (needs read and write access to the path).
pub async fn rollback(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    crate::request::require_post(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let path = path_after(&req, "/rollback")?;
    identity.require_read(&path)?;
    identity.require_write(&path)?;
    let q = query(&req)?;
    let to = q
        .get("to")
        .ok_or_else(|| ApiError::BadRequest("?to=<version or time> is required".into()))?;
    let to = AsOf::parse(to).map_err(|e| ApiError::BadTime(format!("?to: {e}")))?;
    let base = Write {
        author: identity.author,
        w: quorum(&q)?,
        ..Write::default()
    };
    if !query_bool(&q, "recursive")?.unwrap_or(false) {
        if path.is_root() {
            return Err(ApiError::BadPath(
                "the root is not a path: roll back a subtree with ?recursive=true".into(),
            ));
        }
        let report = state.node.rollback(&path, &to, base).await?;
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(to_json(&ReportJson::new(&report))));
    }
    let mut done = state.node.rollback_tree(&path, &to, base).await?;
    let failed: Vec<FailedJson> = std::mem::take(&mut done.failed)
        .into_iter()
        .map(|(path, e)| {
            let e = ApiError::from(e);
            FailedJson {
                path: path.to_string(),
                error: e.code(),
                detail: e.to_string(),
            }
        })
        .collect();
    // Some paths not rolled back: the client sees it in the status, and
    // rolling back again retries only those.
    let incomplete = !failed.is_empty();
    let body = TreeJson {
        error: incomplete.then_some("rollback_incomplete"),
        detail: incomplete.then(|| {
            format!(
                "{} of {} paths to change were not rolled back (see failed); rolling back again retries them",
                failed.len(),
                failed.len() + done.changed.len()
            )
        }),
        reports: done.changed.iter().map(ReportJson::new).collect(),
        failed,
        unchanged: done.unchanged,
    };
    let mut answer = if incomplete {
        HttpResponse::Conflict()
    } else {
        HttpResponse::Ok()
    };
    Ok(answer.content_type("application/json").body(to_json(&body)))
}
