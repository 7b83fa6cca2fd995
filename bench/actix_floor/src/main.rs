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

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use clap::Parser;
use tokio::sync::oneshot;

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
}

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

/// A write on its way: the update to deliver and whom to answer.
#[derive(Message)]
#[rtype(result = "()")]
struct Write {
    text: Arc<str>,
    answer: oneshot::Sender<usize>,
}

/// One hand-off on the write path: passes the write on to the next stage,
/// or, the last, delivers it and answers.
struct Stage {
    next: Option<Addr<Stage>>,
    sessions: Arc<Sessions>,
}

impl Actor for Stage {
    type Context = Context<Self>;
}

impl Handler<Write> for Stage {
    type Result = ();

    fn handle(&mut self, msg: Write, _: &mut Self::Context) {
        match &self.next {
            Some(next) => next.do_send(msg),
            None => {
                let _ = msg.answer.send(self.sessions.deliver(&msg.text));
            }
        }
    }
}

/// What the handlers share.
struct State {
    sessions: Arc<Sessions>,
    first: Option<Addr<Stage>>,
}

async fn put(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let Ok(value) = std::str::from_utf8(&body) else {
        return HttpResponse::BadRequest().body("the value must be UTF-8");
    };
    let text: Arc<str> = format!(r#"{{"type":"update","value":"{value}"}}"#).into();
    let reached = match &state.first {
        None => state.sessions.deliver(&text),
        Some(first) => {
            let (answer, answered) = oneshot::channel();
            first.do_send(Write { text, answer });
            match answered.await {
                Ok(n) => n,
                Err(_) => return HttpResponse::ServiceUnavailable().finish(),
            }
        }
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(r#"{{"subscribers":{reached}}}"#))
}

async fn wss(
    state: web::Data<State>,
    req: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let session = Session {
        sessions: state.sessions.clone(),
    };
    ws::start(session, &req, stream)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let system = actix::System::new();
    system.block_on(async move {
        let sessions = Arc::new(Sessions::default());
        // The stages, last first, each on its own arbiter (kept alive for
        // the life of the process).
        let mut first = None;
        for _ in 0..args.hops {
            let arbiter = Box::leak(Box::new(Arbiter::new()));
            let (next, sessions) = (first.take(), sessions.clone());
            first = Some(Stage::start_in_arbiter(&arbiter.handle(), move |_| Stage {
                next,
                sessions,
            }));
        }
        let state = web::Data::new(State { sessions, first });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/raw/{path:.*}", web::put().to(put))
                .route("/wss/{prefix:.*}", web::get().to(wss))
        })
        .workers(args.workers)
        .bind(&args.listen)?;
        for addr in server.addrs() {
            println!("listening on http://{addr}");
        }
        server.run().await
    })
}
