//! `Peer`: one link to another node (sdiff's middleman and worker), over a
//! WebSocket that the web layer owns: it hands the actor each binary frame
//! ([`FromSocket`]) and writes what the actor queues ([`SendQueue`]). The actor
//! runs the handshake, sends heartbeats on a quiet link, notices a silent
//! one, and closes the link with one logged reason — garbage, a refusal, a
//! frame out of place — never a panic.
//!
//! The queue is bounded: a peer
//! that cannot take frames as fast as they come fills it, and the link is
//! closed as overloaded (the other side redials and resumes from its
//! cursors) instead of buffering without bound.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use super::frame::PeerFrame;
use super::handshake::{sanitized, Handshake, Progress, Role};
use super::links::{Direction, LinkInfo, LinkReport};
use super::sendq::SendQueue;
use super::Cluster;
use crate::model::version::wall_micros;

/// A binary frame that arrived on the socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FromSocket(pub Bytes);

/// The socket is gone (closed by the other side, or failed); the reason is
/// for the log.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SocketClosed(pub String);

/// Send a membership message on the link (see `membership`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendGossip(pub Vec<u8>);

/// Send a frame on the link (see `replicator`); dropped if the link is
/// not up.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendFrame(pub PeerFrame);

/// Send a frame handed over with [`SendGauge::hand`](super::sendq::SendGauge::hand)`(weight)` (see
/// `replicator`): counted as waiting until queued.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendPaced {
    /// The frame.
    pub frame: PeerFrame,
    /// What was handed for it.
    pub weight: usize,
}

/// Send a frame already encoded, handed over with
/// [`SendGauge::try_hand`](super::sendq::SendGauge::try_hand) (see
/// `in_turn`): counted as waiting until queued.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendEncoded(pub Bytes);

/// Close the link, telling the other side why.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shut(pub String);

/// One peer link.
pub struct Peer {
    cluster: Arc<Cluster>,
    direction: Direction,
    /// The socket's other end, for logs until the peer has said who it is.
    remote: String,
    out: SendQueue,
    /// Until the link is up.
    handshake: Option<Handshake>,
    /// The first frame to send.
    hello: Option<PeerFrame>,
    /// Once up.
    up: Option<LinkInfo>,
    /// Told whom the link reached and when it came up (a dialer's).
    report: Option<Arc<LinkReport>>,
    started: Instant,
    last_heard: Instant,
    last_sent: Instant,
    closed: bool,
}

impl Peer {
    /// A link of `cluster`'s node whose other end is `remote`, sending
    /// through `out` (the socket reads the queue's other end).
    pub fn new(
        cluster: Arc<Cluster>,
        direction: Direction,
        remote: String,
        out: SendQueue,
    ) -> Peer {
        let role = match direction {
            Direction::Outbound => Role::Dialer,
            Direction::Inbound => Role::Acceptor,
        };
        let (handshake, hello) =
            Handshake::start(cluster.identity.clone(), cluster.secret.clone(), role);
        let now = Instant::now();
        Peer {
            cluster,
            direction,
            remote,
            out,
            handshake: Some(handshake),
            hello: Some(hello),
            up: None,
            report: None,
            started: now,
            last_heard: now,
            last_sent: now,
            closed: false,
        }
    }

    /// Reports to `report` whom the link reaches and when it comes up.
    pub fn reporting(mut self, report: Arc<LinkReport>) -> Peer {
        self.report = Some(report);
        self
    }

    /// Who is at the other end, for logs.
    fn who(&self) -> String {
        match (&self.up, self.handshake.as_ref().and_then(|h| h.peer())) {
            (Some(info), _) => format!("'{}' ({})", info.node, sanitized(&info.address, 256)),
            (None, Some(hello)) => format!("'{}' ({})", sanitized(&hello.node, 256), self.remote),
            (None, None) => self.remote.clone(),
        }
    }

    /// Queues `frame`; closes the link if the queue is full.
    fn send(&mut self, frame: &PeerFrame, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        self.send_bytes(Bytes::from(frame.encode()), ctx);
    }

    /// Queues an encoded frame; closes the link if the queue is full.
    fn send_bytes(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        let len = bytes.len() as u64;
        match self.out.push(bytes) {
            Ok(()) => {
                let stats = &self.cluster.links.stats;
                stats.frames_out.fetch_add(1, Ordering::Relaxed);
                stats.bytes_out.fetch_add(len, Ordering::Relaxed);
                self.last_sent = Instant::now();
            }
            Err(full) => {
                self.cluster
                    .links
                    .stats
                    .overloaded
                    .fetch_add(1, Ordering::Relaxed);
                self.close(
                    format!(
                        "the peer cannot keep up: {} bytes wait to be sent to it \
                         (--peer-send-queue-bytes)",
                        full.queued
                    ),
                    true,
                    ctx,
                );
            }
        }
    }

    /// Closes the link for `reason` (told to the other side if `tell`),
    /// logged once.
    fn close(&mut self, reason: String, tell: bool, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        if tell {
            let refusal = PeerFrame::Refused {
                reason: reason.clone(),
            };
            self.out.push_last(Bytes::from(refusal.encode()));
        }
        self.closed = true;
        self.cluster
            .links
            .stats
            .refused
            .fetch_add(1, Ordering::Relaxed);
        log::warn!("peer link {}: closed: {reason}", self.who());
        self.out.close(reason);
        ctx.stop();
    }

    fn on_frame(&mut self, frame: PeerFrame, ctx: &mut Context<Self>) {
        if let Some(handshake) = &mut self.handshake {
            match handshake.on_frame(frame) {
                Ok(Progress::Continue(Some(answer))) => self.send(&answer, ctx),
                Ok(Progress::Continue(None)) => {}
                Ok(Progress::Up(hello, answer)) => {
                    if let Some(answer) = answer {
                        self.send(&answer, ctx);
                    }
                    if !self.closed {
                        self.link_up(hello, ctx)
                    }
                }
                Err(refusal) => self.close(refusal.reason, refusal.tell, ctx),
            }
            return;
        }
        match frame {
            PeerFrame::Heartbeat { .. } => {}
            PeerFrame::Gossip { data } => {
                if let Some(membership) = self.cluster.membership.get() {
                    membership.do_send(super::membership::GossipIn(data));
                }
            }
            PeerFrame::Forwarded { id, answer } => {
                if let Some(info) = &self.up {
                    self.cluster
                        .answer_forward(&info.node, id, super::Answer::Write(answer));
                }
            }
            PeerFrame::ReadAnswer { id, answer } => {
                if let Some(info) = &self.up {
                    self.cluster
                        .answer_forward(&info.node, id, super::Answer::Read(answer));
                }
            }
            PeerFrame::ListAnswer { id, answer } => {
                if let Some(info) = &self.up {
                    self.cluster
                        .answer_forward(&info.node, id, super::Answer::List(answer));
                }
            }
            PeerFrame::Imported { id, answer } => {
                if let Some(info) = &self.up {
                    self.cluster
                        .answer_forward(&info.node, id, super::Answer::Import(answer));
                }
            }
            PeerFrame::HistoryAnswer { id, answer } => {
                if let Some(info) = &self.up {
                    self.cluster
                        .answer_forward(&info.node, id, super::Answer::History(answer));
                }
            }
            frame @ (PeerFrame::Follow { .. }
            | PeerFrame::Unfollow { .. }
            | PeerFrame::Reset { .. }
            | PeerFrame::Events { .. }
            | PeerFrame::Merged { .. }
            | PeerFrame::Ack { .. }
            | PeerFrame::Watch { .. }
            | PeerFrame::Unwatch { .. }
            | PeerFrame::Watched { .. }
            | PeerFrame::WatchReady { .. }
            | PeerFrame::WatchEnded { .. }
            | PeerFrame::DiffAsk { .. }
            | PeerFrame::DiffAnswer { .. }
            | PeerFrame::DiffEvents { .. }
            | PeerFrame::Read { .. }
            | PeerFrame::List { .. }
            | PeerFrame::History { .. }
            | PeerFrame::Import { .. }
            | PeerFrame::Forward { .. }
            | PeerFrame::Bundle { .. }) => {
                if let (Some(info), Some(replicator)) = (&self.up, self.cluster.replicator.get()) {
                    replicator.do_send(super::replicator::FromPeer {
                        node: info.node.clone(),
                        link: info.id,
                        frame,
                    });
                }
            }
            PeerFrame::Refused { reason } => self.close(
                format!("refused by the peer: {}", sanitized(&reason, 512)),
                false,
                ctx,
            ),
            other @ (PeerFrame::Hello(_) | PeerFrame::Proof { .. }) => self.close(
                format!("a {} frame after the handshake", other.kind()),
                true,
                ctx,
            ),
        }
    }

    fn link_up(&mut self, hello: super::frame::Hello, ctx: &mut Context<Self>) {
        self.handshake = None;
        let member = super::membership::Member {
            node: hello.node.clone(),
            address: hello.address.clone(),
            bump: hello.bump,
        };
        if let Some(report) = &self.report {
            report.reached(&hello.node);
        }
        // What this side sends the peer stays within the peer's window.
        self.out.gauge().set_window(hello.window as usize);
        let info = LinkInfo {
            node: hello.node,
            address: hello.address,
            direction: self.direction,
            since: Instant::now(),
            id: self.cluster.links.next_id(),
            incarnation: hello.incarnation,
            queue: self.out.gauge(),
        };
        let me = self.cluster.identity.node.clone();
        if self.cluster.is_cut(&info.node) {
            self.up = None;
            self.close("cut by the fault switch".into(), true, ctx);
            return;
        }
        if !self.cluster.links.add(&me, info.clone(), ctx.address()) {
            let reason = format!("a link with node '{}' is up already", info.node);
            self.up = Some(info);
            self.close(reason, true, ctx);
            return;
        }
        if let Some(report) = &self.report {
            report.came_up();
        }
        if let Some(membership) = self.cluster.membership.get() {
            membership.do_send(super::membership::LinkedWith(member));
        }
        if let Some(replicator) = self.cluster.replicator.get() {
            replicator.do_send(super::replicator::LinkUp {
                node: info.node.clone(),
                link: info.id,
            });
        }
        log::info!(
            "peer link to '{}' ({}, {}) is up",
            info.node,
            info.address,
            match self.direction {
                Direction::Outbound => "dialed by this node",
                Direction::Inbound => "dialed by the peer",
            }
        );
        self.up = Some(info);
    }

    /// Heartbeats on a quiet link; closes a silent one.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let settings = &self.cluster.config;
        // Until the link is up, the time counts from its start: frames that
        // do not complete the handshake do not keep it open.
        let (what, since) = match self.up {
            Some(_) => ("silent", self.last_heard),
            None => ("no handshake", self.started),
        };
        let waited = since.elapsed();
        if waited > settings.peer_dead_after {
            self.close(format!("{what} for {} ms", waited.as_millis()), true, ctx);
            return;
        }
        if self.up.is_some() && self.last_sent.elapsed() >= settings.heartbeat_interval {
            self.send(
                &PeerFrame::Heartbeat {
                    sent_at: wall_micros(),
                },
                ctx,
            );
        }
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(hello) = self.hello.take() {
            self.send(&hello, ctx);
        }
        let every =
            (self.cluster.config.heartbeat_interval / 2).max(std::time::Duration::from_millis(5));
        ctx.run_interval(every, |peer, ctx| peer.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(info) = &self.up {
            self.cluster.links.remove(&info.node, info.id);
            self.cluster.fail_forwards(info.id);
            if let Some(replicator) = self.cluster.replicator.get() {
                replicator.do_send(super::replicator::LinkDown {
                    node: info.node.clone(),
                    link: info.id,
                });
            }
        }
    }
}

impl Handler<FromSocket> for Peer {
    type Result = ();

    fn handle(&mut self, msg: FromSocket, ctx: &mut Self::Context) {
        if self.closed {
            return;
        }
        self.last_heard = Instant::now();
        let stats = &self.cluster.links.stats;
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_in
            .fetch_add(msg.0.len() as u64, Ordering::Relaxed);
        match PeerFrame::decode(&msg.0) {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(e) => self.close(e.to_string(), true, ctx),
        }
    }
}

impl Handler<SocketClosed> for Peer {
    type Result = ();

    fn handle(&mut self, msg: SocketClosed, ctx: &mut Self::Context) {
        if !self.closed {
            self.closed = true;
            log::info!("peer link {}: {}", self.who(), msg.0);
        }
        ctx.stop();
    }
}

impl Handler<SendGossip> for Peer {
    type Result = ();

    fn handle(&mut self, msg: SendGossip, ctx: &mut Self::Context) {
        if self.up.is_some() && !self.closed {
            self.send(&PeerFrame::Gossip { data: msg.0 }, ctx);
        }
    }
}

impl Handler<SendFrame> for Peer {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, ctx: &mut Self::Context) {
        if self.up.is_some() && !self.closed {
            self.send(&msg.0, ctx);
        }
    }
}

impl Handler<SendPaced> for Peer {
    type Result = ();

    fn handle(&mut self, msg: SendPaced, ctx: &mut Self::Context) {
        self.out.gauge().taken(msg.weight);
        if self.up.is_some() && !self.closed {
            self.send(&msg.frame, ctx);
        }
    }
}

impl Handler<SendEncoded> for Peer {
    type Result = ();

    fn handle(&mut self, msg: SendEncoded, _: &mut Self::Context) {
        self.out.gauge().taken(msg.0.len());
        if self.up.is_some() && !self.closed {
            // Admitted by `try_hand` within half the queue (or alone): a
            // frame queued since (a heartbeat, an ack) must not make it
            // overflow and close the link.
            let len = msg.0.len() as u64;
            self.out.push_last(msg.0);
            let stats = &self.cluster.links.stats;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
            stats.bytes_out.fetch_add(len, Ordering::Relaxed);
            self.last_sent = Instant::now();
        }
    }
}

impl Handler<Shut> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Shut, ctx: &mut Self::Context) {
        self.close(msg.0, true, ctx);
    }
}
