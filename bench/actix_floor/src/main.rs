//! The actix floor: the least a server built as Spread is built (actix-web,
//! a WebSocket session actor per subscriber, writes handed between actors
//! on their own threads) can do for one write reaching one subscriber,
//! with no store, no clock, no JSON parsing: nothing but the hand-offs.
//!
//! `PUT /raw/<path>` takes the body as the value and hands it through
//! `--hops` stage actors, each on its own arbiter (thread), as Spread hands
//! a write from the HTTP worker to its partitions' thread and then to its
//! committer; the last stage (or, with `--hops 0`, the HTTP handler itself)
//! sends every WebSocket session an update holding the value, then the
//! write is answered `200`. `GET /wss/<prefix>` is such a session: it says
//! `{"type":"ready"}` first, as Spread does, so `spread-bench-fanout
//! latency spread` measures this server exactly as it measures Spread.
//!
//! So `--hops 0` is the floor of any actix server on this machine (the
//! HTTP worker to the subscriber's worker), and each extra hop shows what
//! one thread hand-off on a write's path costs here.
//!
//! `--relay-to host:port` makes two of these a two-node floor, as Spread
//! relays a write to another node's subscriber: the last stage also sends
//! the update over one WebSocket link (awc, `TCP_NODELAY`, written by a task
//! on the main thread, as Spread's links are) to the other server's
//! `/link`, whose session hands each update through its own `--hops`
//! stages to its subscribers. The write is answered once it is sent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_service::ServiceExt as _;
use actix_tls::connect::{Connection as TcpConnection, ConnectorService};
use actix_web::http::Uri;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot};

/// Command line.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Actors on their own threads between the HTTP handler and the
    /// fan-out (Spread's single-node write path has two: the partitions'
    /// thread and the committer).
    #[arg(long, default_value_t = 2)]
    hops: usize,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Another floor server (`host:port`) to relay every write to, over
    /// one WebSocket link.
    #[arg(long)]
    relay_to: Option<String>,
}

/// The sending end of the link to the other server.
type Relay = mpsc::UnboundedSender<Arc<str>>;

/// Every open WebSocket session.
#[derive(Default)]
struct Sessions(Mutex<Vec<Addr<Session>>>);

impl Sessions {
    /// Hands `text` to every session; how many there were.
    fn deliver(&self, text: &Arc<str>) -> usize {
        let sessions = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for s in sessions.iter() {
            s.do_send(Deliver(text.clone()));
        }
        sessions.len()
    }
}

/// One update for a session to send.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(Arc<str>);

/// A subscriber's WebSocket session.
struct Session {
    sessions: Arc<Sessions>,
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.text(r#"{"type":"ready"}"#);
        self.sessions
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ctx.address());
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.sessions
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| s != &me);
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        ctx.text(&*msg.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            Ok(_) => {}
        }
    }
}

/// A write on its way: the update to deliver and whom to answer (no one
/// for a relayed write).
#[derive(Message)]
#[rtype(result = "()")]
struct Write {
    text: Arc<str>,
    answer: Option<oneshot::Sender<usize>>,
}

/// One hand-off on the write path: passes the write on to the next stage,
/// or, the last, delivers it (and relays it) and answers.
struct Stage {
    next: Option<Addr<Stage>>,
    end: End,
}

/// Where a write ends: this server's sessions, and the link if any.
#[derive(Clone)]
struct End {
    sessions: Arc<Sessions>,
    relay: Option<Relay>,
}

impl End {
    /// Delivers `write` here, relays it, answers it.
    fn finish(&self, write: Write) {
        let reached = self.sessions.deliver(&write.text);
        if let Some(relay) = &self.relay {
            let _ = relay.send(write.text);
        }
        if let Some(answer) = write.answer {
            let _ = answer.send(reached);
        }
    }

    /// Hands `write` to `first`, or finishes it here without one.
    fn start(&self, first: Option<&Addr<Stage>>, write: Write) {
        match first {
            Some(first) => first.do_send(write),
            None => self.finish(write),
        }
    }
}

impl Actor for Stage {
    type Context = Context<Self>;
}

impl Handler<Write> for Stage {
    type Result = ();

    fn handle(&mut self, msg: Write, _: &mut Self::Context) {
        match &self.next {
            Some(next) => next.do_send(msg),
            None => self.end.finish(msg),
        }
    }
}

/// What the handlers share.
struct State {
    end: End,
    first: Option<Addr<Stage>>,
}

/// `PUT /raw/<path>`: the body, as a value, to every session (through the
/// stages), then `200` with how many sessions it reached.
async fn put(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let Ok(value) = std::str::from_utf8(&body) else {
        return HttpResponse::BadRequest().body("the value must be UTF-8");
    };
    let text: Arc<str> = format!(r#"{{"type":"update","value":"{value}"}}"#).into();
    let (answer, answered) = oneshot::channel();
    let write = Write {
        text,
        answer: Some(answer),
    };
    state.end.start(state.first.as_ref(), write);
    let Ok(reached) = answered.await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(r#"{{"subscribers":{reached}}}"#))
}

/// `GET /wss/<prefix>`: a subscriber's session (every write reaches it,
/// whatever the prefix).
async fn wss(
    state: web::Data<State>,
    req: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let session = Session {
        sessions: state.end.sessions.clone(),
    };
    ws::start(session, &req, stream)
}

/// The receiving side of a link: each text frame is a write to deliver.
struct LinkIn {
    state: web::Data<State>,
}

impl Actor for LinkIn {
    type Context = ws::WebsocketContext<Self>;
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LinkIn {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) => {
                let write = Write {
                    text: Arc::from(&*text),
                    answer: None,
                };
                self.state.end.start(self.state.first.as_ref(), write);
            }
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            Ok(_) => {}
        }
    }
}

/// `GET /link`: the receiving side of another floor server's relay.
async fn link(
    state: web::Data<State>,
    req: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    ws::start(LinkIn { state }, &req, stream)
}

/// Connects to `address`'s `/link` (retrying for 30 s while it starts) and
/// spawns the task that writes what the returned sender is given.
async fn relay_to(address: &str) -> std::io::Result<Relay> {
    let tcp = awc::Connector::new().connector(ConnectorService::default().map(
        |c: TcpConnection<Uri, TcpStream>| {
            let _ = c.io_ref().set_nodelay(true);
            c
        },
    ));
    let client = awc::Client::builder()
        .connector(tcp)
        .max_http_version(awc::http::Version::HTTP_11)
        .finish();
    let url = format!("http://{address}/link");
    let deadline = Instant::now() + Duration::from_secs(30);
    let framed = loop {
        match client.ws(&url).connect().await {
            Ok((_, framed)) => break framed,
            Err(e) if Instant::now() >= deadline => {
                return Err(std::io::Error::other(format!("linking to {url}: {e}")))
            }
            Err(_) => actix_web::rt::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (mut sink, mut incoming) = framed.split();
    let (relay, mut relayed) = mpsc::unbounded_channel::<Arc<str>>();
    actix_web::rt::spawn(async move { while incoming.next().await.is_some() {} });
    actix_web::rt::spawn(async move {
        while let Some(text) = relayed.recv().await {
            let mut next = Some(text);
            while let Some(text) = next.take() {
                let frame = awc::ws::Message::Text(text.as_ref().into());
                if sink.feed(frame).await.is_err() {
                    return;
                }
                next = relayed.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    Ok(relay)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let system = actix::System::new();
    system.block_on(async move {
        let relay = match &args.relay_to {
            Some(address) => Some(relay_to(address).await?),
            None => None,
        };
        let end = End {
            sessions: Arc::new(Sessions::default()),
            relay,
        };
        // The stages, last first, each on its own arbiter (kept alive for
        // the life of the process).
        let mut first = None;
        for _ in 0..args.hops {
            let arbiter = Box::leak(Box::new(Arbiter::new()));
            let (next, end) = (first.take(), end.clone());
            first = Some(Stage::start_in_arbiter(&arbiter.handle(), move |_| Stage {
                next,
                end,
            }));
        }
        let state = web::Data::new(State { end, first });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/raw/{path:.*}", web::put().to(put))
                .route("/wss/{prefix:.*}", web::get().to(wss))
                .route("/link", web::get().to(link))
        })
        .workers(args.workers)
        .bind(&args.listen)?;
        for addr in server.addrs() {
            println!("listening on http://{addr}");
        }
        server.run().await
    })
}
