//! Frames of clients' requests and their answers over a link — forwarded
//! writes, reads, listings, histories, imports — sent in turn: only while
//! the link's queue is less than half full (a frame alone always goes), and
//! waiting for that up to the request's deadline, woken as the socket takes
//! frames. What waits for its turn on a link is bounded too
//! ([`WAITING_BYTES`]): past it, a frame is refused at once.
//!
//! A link's queue is bounded, and a push past its bound closes the link
//! (the peer cannot keep up). Requests and answers come as fast as clients
//! send them and can weigh a value each (16 MiB), so pushed freely, a few
//! big writes or reads through a node that owns nothing would close the
//! link and fail every other client's request on it; held freely while
//! they wait, they would fill memory instead. In turn, a client's request
//! waits or, past its deadline or the bound, fails alone (503), and the
//! other half of the queue stays for the frames that keep the link and its
//! streams going. (Waiting frames are woken together and the first that
//! fits goes: a big one may wait longer than small ones behind it.)

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::PeerFrame;
use super::peer::SendEncoded;
use super::Cluster;

/// Bytes of frames that wait for their turn on one link, at most (a frame
/// alone always waits): a client's request holds its value anyway, but an
/// owner's answers to a peer's reads are made here, and must not pile up.
pub const WAITING_BYTES: usize = 256 << 20;

/// Longest wait between looks at the link (it may go down meanwhile).
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// Why a frame was not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum NotSent {
    /// The link is down (or another link to the node replaced it).
    LinkGone,
    /// The link's queue had no room for it before the deadline.
    Busy,
}

/// Sends `frame` to `node` over its link `link` in turn (see the module
/// doc), waiting up to `deadline`.
pub async fn send_in_turn(
    cluster: &Cluster,
    (node, link): (&str, u64),
    frame: &PeerFrame,
    deadline: Instant,
) -> Result<(), NotSent> {
    let bytes = Bytes::from(frame.encode());
    let budget = cluster.config.send_queue_bytes;
    let busy = || {
        cluster
            .links
            .stats
            .asks_busy
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(NotSent::Busy)
    };
    // Held while this frame waits (taken once it has to).
    let mut waiting = None;
    loop {
        let Some((id, peer, queue)) = cluster.links.link_and_queue(node) else {
            return Err(NotSent::LinkGone);
        };
        if id != link {
            return Err(NotSent::LinkGone);
        }
        let room = queue.room_told();
        if queue.try_hand(bytes.len(), budget / 2) {
            peer.do_send(SendEncoded(bytes));
            return Ok(());
        }
        if waiting.is_none() {
            let Some(turn) = queue.wait_turn(bytes.len(), WAITING_BYTES) else {
                return busy();
            };
            waiting = Some(turn);
        }
        let now = Instant::now();
        if now >= deadline {
            return busy();
        }
        let wait = (deadline - now).min(LOOK_AGAIN);
        let _ = actix::clock::timeout(wait, room).await;
    }
}
