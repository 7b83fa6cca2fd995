//! `/sse/{path}`: Server-Sent Events — snapshot, `ready`, then updates, each
//! update with `id: <cursor>`; resume with `Last-Event-ID` or `?since=`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::{stream, StreamExt};
use spread_actors::{StreamItem, Subscribe};

use crate::encode::sse_frame;
use crate::error::ApiError;
use crate::request::{last_event_id, path_after, playback, query, require_read};
use crate::AppState;

/// Time left until a token expiry given in seconds since the epoch.
pub fn until_expiry(expires_at: u64) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A far horizon stands for "never" (an open node).
    std::time::Duration::from_secs(expires_at.saturating_sub(now).min(10 * 365 * 24 * 3600))
}

/// `GET /sse/{path}`.
pub async fn sse(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_read(&req)?;
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/sse")?;
    identity.require_read(&prefix)?;
    let q = query(&req)?;
    let since = last_event_id(req.headers())?.or_else(|| q.get("since").cloned());
    let playback = playback(
        q.get("from").map(String::as_str),
        q.get("to").map(String::as_str),
    )?;
    // (A reconnect with a cursor resumes instead of playing back.)
    if let Some(p) = playback.filter(|_| !state.node.resumable(since.as_deref())) {
        crate::ws::check_playback(&state.node, &prefix, p.from).await?;
    }
    let slot = state.open_stream()?;
    crate::socket::bound_send_buffer(&req, state.config.stream_send_buffer_bytes);
    let session = state.node.open_session();
    session
        .actor
        .send(Subscribe {
            prefix,
            since,
            playback,
        })
        .await
        .map_err(|_| ApiError::Unavailable)??;
    // A comment first, so clients and proxies see the stream open at once.
    let opening =
        stream::once(async { Ok::<_, actix_web::Error>(web::Bytes::from_static(b": spread\n\n")) });
    // `sse_frame` is `None` only for the final `Lagged`: the stream ends and
    // the client reconnects with `Last-Event-ID`. A bounded playback's
    // `end` is its last event.
    let frames = stream::unfold((session.stream, false), |(mut items, ended)| async move {
        if ended {
            return None;
        }
        let item = items.next().await?;
        let frame = sse_frame(&item)?;
        let end = matches!(item, StreamItem::End { .. });
        Some((Ok(frame), (items, end)))
    })
    // The stream ends when the token expires; the client reconnects
    // (with `Last-Event-ID`) carrying a fresh one.
    .take_until(actix_web::rt::time::sleep(until_expiry(
        identity.expires_at,
    )))
    // The slot is held as long as the stream lives.
    .map(move |frame| {
        let _held = &slot;
        frame
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(opening.chain(frames)))
}
