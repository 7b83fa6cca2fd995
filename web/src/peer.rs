//! `GET /peer`: the server side of a peer link — a thin transport actor
//! between the WebSocket and the engine's `Peer` actor, which runs the
//! protocol (handshake, heartbeats, closing with a reason). The client side
//! is `dial`.
//!
//! A node without `--cluster-secret` accepts no peers: `403` before the
//! upgrade, naming why.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use spread_actors::cluster::frame::MAX_FRAME_BYTES;
use spread_actors::cluster::{
    Cluster, Direction, FromSocket, Outgoing, Peer, SendQueue, Shut, SocketClosed,
};

use crate::error::ApiError;
use crate::AppState;

/// Longest close reason a close frame carries (a control frame holds 125
/// bytes, two of them the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 120;

/// `GET /peer`: upgrades to a peer link.
pub async fn peer(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    if req.method() != actix_web::http::Method::GET {
        return Err(ApiError::MethodNotAllowed(req.method().to_string()).into());
    }
    let Some(cluster) = state.node.cluster().cloned() else {
        return Err(ApiError::Forbidden(
            "this node has no --cluster-secret: it accepts no peers".into(),
        )
        .into());
    };
    let remote = req
        .peer_addr()
        .map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
    let stream = crate::upgraded::ending_at_eof(stream);
    ws::WsResponseBuilder::new(WsPeer::new(cluster, remote), &req, stream)
        .frame_size(MAX_FRAME_BYTES)
        .start()
}

/// `reason`, cut to fit a close frame (on a character boundary).
pub fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// The socket of one inbound peer link.
pub struct WsPeer {
    cluster: Option<Arc<Cluster>>,
    remote: String,
    peer: Option<Addr<Peer>>,
}

impl WsPeer {
    fn new(cluster: Arc<Cluster>, remote: String) -> WsPeer {
        WsPeer {
            cluster: Some(cluster),
            remote,
            peer: None,
        }
    }

    fn tell<M>(&self, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        Peer: Handler<M>,
    {
        if let Some(peer) = &self.peer {
            peer.do_send(msg);
        }
    }
}

impl Actor for WsPeer {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(cluster) = self.cluster.take() {
            // Pulled as the connection takes the bytes: actix polls this
            // actor for more only while its write buffer has room.
            let (out, stream) = SendQueue::new(cluster.config.send_queue_bytes);
            ctx.add_stream(stream);
            let peer = Peer::new(cluster, Direction::Inbound, self.remote.clone(), out);
            self.peer = Some(peer.start());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.tell(SocketClosed("the socket closed".into()));
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsPeer {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Binary(bytes)) => self.tell(FromSocket(bytes)),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                let why = reason
                    .and_then(|r| r.description)
                    .map_or_else(String::new, |d| format!(": {d}"));
                self.tell(SocketClosed(format!("closed by the peer{why}")));
                ctx.close(None);
                ctx.stop();
            }
            Ok(ws::Message::Text(_)) => self.tell(Shut("a text frame on a peer link".into())),
            Ok(ws::Message::Continuation(_)) => {
                self.tell(Shut("a fragmented frame on a peer link".into()))
            }
            Err(e) => {
                self.tell(Shut(format!("bad WebSocket data: {e}")));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Outgoing> for WsPeer {
    fn handle(&mut self, msg: Outgoing, ctx: &mut Self::Context) {
        match msg {
            Outgoing::Frame(bytes) => ctx.binary(bytes),
            Outgoing::Pong(payload) => ctx.pong(&payload),
            Outgoing::Close(reason) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some(close_reason(&reason)),
                }));
                ctx.stop();
            }
        }
    }

    // The queue outlives the `Peer` only until both ends are dropped.
    fn finished(&mut self, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame_on_a_char_boundary() {
        assert_eq!(close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES && long.starts_with(&cut));
    }
}
