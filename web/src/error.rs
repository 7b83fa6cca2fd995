//! `ApiError`: every error the HTTP surface answers, mapped to a status and a
//! JSON body `{"error": <code>, "detail": <text>}` in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use spread_actors::NodeError;

/// The machine-readable code of an error answer, left in the response's
/// extensions so the metrics middleware can count refusals by kind.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path is invalid.
    #[error("{0}")]
    BadPath(String),
    /// A header or parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// An explicit time is malformed or out of range.
    #[error("{0}")]
    BadTime(String),
    /// A write without a body.
    #[error("a write needs a body (send an empty one with Content-Length: 0)")]
    MissingBody,
    /// The body is over the limit.
    #[error("body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// No valid token (missing, malformed, badly signed, expired).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's rights do not cover the path.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing at that path.
    #[error("no value at '{0}'")]
    NotFound(String),
    /// `If-Match` / `If-None-Match` did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A session asked for more subscriptions than allowed.
    #[error("{0}")]
    TooManySubscriptions(String),
    /// A session has as many requests in flight as it is allowed to.
    #[error("{0}")]
    TooManyRequests(String),
    /// The node serves as many streams as it is allowed to.
    #[error("this node serves its limit of {0} streams; retry later")]
    TooManyStreams(usize),
    /// The node has as many connections open as it is allowed to.
    #[error("this node has its limit of {0} connections open; retry later")]
    TooManyConnections(usize),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    /// The route does not take this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The node is stopping.
    #[error("the node is shutting down")]
    Unavailable,
    /// Too few owners acknowledged a write in time.
    #[error("{0}")]
    NotEnoughAcks(String),
    /// The history asked for was compacted: the oldest time still known.
    #[error("{0}")]
    Compacted(String, u64),
    /// This node cannot answer the request; the detail names one that can.
    #[error("{0}")]
    Misdirected(String),
    /// The store failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadPath(_) => "bad_path",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BadTime(_) => "bad_time",
            ApiError::MissingBody => "missing_body",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed(_) => "precondition_failed",
            ApiError::TooManySubscriptions(_) => "too_many_subscriptions",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::TooManyStreams(_) => "too_many_streams",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unavailable | ApiError::NotEnoughAcks(_) => "unavailable",
            ApiError::Misdirected(_) => "misdirected",
            ApiError::Compacted(..) => "compacted",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The JSON error body.
///
/// ```
/// let body: serde_json::Value =
///     serde_json::from_str(&spread_web::error::error_body("bad_path", "empty segment")).unwrap();
/// assert_eq!(body, serde_json::json!({"error": "bad_path", "detail": "empty segment"}));
/// ```
pub fn error_body(code: &str, detail: &str) -> String {
    serde_json::json!({ "error": code, "detail": bounded_detail(detail) }).to_string()
}

/// Longest `detail` of an error answer (HTTP body or WebSocket frame). Every
/// input a detail may quote is bounded at the edge; this is the backstop, so
/// that no error can echo a client's oversized field back at it (serde's
/// messages quote unknown op names and field names, for one).
pub const MAX_ERROR_DETAIL_BYTES: usize = 2048;

/// `detail`, cut to [`MAX_ERROR_DETAIL_BYTES`] (on a character boundary,
/// ending with `…`) when longer.
///
/// ```
/// use spread_web::error::{bounded_detail, MAX_ERROR_DETAIL_BYTES};
/// assert_eq!(bounded_detail("short"), "short");
/// let long = "é".repeat(MAX_ERROR_DETAIL_BYTES);
/// assert!(bounded_detail(&long).len() <= MAX_ERROR_DETAIL_BYTES);
/// ```
pub fn bounded_detail(detail: &str) -> std::borrow::Cow<'_, str> {
    if detail.len() <= MAX_ERROR_DETAIL_BYTES {
        return detail.into();
    }
    const ELLIPSIS: &str = "…";
    let mut end = MAX_ERROR_DETAIL_BYTES - ELLIPSIS.len();
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &detail[..end]).into()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadPath(_)
            | ApiError::BadRequest(_)
            | ApiError::BadTime(_)
            | ApiError::MissingBody => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::TooManySubscriptions(_) | ApiError::TooManyRequests(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::TooManyStreams(_) | ApiError::TooManyConnections(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::NotEnoughAcks(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Compacted(..) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            // The oldest time still known, as a number too.
            ApiError::Compacted(detail, oldest) => serde_json::json!({
                "error": self.code(),
                "detail": bounded_detail(detail),
                "oldest": oldest,
            })
            .to_string(),
            _ => error_body(self.code(), &self.to_string()),
        };
        let mut res = HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(body);
        res.extensions_mut().insert(ErrorCode(self.code()));
        res
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::BadPath(p) => ApiError::BadPath(p.to_string()),
            NodeError::BadTime(t) => ApiError::BadTime(t),
            NodeError::BadCursor => ApiError::BadRequest(e.to_string()),
            NodeError::Invalid(why) => ApiError::BadRequest(why),
            NodeError::BadField(f) => ApiError::BadRequest(f.to_string()),
            NodeError::PreconditionFailed { .. } => ApiError::PreconditionFailed(e.to_string()),
            NodeError::TooManySubscriptions(_) => ApiError::TooManySubscriptions(e.to_string()),
            NodeError::ShuttingDown => ApiError::Unavailable,
            NodeError::Unavailable { .. } | NodeError::NoOwner(_) => {
                ApiError::NotEnoughAcks(e.to_string())
            }
            NodeError::NoPartition { .. } => ApiError::BadRequest(e.to_string()),
            NodeError::NotHeld { .. } => ApiError::Misdirected(e.to_string()),
            NodeError::Compacted { oldest, .. } => ApiError::Compacted(e.to_string(), oldest),
            NodeError::BadConfig(c) => ApiError::Internal(c),
            NodeError::Store(s) => {
                log::error!("store failure: {s}");
                ApiError::Internal("storage failure".into())
            }
        }
    }
}
