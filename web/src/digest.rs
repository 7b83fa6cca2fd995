//! `GET /digest/{prefix}`: the merkle digest of everything under a prefix,
//! history included (two nodes holding the same events under it answer the
//! same hash), and its children's to `?depth=` levels. An operator, a test
//! or a client checks that replicas agree without reading the data.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use spread_actors::PrefixDigest;

use crate::encode::to_json;
use crate::error::ApiError;
use crate::request::{path_after, query, query_bool, query_u64, require_read};
use crate::AppState;

/// The deepest `?depth=`.
pub const MAX_DEPTH: u64 = 8;

/// A prefix's digest as API.md gives it: the prefix at the top, each child
/// by its last segment.
#[derive(Serialize)]
struct DigestJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<String>,
    hash: String,
    /// Events at or below the prefix, history included.
    items: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Vec<DigestJson>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

impl DigestJson {
    fn new(d: PrefixDigest, top: bool, depth: u64) -> DigestJson {
        let segment = d.prefix.rsplit('/').next().unwrap_or_default().to_string();
        DigestJson {
            prefix: top.then(|| d.prefix.clone()),
            segment: (!top).then_some(segment),
            hash: d.fingerprint.hex(),
            items: d.fingerprint.count,
            children: (depth > 0).then(|| {
                d.children
                    .into_iter()
                    .map(|c| DigestJson::new(c, false, depth - 1))
                    .collect()
            }),
            truncated: d.truncated,
        }
    }
}

/// `GET /digest/{prefix}` (`?depth=0..8`, default 1; `?local=true` is
/// accepted: a digest is always of what this node holds).
pub async fn digest(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/digest")?;
    identity.require_read(&prefix)?;
    let q = query(&req)?;
    let depth = query_u64(&q, "depth")?.unwrap_or(1);
    query_bool(&q, "local")?;
    if depth > MAX_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "?depth must be 0 to {MAX_DEPTH}"
        )));
    }
    let node = state.node.clone();
    let digest = web::block(move || node.digest(&prefix, depth as usize))
        .await
        .map_err(|_| ApiError::Unavailable)??;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&DigestJson::new(digest, true, depth))))
}
