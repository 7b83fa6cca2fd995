//! The client side of peer links: dials a node's `/peer` with awc (over
//! TLS for a peer given as `https://…`, trusting `--peer-ca`) and keeps the
//! link, redialing with jittered exponential backoff after a failure or a
//! close. The protocol is the engine's `Peer` actor, as on the server side
//! (`peer`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use actix_service::ServiceExt;
use actix_tls::connect::{Connection as TcpConnection, ConnectorService};
use actix_web::http::Uri;
use actix_web::rt::net::TcpStream;
use awc::error::WsProtocolError;
use awc::ws;
use awc::BoxedSocket;
use futures_util::future::{select, FutureExt};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use spread_actors::cluster::backoff::Backoff;
use spread_actors::cluster::frame::MAX_FRAME_BYTES;
use spread_actors::cluster::{
    Cluster, Direction, FromSocket, LinkReport, Outgoing, Peer, SendQueue, SendStream, Shut,
    SocketClosed,
};
use spread_actors::config::defaults;
use tokio::sync::oneshot;

use crate::peer::close_reason;

/// A link that stayed up this long starts the backoff over.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a closing link may take to send what it has queued.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where and how to dial a peer given as `host:port` (plain) or
/// `https://host:port` / `wss://host:port` (TLS): the WebSocket URL of its
/// `/peer`, and whether it needs TLS.
pub fn peer_url(address: &str) -> (String, bool) {
    for (scheme, tls) in [
        ("https://", true),
        ("wss://", true),
        ("http://", false),
        ("ws://", false),
    ] {
        if let Some(rest) = address.strip_prefix(scheme) {
            let rest = rest.trim_end_matches('/');
            let ws = if tls { "wss" } else { "ws" };
            return (format!("{ws}://{rest}/peer"), tls);
        }
    }
    (
        format!("ws://{}/peer", address.trim_end_matches('/')),
        false,
    )
}

/// Keeps a link from this node to the node at `address` (see [`peer_url`]),
/// forever: run it on the actix system of the node (awc's client is not
/// `Send`). A TLS peer is dialed with `tls` (its certificate checked
/// against it); without one it cannot be dialed. Each failure is logged
/// once per change of reason.
pub async fn dial_forever(
    cluster: Arc<Cluster>,
    address: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(defaults::PEER_REDIAL_MIN_MS),
        Duration::from_millis(defaults::PEER_REDIAL_MAX_MS),
    );
    let mut last_error = String::new();
    let wait_while_up = Duration::from_millis(defaults::PEER_REDIAL_MAX_MS);
    loop {
        let report = Arc::new(LinkReport::default());
        match connect(&cluster, &address, tls.clone(), report.clone()).await {
            Ok(closed) => {
                last_error.clear();
                let _ = closed.await;
            }
            Err(e) => {
                if e != last_error {
                    log::warn!("peer {address}: cannot link: {e} (retrying)");
                    last_error = e;
                }
            }
        }
        if report.up_for().is_some_and(|up| up >= STABLE_LINK) {
            backoff.reset();
        }
        // That node has a link with this one already (it dialed too, or an
        // older link of this dialer is not yet known dead): wait for it to
        // go rather than dial in vain.
        if let Some(node) = report.node() {
            while cluster.links.is_up(&node) {
                actix_web::rt::time::sleep(wait_while_up).await;
            }
        }
        actix_web::rt::time::sleep(backoff.next_delay()).await;
    }
}

/// Opens one link; the receiver fires when it is gone.
async fn connect(
    cluster: &Arc<Cluster>,
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    report: Arc<LinkReport>,
) -> Result<oneshot::Receiver<()>, String> {
    let (url, needs_tls) = peer_url(address);
    // TCP without Nagle's algorithm: a link's frames are small and answered
    // (acknowledgements), and a small write held back until the last one is
    // ACKed waits out the other side's delayed ACK (40 ms).
    let tcp = awc::Connector::new().connector(ConnectorService::default().map(
        |c: TcpConnection<Uri, TcpStream>| {
            let _ = c.io_ref().set_nodelay(true);
            c
        },
    ));
    let client = match (needs_tls, tls) {
        // Not `max_http_version` here: awc would replace the TLS connector;
        // the config's ALPN already offers HTTP/1.1 only.
        (true, Some(config)) => awc::Client::builder()
            .connector(tcp.rustls_0_23(config))
            .timeout(CONNECT_TIMEOUT)
            .finish(),
        (true, None) => return Err("a TLS peer, and no --peer-ca to check it with".into()),
        (false, _) => awc::Client::builder()
            .connector(tcp)
            .max_http_version(awc::http::Version::HTTP_11)
            .timeout(CONNECT_TIMEOUT)
            .finish(),
    };
    let (_, framed) = client
        .ws(url)
        .max_frame_size(MAX_FRAME_BYTES)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let (closed_tx, closed) = oneshot::channel();
    let (cluster, remote) = (cluster.clone(), address.to_string());
    WsDialed::create(move |ctx| {
        let (sink, stream) = framed.split();
        ctx.add_stream(stream);
        let (out, outgoing) = SendQueue::new(cluster.config.send_queue_bytes);
        let grace = out
            .closing()
            .then(|_| actix_web::rt::time::sleep(CLOSE_GRACE));
        let writing = write_queue(sink, outgoing);
        let both = select(Box::pin(writing), Box::pin(grace));
        ctx.spawn(actix::fut::wrap_future::<_, WsDialed>(both).map(|_, _, ctx| ctx.stop()));
        let peer = Peer::new(cluster, Direction::Outbound, remote, out.clone()).reporting(report);
        WsDialed {
            out,
            peer: peer.start(),
            closed: Some(closed_tx),
        }
    });
    Ok(closed)
}

type Sink = SplitSink<Framed<BoxedSocket, ws::Codec>, ws::Message>;

/// Writes what the link's queue holds, taking the next frame only when the
/// socket has room for it (so a slow peer fills the queue, not memory), and
/// flushing whenever nothing more is ready. Ends after the close, or when
/// the socket fails.
async fn write_queue(mut sink: Sink, mut outgoing: SendStream) {
    fn message(item: Outgoing) -> (ws::Message, bool) {
        match item {
            Outgoing::Frame(bytes) => (ws::Message::Binary(bytes), false),
            Outgoing::Pong(payload) => (ws::Message::Pong(payload), false),
            Outgoing::Close(reason) => (
                ws::Message::Close(Some(ws::CloseReason {
                    code: ws::CloseCode::Policy,
                    description: Some(close_reason(&reason)),
                })),
                true,
            ),
        }
    }
    while let Some(item) = outgoing.next().await {
        let mut next = Some(item);
        while let Some(item) = next.take() {
            let (msg, last) = message(item);
            if sink.feed(msg).await.is_err() {
                return;
            }
            if last {
                // Flushed first: closing the sink shuts the socket down
                // without writing what was fed (the refusal and the close
                // frame would never leave).
                if sink.flush().await.is_ok() {
                    let _ = sink.close().await;
                }
                return;
            }
            next = outgoing.next().now_or_never().flatten();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The socket of one outbound peer link (its reading half; the writing
/// half is `write_queue`).
struct WsDialed {
    out: SendQueue,
    peer: Addr<Peer>,
    closed: Option<oneshot::Sender<()>>,
}

impl Actor for WsDialed {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.peer.do_send(SocketClosed("the socket closed".into()));
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl StreamHandler<Result<ws::Frame, WsProtocolError>> for WsDialed {
    fn handle(&mut self, msg: Result<ws::Frame, WsProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Frame::Binary(bytes)) => self.peer.do_send(FromSocket(bytes)),
            Ok(ws::Frame::Ping(p)) => self.out.pong(p),
            Ok(ws::Frame::Pong(_)) => {}
            Ok(ws::Frame::Close(reason)) => {
                let why = reason
                    .and_then(|r| r.description)
                    .map_or_else(String::new, |d| format!(": {d}"));
                self.peer
                    .do_send(SocketClosed(format!("closed by the peer{why}")));
                ctx.stop();
            }
            Ok(ws::Frame::Text(_)) => self
                .peer
                .do_send(Shut("a text frame on a peer link".into())),
            Ok(ws::Frame::Continuation(_)) => self
                .peer
                .do_send(Shut("a fragmented frame on a peer link".into())),
            Err(e) => {
                self.peer.do_send(Shut(format!("bad WebSocket data: {e}")));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_give_their_url_and_whether_they_need_tls() {
        assert_eq!(
            peer_url("10.0.0.1:8080"),
            ("ws://10.0.0.1:8080/peer".into(), false)
        );
        assert_eq!(peer_url("https://h:1/"), ("wss://h:1/peer".into(), true));
        assert_eq!(peer_url("wss://h:1"), ("wss://h:1/peer".into(), true));
        assert_eq!(peer_url("http://h:1"), ("ws://h:1/peer".into(), false));
    }
}
