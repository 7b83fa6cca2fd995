//! The peer links of a node: which are up, to whom, and their counters.
//!
//! Two nodes may end up with two links (each dialed the other, or a dialer
//! reconnected before the old link was noticed dead). Both sides keep the
//! same one: the link dialed by the node with the smaller id; between two
//! links of the same dialer, the older (a dead one times out, and the
//! dialer whose link was refused waits until then, see `LinkReport`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use actix::prelude::*;

use super::peer::{Peer, Shut};
use super::sendq::SendGauge;

/// Which side opened a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This node dialed.
    Outbound,
    /// The other node dialed (`GET /peer`).
    Inbound,
}

/// One link that is up.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// The peer's node id.
    pub node: String,
    /// The address it gave.
    pub address: String,
    /// Who dialed.
    pub direction: Direction,
    /// When it came up.
    pub since: Instant,
    /// A number unique to the link on this node.
    pub id: u64,
    /// The peer's log incarnation (see `replicator`).
    pub incarnation: String,
    /// What waits in the link's send queue.
    pub queue: SendGauge,
}

/// What a dialer learns of one link it opened: whom it reached, and when
/// the link came up.
#[derive(Debug, Default)]
pub struct LinkReport {
    node: Mutex<Option<String>>,
    up_at: Mutex<Option<Instant>>,
}

impl LinkReport {
    /// The node the link reached (once it said who it is).
    pub fn node(&self) -> Option<String> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How long the link has been (or was, until now) up.
    pub fn up_for(&self) -> Option<std::time::Duration> {
        self.up_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Records the node reached.
    pub fn reached(&self, node: &str) {
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.to_string());
    }

    /// Records that the link came up.
    pub fn came_up(&self) {
        *self.up_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// Counters of all links, for `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Links that came up.
    pub opened: AtomicU64,
    /// Links closed for a reason (refused, garbage, silent, overloaded).
    pub refused: AtomicU64,
    /// Links closed because the peer could not take frames as fast as
    /// they came (their send queue was full).
    pub overloaded: AtomicU64,
    /// Clients' requests and answers that found no room in their link's
    /// queue in time (see `in_turn`), and writes a peer forwarded past what
    /// this node holds of them at once: each failed alone, with `503`.
    pub asks_busy: AtomicU64,
    /// Membership changes seen (a member up, dead, or back).
    pub membership_changes: AtomicU64,
    /// Replication: events sent to followers.
    pub events_sent: AtomicU64,
    /// Replication: events received from the owners followed and merged.
    pub events_merged: AtomicU64,
    /// Replication: events received that this node could not take (left
    /// out of the stream, logged).
    pub events_refused: AtomicU64,
    /// Replication: what waits to be merged from the owners followed
    /// (bytes, see `PeerFrame::merge_weight`).
    pub merge_queue_bytes: AtomicU64,
    /// Replication: links this node closed because what waited to merge
    /// passed the bound.
    pub follower_overloads: AtomicU64,
    /// Writes this node forwarded to an owner.
    pub writes_forwarded: AtomicU64,
    /// Reads this node forwarded to an owner.
    pub reads_forwarded: AtomicU64,
    /// Writes other nodes forwarded here.
    pub writes_coordinated_for_peers: AtomicU64,
    /// Partition streams served to followers now.
    pub streams_served: AtomicU64,
    /// Partition streams followed now.
    pub streams_followed: AtomicU64,
    /// Watches this node asked owners for (prefixes its clients watch).
    pub watches_asked: AtomicU64,
    /// Watches this node serves to other nodes.
    pub watches_served: AtomicU64,
    /// The most entries any served stream is behind this node's log.
    pub lag_max: AtomicU64,
    /// Each served partition some stream is behind in, and by how many
    /// entries at most (see `Serving::lag_by_part`).
    pub partition_lag: std::sync::Mutex<Vec<(u16, u64)>>,
}

/// The links of a node that are up, by peer node id.
#[derive(Default)]
pub struct Links {
    up: Mutex<HashMap<String, (LinkInfo, Addr<Peer>)>>,
    next_id: AtomicU64,
    /// Counters.
    pub stats: LinkStats,
}

impl Links {
    /// A fresh link number.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a link that came up. If one to that node is up already,
    /// the one to keep stays (see the module doc) and the other is shut:
    /// false if that is this one.
    pub fn add(&self, me: &str, info: LinkInfo, peer: Addr<Peer>) -> bool {
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old, old_peer)) = up.get(&info.node) {
            if !newer_wins(me, old, &info) {
                return false;
            }
            old_peer.do_send(Shut("a newer link to the same node replaces it".into()));
        }
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        up.insert(info.node.clone(), (info, peer));
        true
    }

    /// Forgets link `id` to `node` (no other link to it).
    pub fn remove(&self, node: &str, id: u64) {
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        if up.get(node).is_some_and(|(info, _)| info.id == id) {
            up.remove(node);
        }
    }

    /// The links that are up, by node id.
    pub fn list(&self) -> Vec<LinkInfo> {
        let up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LinkInfo> = up.values().map(|(info, _)| info.clone()).collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// The `Peer` of the link to `node`, if one is up.
    pub fn peer(&self, node: &str) -> Option<Addr<Peer>> {
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(_, peer)| peer.clone())
    }

    /// The link to `node` (its number and `Peer`), if one is up.
    pub fn link(&self, node: &str) -> Option<(u64, Addr<Peer>)> {
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(info, peer)| (info.id, peer.clone()))
    }

    /// The link to `node` with its send queue's gauge, if one is up.
    pub fn link_and_queue(&self, node: &str) -> Option<(u64, Addr<Peer>, SendGauge)> {
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(info, peer)| (info.id, peer.clone(), info.queue.clone()))
    }

    /// True if a link to `node` is up.
    pub fn is_up(&self, node: &str) -> bool {
        self.up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(node)
    }

    /// How many links are up.
    pub fn count(&self) -> usize {
        self.up.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether `new` replaces `old` (two links between the same two nodes).
fn newer_wins(me: &str, old: &LinkInfo, new: &LinkInfo) -> bool {
    if old.direction == new.direction {
        return false;
    }
    // The link dialed by the smaller id stays.
    fn dialer<'a>(me: &'a str, l: &'a LinkInfo) -> &'a str {
        match l.direction {
            Direction::Outbound => me,
            Direction::Inbound => l.node.as_str(),
        }
    }
    dialer(me, new) < dialer(me, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(node: &str, direction: Direction, id: u64) -> LinkInfo {
        LinkInfo {
            node: node.into(),
            address: "x:1".into(),
            direction,
            since: Instant::now(),
            id,
            incarnation: "i".into(),
            queue: SendGauge::default(),
        }
    }

    #[test]
    fn both_ends_keep_the_link_dialed_by_the_smaller_id() {
        // Seen from "a": its own outbound link to "b" wins over b's.
        let out = info("b", Direction::Outbound, 1);
        let inb = info("b", Direction::Inbound, 2);
        assert!(!newer_wins("a", &out, &inb));
        assert!(newer_wins("a", &inb, &out));
        // Seen from "b": the inbound link (dialed by "a") wins.
        let out = info("a", Direction::Outbound, 1);
        let inb = info("a", Direction::Inbound, 2);
        assert!(newer_wins("b", &out, &inb));
        assert!(!newer_wins("b", &inb, &out));
        // A second link of the same dialer waits for the first to go.
        assert!(!newer_wins(
            "a",
            &info("b", Direction::Outbound, 1),
            &info("b", Direction::Outbound, 2)
        ));
    }
}
