//! `/raw/{path}`: read, write and delete single values.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use spread_actors::model::limits::check_ttl;
use spread_actors::{Write, WriteReport, WriteStatus};

use crate::auth::Identity;
use crate::encode::{to_json, ReportJson};
use crate::error::ApiError;
use crate::request::{
    body, check_condition_headers, content_type, explicit_time, key_after, none_match_hits,
    precondition, query, query_bool, query_moment, query_u64, quorum,
};
use crate::AppState;

const ROUTE: &str = "/raw";

/// Every request under `/raw`, by method.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.config.auth.identify(&req)?;
    match *req.method() {
        Method::GET | Method::HEAD => get(req, state, identity).await,
        Method::PUT | Method::POST => put(req, payload, state, identity).await,
        Method::DELETE => delete(req, state, identity).await,
        _ => Err(ApiError::MethodNotAllowed(req.method().to_string())),
    }
}

/// `GET /raw/{path}` (and `HEAD`).
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    identity: Identity,
) -> Result<HttpResponse, ApiError> {
    let path = key_after(&req, ROUTE)?;
    identity.require_read(&path)?;
    let (mut local, mut at) = (false, None);
    if !req.query_string().is_empty() {
        let q = query(&req)?;
        at = query_moment(&q, "at")?.map(spread_actors::model::AsOf::time);
        local = query_bool(&q, "local")?.unwrap_or(false);
    }
    check_condition_headers(req.headers())?;
    // In a cluster, a path this node neither owns nor watches (or any path,
    // for a read of the past) is read at an owner, unless `?local=true`.
    let event = if local {
        match &at {
            Some(at) => state.node.get_as_of(&path, at)?,
            None => state.node.get_path(&path)?,
        }
        .map(|s| s.event)
    } else {
        state.node.read(&path, at.as_ref()).await?
    }
    .ok_or_else(|| ApiError::NotFound(path.to_string()))?;
    let etag = format!("\"{}\"", event.version);
    if none_match_hits(req.headers(), &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let content_type = event
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::ETAG, etag))
        .body(event.value.unwrap_or_default()))
}

/// `PUT` / `POST /raw/{path}`.
pub async fn put(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    identity: Identity,
) -> Result<HttpResponse, ApiError> {
    let path = key_after(&req, ROUTE)?;
    identity.require_write(&path)?;
    let mut write = write_options(&req)?;
    write.author = identity.author;
    // Checked before the body is read: a refused write costs no body.
    write.content_type = content_type(req.headers())?;
    let timeout = state.config.request_timeout;
    let value =
        actix_web::rt::time::timeout(timeout, body(&req, payload, state.config.max_body_bytes))
            .await
            .map_err(|_| ApiError::RequestTimeout(timeout.as_millis() as u64))??;
    write.path = Some(path);
    write.value = Some(value);
    apply(&state, write, false).await
}

/// `DELETE /raw/{path}`: writes a tombstone.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    identity: Identity,
) -> Result<HttpResponse, ApiError> {
    let path = key_after(&req, ROUTE)?;
    identity.require_write(&path)?;
    let mut write = write_options(&req)?;
    write.author = identity.author;
    write.path = Some(path);
    apply(&state, write, true).await
}

/// Options every write takes from headers and query.
fn write_options(req: &HttpRequest) -> Result<Write, ApiError> {
    let q = query(req)?;
    let w = quorum(&q)?;
    let ttl_secs = query_u64(&q, "ttl")?;
    if let Some(ttl) = ttl_secs {
        check_ttl(ttl).map_err(|e| ApiError::BadRequest(format!("?{e}")))?;
    }
    Ok(Write {
        time: explicit_time(req.headers())?,
        ttl_secs,
        precondition: precondition(req.headers())?,
        w,
        ..Write::default()
    })
}

async fn apply(state: &AppState, write: Write, is_delete: bool) -> Result<HttpResponse, ApiError> {
    let result = state.node.write(write).await;
    state.metrics.count_write(&result);
    let report = result?;
    Ok(report_response(&report, is_delete))
}

/// The HTTP answer for a write report: `201` created, `200` new or existing,
/// `409` too late.
pub fn report_response(report: &WriteReport, is_delete: bool) -> HttpResponse {
    let status = match report.status {
        WriteStatus::New if report.created && !is_delete => StatusCode::CREATED,
        WriteStatus::New | WriteStatus::Existing => StatusCode::OK,
        WriteStatus::TooLate => StatusCode::CONFLICT,
    };
    let json = ReportJson::new(report);
    let mut res = HttpResponse::build(status);
    res.content_type("application/json");
    if report.status != WriteStatus::TooLate && !is_delete {
        res.insert_header((header::ETAG, format!("\"{}\"", json.version)));
    }
    res.body(to_json(&json))
}
