//! `/wss/{path}`: the WebSocket session — a thin transport actor in front of
//! the engine's `Subscriber`. It forwards stream items as frames and answers
//! the client's ops (`subscribe`, `unsubscribe`, `get`, `set`, `delete`).
//!
//! Kept thin on purpose: actix-web-actors is deprecated upstream, and all
//! session logic lives in the transport-independent `Subscriber`.
//!
//! A session holds at most `WebConfig::ws_max_writes_in_flight` `set` /
//! `delete` ops in the engine at once; past that an op is answered at once
//! with `too_many_requests` (the socket stays open), so a client that
//! pipelines writes cannot make the node hold an unbounded number of values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use base64::Engine as _;
use bytes::Bytes;
use spread_actors::{
    Node, Path, SessionStream, StreamItem, Subscribe, Subscriber, Unsubscribe, Write,
};

use crate::auth::Identity;
use crate::encode::{to_json, to_msgpack, ws_frame, EventJson, ReportJson, WireFormat};
use crate::error::{bounded_detail, ApiError};
use crate::metrics::Metrics;
use crate::ops::{decode_op, Op};
use crate::request::{last_event_id, path_after, playback, query};
use crate::sse::until_expiry;
use crate::{AppState, StreamSlot};

/// How often the server pings the client at the WebSocket level.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A client silent this long (no frame, no pong) is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// Every request under `/wss`: only `GET` upgrades.
pub async fn dispatch(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    if req.method() != actix_web::http::Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method().to_string()).into());
    }
    wss(req, stream, state).await
}

/// `GET /wss/{path}`: upgrades and subscribes to `path` (`?since=` or
/// `Last-Event-ID` to resume, `?format=msgpack` for binary frames).
pub async fn wss(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let identity = state.config.auth.identify(&req)?;
    let prefix = path_after(&req, "/wss")?;
    identity.require_read(&prefix)?;
    let q = query(&req)?;
    let format = match q.get("format").map(String::as_str) {
        None | Some("json") => WireFormat::Json,
        Some("msgpack") => WireFormat::MsgPack,
        Some(other) => {
            return Err(
                ApiError::BadRequest(format!("unknown format '{other}' (json or msgpack)")).into(),
            )
        }
    };
    // Both bounded (`?since` by `query`): `400` before the upgrade.
    let header_since = last_event_id(req.headers())?;
    let since = q.get("since").cloned().or(header_since);
    let playback = playback(
        q.get("from").map(String::as_str),
        q.get("to").map(String::as_str),
    )?;
    // (A reconnect with a cursor resumes instead of playing back.)
    if let Some(p) = playback.filter(|_| !state.node.resumable(since.as_deref())) {
        check_playback(&state.node, &prefix, p.from).await?;
    }
    let slot = state.open_stream()?;
    crate::socket::bound_send_buffer(&req, state.config.stream_send_buffer_bytes);
    let session = state.node.open_session();
    let actor = WsSession {
        node: state.node.clone(),
        metrics: state.metrics.clone(),
        subscriber: session.actor,
        stream: Some(session.stream),
        format,
        first: Some(Subscribe {
            prefix,
            since,
            playback,
        }),
        identity,
        _slot: slot,
        last_heard: Instant::now(),
        writes_in_flight: 0,
        max_writes_in_flight: state.config.ws_max_writes_in_flight.max(1),
        max_value_bytes: state.config.max_body_bytes,
    };
    ws::WsResponseBuilder::new(actor, &req, stream)
        .frame_size(state.config.ws_max_frame_bytes)
        .start()
}

/// A playback reads this node's history of the prefix, which must reach
/// back to its start (else `410`); the check may read every path under the
/// prefix, on a blocking thread.
pub async fn check_playback(node: &Node, prefix: &Path, from: u64) -> Result<(), ApiError> {
    node.holds(prefix)?;
    let (node, prefix) = (node.clone(), prefix.clone());
    web::block(move || node.check_prefix_floor(&prefix, from))
        .await
        .map_err(|_| ApiError::Unavailable)??;
    Ok(())
}

/// One WebSocket connection.
pub struct WsSession {
    node: Node,
    metrics: Arc<Metrics>,
    subscriber: Addr<Subscriber>,
    stream: Option<SessionStream>,
    format: WireFormat,
    first: Option<Subscribe>,
    identity: Identity,
    _slot: StreamSlot,
    last_heard: Instant,
    /// `set` / `delete` ops handed to the engine and not answered yet.
    writes_in_flight: usize,
    /// Past this, further writes are refused with `too_many_requests`.
    max_writes_in_flight: usize,
    /// Largest value a `set` may write (`--max-body-bytes`, as over HTTP).
    max_value_bytes: usize,
}

impl WsSession {
    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, payload: Bytes) {
        match self.format {
            // Our JSON is always UTF-8.
            WireFormat::Json => ctx.text(bytestring_of(payload)),
            WireFormat::MsgPack => ctx.binary(payload),
        }
    }

    fn encode<T: serde::Serialize>(&self, value: &T) -> Bytes {
        match self.format {
            WireFormat::Json => Bytes::from(to_json(value)),
            WireFormat::MsgPack => Bytes::from(to_msgpack(value)),
        }
    }

    fn error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&serde_json::Value>,
        code: &str,
        detail: &str,
    ) {
        let detail = bounded_detail(detail);
        let body = serde_json::json!({"type": "error", "id": id, "error": code, "detail": detail});
        let payload = self.encode(&body);
        self.send(ctx, payload);
    }

    fn api_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<&serde_json::Value>,
        e: ApiError,
    ) {
        self.metrics.count_error(e.code());
        self.error(ctx, id, e.code(), &e.to_string());
    }

    /// Decodes one client frame into an op, answering `bad_request` if it is
    /// not one.
    fn handle_frame(&mut self, raw: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        match decode_op(raw, self.format) {
            Ok(op) => self.handle_op(op, ctx),
            Err(e) => {
                self.metrics.count_error("bad_request");
                self.error(ctx, e.id.as_ref(), "bad_request", &e.detail)
            }
        }
    }

    /// `403` when the session's token does not cover the op's path. A path
    /// that does not parse is left to the op, which answers `bad_path`.
    fn authorize(&self, op: &Op) -> Result<(), ApiError> {
        let (path, write) = match op {
            Op::Subscribe { path, .. } | Op::Get { path, .. } => (path, false),
            Op::Set { path, .. } | Op::Delete { path, .. } => (path, true),
            Op::Unsubscribe { .. } => return Ok(()),
        };
        match Path::parse(path) {
            Ok(p) if write => self.identity.require_write(&p),
            Ok(p) => self.identity.require_read(&p),
            Err(_) => Ok(()),
        }
    }

    fn handle_op(&mut self, op: Op, ctx: &mut ws::WebsocketContext<Self>) {
        if let Err(e) = self.authorize(&op) {
            return self.api_error(ctx, op.id(), e);
        }
        if matches!(op, Op::Set { .. } | Op::Delete { .. })
            && self.writes_in_flight >= self.max_writes_in_flight
        {
            let e = ApiError::TooManyRequests(format!(
                "this session has {} writes in flight, its limit; send more as replies come",
                self.writes_in_flight
            ));
            return self.api_error(ctx, op.id(), e);
        }
        match op {
            Op::Subscribe {
                path,
                since,
                from,
                to,
                id,
            } => {
                let playback = match playback(from.as_deref(), to.as_deref()) {
                    Ok(p) => p,
                    Err(e) => return self.api_error(ctx, id.as_ref(), e),
                };
                match Path::parse(&path) {
                    Ok(prefix) => {
                        // A playback's history is checked off this thread
                        // first (see `check_playback`).
                        let (node, subscriber) = (self.node.clone(), self.subscriber.clone());
                        let request = async move {
                            if let Some(p) = playback.filter(|_| !node.resumable(since.as_deref()))
                            {
                                check_playback(&node, &prefix, p.from).await?;
                            }
                            subscriber
                                .send(Subscribe {
                                    prefix,
                                    since,
                                    playback,
                                })
                                .await
                                .map_err(|_| ApiError::Unavailable)?
                                .map_err(ApiError::from)
                        };
                        ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
                            if let Err(e) = result {
                                act.api_error(ctx, id.as_ref(), e);
                            }
                        }));
                    }
                    Err(e) => self.api_error(ctx, id.as_ref(), ApiError::BadPath(e.to_string())),
                }
            }
            Op::Unsubscribe { path, id } => match Path::parse(&path) {
                Ok(prefix) => {
                    self.subscriber.do_send(Unsubscribe { prefix });
                    let payload = self.encode(&serde_json::json!({"type": "reply", "id": id}));
                    self.send(ctx, payload);
                }
                Err(e) => self.api_error(ctx, id.as_ref(), ApiError::BadPath(e.to_string())),
            },
            Op::Get { path, id } => {
                let result = Path::parse_key(&path)
                    .map_err(|e| ApiError::BadPath(e.to_string()))
                    .and_then(|p| {
                        self.node
                            .get_path(&p)
                            .map_err(ApiError::from)
                            .and_then(|s| s.ok_or(ApiError::NotFound(path.clone())))
                    });
                match result {
                    Ok(stored) => {
                        let mut json = EventJson::stored(&stored, true);
                        json.kind = Some("reply");
                        json.id = id.as_ref();
                        let payload = self.encode(&json);
                        self.send(ctx, payload);
                    }
                    Err(e) => self.api_error(ctx, id.as_ref(), e),
                }
            }
            Op::Set {
                path,
                value,
                value_b64,
                content_type,
                id,
            } => {
                let value = match (value, value_b64) {
                    (Some(v), None) => Ok(Bytes::from(v)),
                    (None, Some(b)) => base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map(Bytes::from)
                        .map_err(|_| ApiError::BadRequest("value_b64 is not base64".into())),
                    _ => Err(ApiError::BadRequest(
                        "set needs exactly one of value, value_b64".into(),
                    )),
                }
                .and_then(|v| {
                    // The same limit as an HTTP body, whatever the frame limit.
                    if v.len() > self.max_value_bytes {
                        Err(ApiError::TooLarge(self.max_value_bytes))
                    } else {
                        Ok(v)
                    }
                });
                match (Path::parse_key(&path), value) {
                    (Ok(path), Ok(value)) => {
                        let mut write = Write::set(path, value);
                        write.content_type = content_type.map(Arc::from);
                        self.write(write, id, ctx);
                    }
                    (Err(e), _) => {
                        self.api_error(ctx, id.as_ref(), ApiError::BadPath(e.to_string()))
                    }
                    (_, Err(e)) => self.api_error(ctx, id.as_ref(), e),
                }
            }
            Op::Delete { path, id } => match Path::parse_key(&path) {
                Ok(path) => self.write(Write::delete(path), id, ctx),
                Err(e) => self.api_error(ctx, id.as_ref(), ApiError::BadPath(e.to_string())),
            },
        }
    }

    fn write(
        &mut self,
        write: Write,
        id: Option<serde_json::Value>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let mut write = write;
        write.author = self.identity.author.clone();
        let node = self.node.clone();
        let request = async move { node.write(write).await };
        self.writes_in_flight += 1;
        ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
            act.writes_in_flight -= 1;
            act.metrics.count_write(&result);
            match result {
                Ok(report) => {
                    let mut json = ReportJson::new(&report);
                    json.kind = Some("reply");
                    json.id = id.as_ref();
                    let payload = act.encode(&json);
                    act.send(ctx, payload);
                }
                Err(e) => act.api_error(ctx, id.as_ref(), e.into()),
            }
        }));
    }
}

fn bytestring_of(payload: Bytes) -> bytestring::ByteString {
    bytestring::ByteString::try_from(payload).unwrap_or_default()
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream);
        }
        if let Some(first) = self.first.take() {
            let request = self.subscriber.send(first);
            ctx.spawn(request.into_actor(self).map(|result, act, ctx| {
                if let Ok(Err(e)) = result {
                    act.api_error(ctx, None, e.into());
                }
            }));
        }
        ctx.run_later(until_expiry(self.identity.expires_at), |_, ctx| {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Policy,
                description: Some("token expired".into()),
            }));
            ctx.stop();
        });
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }
}

impl StreamHandler<StreamItem> for WsSession {
    fn handle(&mut self, item: StreamItem, ctx: &mut Self::Context) {
        match ws_frame(&item, self.format) {
            Some(payload) => {
                self.send(ctx, payload);
                // The snapshot could not be read whole: the session ends.
                if let StreamItem::Failed { .. } = item {
                    ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Error,
                        description: Some("store failure".into()),
                    }));
                    ctx.stop();
                }
            }
            None => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some("lagging".into()),
                }));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The session ended (lagging closes above; this is the node stopping).
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Away,
            description: Some("node stopping".into()),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.handle_frame(text.as_bytes(), ctx),
            Ok(ws::Message::Binary(bin)) => self.handle_frame(&bin, ctx),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(e) => {
                log::debug!("websocket protocol error: {e}");
                let code = match e {
                    ws::ProtocolError::Overflow => {
                        self.metrics.count_error("ws_frame_too_large");
                        ws::CloseCode::Size
                    }
                    _ => ws::CloseCode::Protocol,
                };
                ctx.close(Some(ws::CloseReason {
                    code,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}
