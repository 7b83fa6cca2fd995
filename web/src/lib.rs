//! Spread's HTTP surface on actix-web: `/raw` reads and writes, `/list`,
//! `/history`, Server-Sent Events at `/sse`, WebSocket sessions at `/wss`,
//! peer links at `/peer` (and `dial`, their client side), `/cluster`,
//! `/healthz` and Prometheus `/metrics`. Every error is a JSON body
//! `{"error", "detail"}` with the right status (see [`error::ApiError`]).

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod dial;
pub mod digest;
pub mod encode;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod ops;
pub mod peer;
pub mod raw;
pub mod repair;
pub mod request;
pub mod rollback;
pub mod socket;
pub mod sse;
pub mod tls;
pub mod transfer;
pub mod upgraded;
pub mod ws;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpRequest, HttpResponse, HttpServer};
use spread_actors::config::defaults;
use spread_actors::Node;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Settings of the HTTP surface.
#[derive(Clone)]
pub struct WebConfig {
    /// Token checking (off by default: the node is open).
    pub auth: auth::Auth,
    /// Origins allowed to call the API from a browser (`*` for any); none by default.
    pub cors_origins: Vec<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on the main listener.
    pub tls: Option<rustls::ServerConfig>,
    /// Largest write body accepted.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame accepted from a client.
    pub ws_max_frame_bytes: usize,
    /// `set` / `delete` ops one WebSocket session may have in the engine at
    /// once; further ones are answered `too_many_requests`.
    pub ws_max_writes_in_flight: usize,
    /// HTTP worker threads.
    pub workers: usize,
    /// Open SSE and WebSocket streams the node serves at once.
    pub max_streams: usize,
    /// Kernel send buffer of a stream's socket (0: the kernel's
    /// autotuning); see [`socket`].
    pub stream_send_buffer_bytes: usize,
    /// Open connections the node serves at once; requests on connections
    /// beyond it are answered `503 too_many_connections` and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's head, and then its body.
    pub request_timeout: Duration,
    /// How long a stop waits for open requests.
    pub shutdown_timeout: Duration,
    /// Stop on SIGINT / SIGTERM by itself (off when the caller handles
    /// them, e.g. to leave the cluster first).
    pub handle_signals: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            auth: auth::Auth::off(),
            cors_origins: Vec::new(),
            tls: None,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            ws_max_frame_bytes: defaults::WS_MAX_FRAME_BYTES,
            ws_max_writes_in_flight: defaults::WS_MAX_WRITES_IN_FLIGHT,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_streams: defaults::MAX_STREAMS,
            stream_send_buffer_bytes: defaults::STREAM_SEND_BUFFER_BYTES,
            max_connections: defaults::MAX_CONNECTIONS,
            request_timeout: Duration::from_millis(defaults::REQUEST_TIMEOUT_MS),
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECS),
            handle_signals: true,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The node served.
    pub node: Node,
    /// Settings.
    pub config: WebConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Streams (SSE, WebSocket) open now.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// Held in each connection's data while it is open; counts it.
struct ConnectionSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Marks a connection opened past `max_connections`: its requests are refused.
#[derive(Clone, Copy)]
struct OverConnectionLimit(usize);

/// Middleware: answers every request of an over-limit connection with
/// `503 too_many_connections` and closes it.
async fn limit_connections(
    req: actix_web::dev::ServiceRequest,
    next: middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(over) = req.conn_data::<OverConnectionLimit>() {
        use actix_web::ResponseError;
        let mut res = ApiError::TooManyConnections(over.0).error_response();
        res.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        return Ok(req.into_response(res));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// One open stream, counted against `max_streams` until dropped.
pub struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl AppState {
    /// Takes a stream slot, or `503 too_many_streams`.
    pub fn open_stream(&self) -> Result<StreamSlot, ApiError> {
        use std::sync::atomic::Ordering;
        let limit = self.config.max_streams;
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| ApiError::TooManyStreams(limit))?;
        Ok(StreamSlot(self.streams.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.config.auth.identify(&req)?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(&state.node)))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(req.path().to_string()))
}

/// Registers every route on an actix-web app.
///
/// Each route is a static-prefix scope whose default service takes every path
/// below it: matching a prefix is a string compare, while `{tail:.*}`
/// patterns cost a regex run per request (measured: 12% of a hot GET).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/raw").default_service(web::to(raw::dispatch)))
        .service(web::scope("/list").default_service(web::to(listing::list)))
        .service(web::scope("/history").default_service(web::to(listing::history)))
        .service(web::scope("/digest").default_service(web::to(digest::digest)))
        .service(web::scope("/repair").default_service(web::to(repair::repair)))
        .service(web::scope("/sse").default_service(web::to(sse::sse)))
        .service(web::scope("/wss").default_service(web::to(ws::dispatch)))
        .service(web::scope("/rollback").default_service(web::to(rollback::rollback)))
        .service(web::scope("/export").default_service(web::to(backup::export)))
        .service(web::resource("/import").to(backup::import))
        .service(web::resource("/peer").to(peer::peer))
        .service(web::resource("/cluster").route(web::get().to(cluster::cluster)))
        .service(web::resource("/cluster/faults").route(web::put().to(cluster::faults)))
        .service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)))
        .default_service(web::to(not_found));
}

/// CORS for browsers on the allowed origins (`*`: any), as the seed served
/// it: the request headers Spread reads are allowed, `ETag` is exposed.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"])
        .allowed_headers([
            "authorization",
            "content-type",
            "if-match",
            "if-none-match",
            "x-spread-time",
            "x-spread-etag",
            "last-event-id",
        ])
        .expose_headers(["etag"])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin().send_wildcard()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// Builds the HTTP server for `node` on an already bound listener (HTTPS
/// when `config.tls` is set), plus an optional plain-HTTP listener.
pub fn server(
    node: Node,
    config: WebConfig,
    listener: TcpListener,
    plain: Option<TcpListener>,
) -> std::io::Result<Server> {
    let workers = config.workers.max(1);
    let shutdown = config.shutdown_timeout;
    let tls = config.tls.clone();
    let max_connections = config.max_connections;
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request_timeout = config.request_timeout;
    let handle_signals = config.handle_signals;
    let state = web::Data::new(AppState {
        node,
        config,
        metrics: Arc::new(Metrics::new()),
        streams: Arc::default(),
    });
    let server = HttpServer::new(move || {
        let origins = &state.config.cors_origins;
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(limit_connections))
            .wrap(middleware::from_fn(metrics::track))
            .wrap(middleware::Condition::new(
                !origins.is_empty(),
                cors(origins),
            ))
            .configure(routes)
    })
    .workers(workers)
    .on_connect(move |connection, data| {
        socket::record(connection, data);
        let open = connections.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        data.insert(ConnectionSlot(connections.clone()));
        if open > max_connections {
            data.insert(OverConnectionLimit(max_connections));
        }
    })
    .client_request_timeout(request_timeout)
    // Small writes go out at once: a stream's events, a peer link's frames
    // and acknowledgements (with Nagle's algorithm, a small write waiting
    // for the ACK of the last one, held back by the other side's delayed
    // ACK, cost 40 ms).
    .tcp_nodelay(true)
    .shutdown_timeout(shutdown.as_secs());
    let server = if handle_signals {
        server
    } else {
        server.disable_signals()
    };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    let server = match plain {
        Some(plain) => server.listen(plain)?,
        None => server,
    }
    .run();
    Ok(server)
}
