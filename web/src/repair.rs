//! `POST /repair/{prefix}`: compares this node's merkle trees under a
//! prefix with the other owners' now, and exchanges what either side lacks
//! (`spread repair`). Answers once every session has ended, with what each
//! did.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::encode::to_json;
use crate::error::ApiError;
use crate::request::path_after;
use crate::AppState;

#[derive(Serialize)]
struct SessionJson {
    peer: String,
    partitions: usize,
    walked: usize,
    questions: usize,
    received: usize,
    sent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

#[derive(Serialize)]
struct RepairJson {
    prefix: String,
    sessions: Vec<SessionJson>,
}

/// `POST /repair/{prefix}` (needs write access to the prefix: a repair
/// writes what the peers hold).
pub async fn repair(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    crate::request::require_post(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/repair")?;
    identity.require_write(&prefix)?;
    let reports = state.node.repair(&prefix).await?;
    let body = RepairJson {
        prefix: prefix.as_str().to_string(),
        sessions: reports
            .into_iter()
            .map(|r| SessionJson {
                peer: r.peer,
                partitions: r.partitions,
                walked: r.walked,
                questions: r.questions,
                received: r.received,
                sent: r.sent,
                failed: r.failed,
            })
            .collect(),
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&body)))
}
