//! Frames of clients' requests and their answers over a link — forwarded
//! writes, reads, listings, histories, imports — sent in turn: only while
//! the link's queue is less than half full (a frame alone always goes), and
//! waiting for that up to the request's deadline.
//!
//! A link's queue is bounded, and a push past its bound closes the link
//! (the peer cannot keep up). Requests and answers come as fast as clients
//! send them and can weigh a value each (16 MiB), so pushed freely, a few
//! big writes or reads through a node that owns nothing would close the
//! link and fail every other client's request on it. In turn, a client's
//! request waits or, past its deadline, fails alone (503), and the other
//! half of the queue stays for the frames that keep the link and its
//! streams going.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::PeerFrame;
use super::peer::SendEncoded;
use super::Cluster;

/// How often a frame waiting for its turn looks again.
const POLL: Duration = Duration::from_millis(2);

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
    let share = cluster.config.send_queue_bytes / 2;
    loop {
        let Some((id, peer, queue)) = cluster.links.link_and_queue(node) else {
            return Err(NotSent::LinkGone);
        };
        if id != link {
            return Err(NotSent::LinkGone);
        }
        if queue.try_hand(bytes.len(), share) {
            peer.do_send(SendEncoded(bytes));
            return Ok(());
        }
        if Instant::now() + POLL > deadline {
            cluster
                .links
                .stats
                .asks_busy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(NotSent::Busy);
        }
        actix::clock::sleep(POLL).await;
    }
}
