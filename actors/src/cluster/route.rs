//! Where a client's write is coordinated, and what it waits for.
//!
//! A write arriving at any node goes to its partition's owners (see
//! `placement`): an owner coordinates it itself — stamps it with its clock,
//! commits it, and its replicator streams it to the other owners, whose
//! acknowledgements it waits for — and a node that owns none forwards it
//! over a link to an owner, which coordinates it and answers. A
//! conditional write (`If-Match`, `If-None-Match: *`) is decided by the
//! partition's first live owner only, so two conditional writers meet at
//! one place while the owners agree on who is first.
//!
//! The answer comes once `w` owners (1, a quorum of `replication`, or all)
//! hold the write durably. When fewer owners than that are reachable, the
//! write is still stored where it can be (and reaches the others when they
//! come back), and the writer hears `503 unavailable` with the real counts
//! as soon as the reachable ones have answered.

use std::sync::Arc;

use actix::Addr;

use super::fetch::Forget;
use super::frame::PeerFrame;
use super::peer::{Peer, SendFrame};
use super::wire::WireWrite;
use super::{Answer, Cluster};
use crate::engine::acks::WaitFor;
use crate::engine::partition::{Precondition, Write, WriteReport};
use crate::error::NodeError;
use crate::model::PathError;
use crate::Node;

/// Routes `write` (see the module doc).
pub async fn write(
    node: &Node,
    cluster: &Arc<Cluster>,
    mut write: Write,
) -> Result<WriteReport, NodeError> {
    let path = write.path.as_ref().ok_or(PathError::Empty)?;
    let part = node.partition_of(path) as u16;
    let placement = cluster.placement();
    let me = cluster.identity.node.as_str();
    let owners: Vec<&str> = placement.owners(part).collect();
    let of = cluster.config.replication;
    let needed = write.w.needed(of);
    let conditional = write.precondition != Precondition::None;
    let here = write.forwarded
        || if conditional {
            owners.first() == Some(&me)
        } else {
            owners.contains(&me)
        };
    if !here {
        let candidates = if conditional {
            &owners[..owners.len().min(1)]
        } else {
            &owners[..]
        };
        let Some((to, link, peer)) = candidates
            .iter()
            .find_map(|o| cluster.links.link(o).map(|(id, p)| (*o, id, p)))
        else {
            return Err(NodeError::Unavailable {
                acked: 0,
                needed,
                of,
            });
        };
        return forward(cluster, (to, link, peer), write, needed, of).await;
    }
    // The other owners reachable now: the write is streamed to each.
    let reachable = owners
        .iter()
        .filter(|o| **o != me && cluster.links.is_up(o))
        .count();
    let wanted = needed.saturating_sub(1);
    write.wait = Some(WaitFor {
        acks: wanted.min(reachable),
        of,
        timeout: cluster.config.ack_timeout,
    });
    let mut report = match node.write_here(write).await {
        Err(NodeError::Unavailable { acked, .. }) => {
            return Err(NodeError::Unavailable { acked, needed, of })
        }
        other => other?,
    };
    report.peers = reachable;
    if report.acked < needed {
        return Err(NodeError::Unavailable {
            acked: report.acked,
            needed,
            of,
        });
    }
    Ok(report)
}

/// Hands `write` to owner `to` over its link and waits for its answer.
async fn forward(
    cluster: &Arc<Cluster>,
    (to, link, peer): (&str, u64, Addr<Peer>),
    write: Write,
    needed: usize,
    of: usize,
) -> Result<WriteReport, NodeError> {
    let path = write.path.clone().ok_or(PathError::Empty)?;
    let (id, answer) = cluster.expect_forward(to, link);
    cluster
        .links
        .stats
        .writes_forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _forget = Forget(cluster, id);
    peer.do_send(SendFrame(PeerFrame::Forward {
        id,
        write: WireWrite::new(&write),
    }));
    // The owner waits up to the ack timeout itself; allow for the hops.
    let deadline = cluster.config.ack_timeout + cluster.config.heartbeat_interval * 2;
    let unavailable = NodeError::Unavailable {
        acked: 0,
        needed,
        of,
    };
    match tokio::time::timeout(deadline, answer).await {
        Ok(Ok(Answer::Write(Ok(report)))) => report.into_report(path).map_err(|why| {
            log::warn!("node '{to}' answered a forwarded write with a bad report: {why}");
            unavailable
        }),
        Ok(Ok(Answer::Write(Err(e)))) => Err(e.into()),
        // The link went down, no answer in time, or not an answer to a write.
        _ => Err(unavailable),
    }
}
