//! Answers to peers' reads (`cluster::fetch`): a value, a page of a
//! prefix's listing, a step of a path's history; and to the events of an
//! import a peer hands this node to merge as their owner. An owner answers only for
//! partitions it serves (caught up); otherwise it says "not ready" and the
//! asker tries another owner. Listings and histories are read on a
//! blocking thread; the answer goes back on the link the question came on,
//! in turn (`in_turn`).

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::Replicator;
use crate::cluster::fetch::ListAsk;
use crate::cluster::frame::PeerFrame;
use crate::cluster::in_turn::send_in_turn;
use crate::cluster::wire::{WireError, WireEvent, WireHistory, WirePage};
use crate::cluster::Cluster;
use crate::model::{AsOf, Digest, NodeId, Path, Version};
use crate::node::{HistoryRange, HISTORY_ANSWER_BYTES};

/// Most entries or events one answer holds, whatever a peer asks: a
/// client's page is at most 10,000 (`web::listing`), a history step less.
const MAX_LIMIT: usize = 10_000;
// A history answer, and one more event of the largest value, fits a frame.
const _: () = assert!(
    HISTORY_ANSWER_BYTES + crate::cluster::MAX_VALUE_BYTES + (1 << 20)
        <= crate::cluster::MAX_FRAME_BYTES
);

impl Replicator {
    /// True if this node answers reads of `part`: it owns it and has
    /// caught up (an owner that does not is asked in vain: "not ready").
    fn answers_for(&self, part: u16) -> bool {
        self.cluster.serves_reads(&self.cluster.placement(), part)
    }

    /// Answers a peer's read of `path` (now, or at `at`).
    pub(super) fn answer_read(&self, node: &str, id: u64, path: &str, at: Option<AsOf>) {
        let answer = match Path::parse_key(path) {
            Ok(path) if !self.answers_for(self.node.partition_of(&path) as u16) => {
                // An owner catching up, or no owner (placements differ
                // for a moment while membership changes).
                Err(WireError::NotReady)
            }
            Ok(path) => match at {
                Some(at) => self.node.get_as_of(&path, &at),
                None => self.node.get_path(&path),
            }
            .map(|s| s.map(|s| WireEvent::from(&s.event)))
            .map_err(|e| WireError::from(&e)),
            Err(e) => Err(WireError::Invalid(e.to_string())),
        };
        answer_in_turn(&self.cluster, node, PeerFrame::ReadAnswer { id, answer });
    }

    /// Answers a peer's listing of the share `parts` of `prefix`.
    pub(super) fn answer_list(
        &mut self,
        (from, link): (String, u64),
        (id, prefix, parts): (u64, String, Vec<u16>),
        ask: ListAsk,
        ctx: &mut Context<Self>,
    ) {
        let mut parts = parts;
        parts.sort_unstable();
        parts.dedup();
        let partitions = self.node.layout().partitions();
        let checked = match Path::parse(&prefix) {
            Err(e) => Err(WireError::Invalid(e.to_string())),
            Ok(_) if ask.deleted && ask.at.is_some() => Err(WireError::Invalid(
                "a listing of deleted paths is of now".into(),
            )),
            Ok(_) if parts.iter().any(|p| u32::from(*p) >= partitions) => {
                Err(WireError::Invalid("a partition out of range".into()))
            }
            Ok(_) if !parts.iter().all(|p| self.answers_for(*p)) => Err(WireError::NotReady),
            Ok(prefix) => Ok(prefix),
        };
        let node = self.node.clone();
        let ask = ListAsk {
            limit: ask.limit.min(MAX_LIMIT),
            ..ask
        };
        let read = move || {
            let prefix = checked?;
            node.list_page(&prefix, Some(&parts), &ask)
                .map(|page| WirePage::from(&page))
                .map_err(|e| WireError::from(&e))
        };
        self.answer_later(
            (from, link),
            read,
            move |answer| PeerFrame::ListAnswer { id, answer },
            ctx,
        );
    }

    /// Answers a peer's read of a step of the history of `path`.
    pub(super) fn answer_history(
        &mut self,
        (from, link): (String, u64),
        (id, path): (u64, String),
        (range, after): (HistoryRange, Option<(u64, String, Vec<u8>)>),
        ctx: &mut Context<Self>,
    ) {
        let after = match after {
            None => Ok(None),
            Some((time, node, digest)) => NodeId::new(&node)
                .map_err(|e| e.to_string())
                .and_then(|node| {
                    let digest = Digest::try_from(digest.as_slice())
                        .map_err(|_| "a digest of the wrong length".to_string())?;
                    Ok(Some((Version::new(time, node), digest)))
                })
                .map_err(|why| WireError::Invalid(format!("a history's start: {why}"))),
        };
        let checked = match Path::parse_key(&path) {
            Ok(path) if !self.answers_for(self.node.partition_of(&path) as u16) => {
                Err(WireError::NotReady)
            }
            Ok(path) => after.map(|after| (path, after)),
            Err(e) => Err(WireError::Invalid(e.to_string())),
        };
        let node = self.node.clone();
        let read = move || {
            let (path, after) = checked?;
            let range = HistoryRange {
                limit: range.limit.min(MAX_LIMIT),
                ..range
            };
            node.history_bounded(&path, range, HISTORY_ANSWER_BYTES, after.as_ref())
                .map(|(events, cut)| WireHistory {
                    events: events.iter().map(|s| WireEvent::from(&s.event)).collect(),
                    cut,
                })
                .map_err(|e| WireError::from(&e))
        };
        self.answer_later(
            (from, link),
            read,
            move |answer| PeerFrame::HistoryAnswer { id, answer },
            ctx,
        );
    }

    /// Runs `read` on a blocking thread and sends its answer, framed by
    /// `frame`, back on link `link` to `from` if that link still stands.
    pub(super) fn answer_later<T: Send + 'static>(
        &mut self,
        (from, link): (String, u64),
        read: impl FnOnce() -> Result<T, WireError> + Send + 'static,
        frame: impl FnOnce(Result<T, WireError>) -> PeerFrame + 'static,
        ctx: &mut Context<Self>,
    ) {
        let cluster = self.cluster.clone();
        let work = async move {
            let answer = tokio::task::spawn_blocking(read)
                .await
                .unwrap_or_else(|e| Err(WireError::Failed(format!("reading: {e}"))));
            let deadline = Instant::now() + cluster.config.peer_dead_after;
            let _ = send_in_turn(&cluster, (&from, link), &frame(answer), deadline).await;
        };
        ctx.spawn(work.into_actor(self));
    }
}

impl Replicator {
    /// Merges the events of an import a peer handed this node, an owner
    /// of each one's partition ("not ready" if it owns some not: the peer
    /// tries another owner), and answers what the merges did.
    pub(super) fn answer_import(
        &mut self,
        node: String,
        id: u64,
        events: Vec<WireEvent>,
        ctx: &mut Context<Self>,
    ) {
        let placement = self.cluster.placement();
        let me = self.cluster.identity.node.clone();
        let mut decoded = Vec::with_capacity(events.len());
        let mut refused = None;
        for wire in events {
            match crate::model::Event::try_from(wire) {
                Ok(e) if placement.owns(&me, self.node.partition_of(&e.path) as u16) => {
                    decoded.push(e)
                }
                Ok(_) => refused = Some(WireError::NotReady),
                Err(why) => refused = Some(WireError::Invalid(why)),
            }
            if refused.is_some() {
                break;
            }
        }
        let (local, cluster) = (self.node.clone(), self.cluster.clone());
        let work = async move {
            let answer = match refused {
                Some(why) => Err(why),
                None => local
                    .import_here(decoded)
                    .await
                    .map_err(|e| WireError::from(&e)),
            };
            answer_in_turn(&cluster, &node, PeerFrame::Imported { id, answer });
        };
        ctx.spawn(work.into_actor(self));
    }
}

/// Sends a peer the answer to its request over its link up now, in turn
/// (see `in_turn`): past the time the asker waits, it is dropped.
pub(super) fn answer_in_turn(cluster: &Arc<Cluster>, node: &str, frame: PeerFrame) {
    let Some((link, _)) = cluster.links.link(node) else {
        return;
    };
    let (cluster, node) = (cluster.clone(), node.to_string());
    actix::spawn(async move {
        let deadline = Instant::now() + cluster.config.peer_dead_after;
        let _ = send_in_turn(&cluster, (&node, link), &frame, deadline).await;
    });
}
