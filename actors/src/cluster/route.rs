//! Where a client's write is coordinated, and what it waits for.
//!
//! A write arriving at any node goes to its partition's owners (see
//! `placement`): an owner coordinates it itself — stamps it with its clock,
//! commits it, and its replicator streams it to the other owners, whose
//! acknowledgements it waits for — and a node that owns none forwards it
//! over a link to an owner, which coordinates it and answers (or refuses
//! it, if placement moved and it owns the partition no more). A
//! conditional write (`If-Match`, `If-None-Match: *`) is decided by the
//! partition's first live owner only, once it has caught up, so two
//! conditional writers meet at one place while the owners agree on who is
//! first. A write found held already (a retry) is confirmed by asking the
//! other owners to merge it (see `confirm_held`).
//!
//! An import's events go to the owners too, each merged with its own
//! version at an owner of its partition.
//!
//! The answer comes once `w` owners (1, a quorum of `replication`, or all)
//! hold the write durably. When fewer owners than that are reachable, the
//! write is still stored where it can be (and reaches the others when they
//! come back), and the writer hears `503 unavailable` with the real counts
//! as soon as the reachable ones have answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::time::Instant;

use futures_util::future::join_all;

use super::fetch::{ask_within, next_owner, worth_another_owner, Forget, OwnerLink};
use super::frame::PeerFrame;
use super::in_turn::send_in_turn;
use super::wire::{WireEvent, WireWrite};
use super::{Answer, Cluster};
use crate::engine::acks::WaitFor;
use crate::engine::partition::{Precondition, Write, WriteReport, WriteStatus};
use crate::error::NodeError;
use crate::model::{Event, PathError};
use crate::node::ImportReport;
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
    let caught_up = || cluster.serves_reads(&placement, part);
    match coordinator(&owners, me, conditional, write.forwarded, caught_up) {
        Coordinator::Here => {}
        Coordinator::Refuse(why) => return Err(NodeError::NoOwner(format!("{path} ({why})"))),
        Coordinator::Forward(candidates) => {
            let Some((to, link)) = candidates
                .iter()
                .find_map(|o| cluster.links.link(o).map(|(id, _)| (*o, id)))
            else {
                return Err(NodeError::Unavailable {
                    acked: 0,
                    needed,
                    of,
                });
            };
            return forward(cluster, (to, link), write, needed, of).await;
        }
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
    if report.status == WriteStatus::Existing && report.acked < needed {
        // A retry of a write held here already: nothing is committed, so
        // nothing is streamed and no owner acknowledges it again. The other
        // owners reachable are asked to hold it (each merges it, a write it
        // has changing nothing) and count as they answer (or, if more, the
        // acknowledgements of the first write heard here).
        let held = 1 + confirm_held(node, cluster, &owners, &report).await;
        report.acked = report.acked.max(held);
    }
    if report.acked < needed {
        return Err(NodeError::Unavailable {
            acked: report.acked,
            needed,
            of,
        });
    }
    Ok(report)
}

/// How many of the other owners reachable now hold the event `report`
/// names (a write found `existing` here), once each is asked to merge it
/// and answers: an owner answers after the merge is as durable as it is
/// configured to make writes. One that takes it as `too_late` is not
/// counted (it keeps it in history, unless compaction keeps nothing that
/// old there: its answer does not say which).
async fn confirm_held(
    node: &Node,
    cluster: &Arc<Cluster>,
    owners: &[&str],
    report: &WriteReport,
) -> usize {
    let Some(digest) = report.digest else {
        return 0;
    };
    // The event by its name; the store read off this thread (it may be
    // the replicator's).
    let (store, name) = (
        node.store(),
        crate::store::event_name(&report.path, &report.version, &digest),
    );
    let read = tokio::task::spawn_blocking(move || store.named(&name));
    let Ok(Ok(Some(stored))) = read.await else {
        return 0;
    };
    let event = stored.event;
    let me = cluster.identity.node.as_str();
    let deadline = cluster.config.ack_timeout;
    let asked = owners
        .iter()
        .filter(|o| **o != me)
        .filter_map(|o| cluster.links.link(o).map(|link| (*o, link)))
        .map(|(owner, link)| {
            let events = vec![WireEvent::from(&event)];
            async move {
                let frame_of = |id| PeerFrame::Import { id, events };
                matches!(
                    ask_within(cluster, (owner, link), frame_of, deadline).await,
                    Ok(Answer::Import(Ok(r))) if r.new + r.existing == 1
                )
            }
        });
    join_all(asked)
        .await
        .into_iter()
        .filter(|held| *held)
        .count()
}

/// Who coordinates a write (see [`coordinator`]).
#[derive(Debug, PartialEq, Eq)]
enum Coordinator<'a> {
    /// This node.
    Here,
    /// The first of these owners reachable.
    Forward(&'a [&'a str]),
    /// Nobody now: the writer hears `503` and may try again.
    Refuse(&'static str),
}

/// Who coordinates a write of a partition with `owners` (in placement
/// order), at node `me`: an owner (a conditional write: the first owner
/// only, and only once it has caught up, for it decides on what it holds);
/// a node that owns none forwards it. A write forwarded here by a node
/// whose placement differs (members just changed) is refused rather than
/// coordinated by a node that is not its owner, which would count itself
/// among the owners that hold it.
fn coordinator<'a>(
    owners: &'a [&'a str],
    me: &str,
    conditional: bool,
    forwarded: bool,
    caught_up: impl FnOnce() -> bool,
) -> Coordinator<'a> {
    let mine = if conditional {
        owners.first() == Some(&me)
    } else {
        owners.contains(&me)
    };
    match (mine, forwarded) {
        (true, _) if conditional && !caught_up() => {
            Coordinator::Refuse("its first owner is catching up")
        }
        (true, _) => Coordinator::Here,
        (false, true) => Coordinator::Refuse("forwarded to a node that is not its owner now"),
        (false, false) if conditional => Coordinator::Forward(&owners[..owners.len().min(1)]),
        (false, false) => Coordinator::Forward(owners),
    }
}

/// Hands `write` to owner `to` over its link and waits for its answer.
async fn forward(
    cluster: &Arc<Cluster>,
    (to, link): (&str, u64),
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
    // The owner waits up to the ack timeout itself; allow for the hops.
    let deadline =
        Instant::now() + cluster.config.ack_timeout + cluster.config.heartbeat_interval * 2;
    let unavailable = NodeError::Unavailable {
        acked: 0,
        needed,
        of,
    };
    let frame = PeerFrame::Forward {
        id,
        write: WireWrite::new(&write),
    };
    if send_in_turn(cluster, (to, link), &frame, deadline)
        .await
        .is_err()
    {
        return Err(unavailable);
    }
    match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(Answer::Write(Ok(report)))) => report.into_report(path).map_err(|why| {
            log::warn!("node '{to}' answered a forwarded write with a bad report: {why}");
            unavailable
        }),
        Ok(Ok(Answer::Write(Err(e)))) => Err(e.into()),
        // The link went down, no answer in time, or not an answer to a write.
        _ => Err(unavailable),
    }
}

/// Value bytes of one `Import` frame, about (at least one event): well
/// under a peer frame's limit.
const IMPORT_FRAME_BYTES: usize = 8 << 20;
// A frame of them, and one more event of the largest value, fits a frame.
const _: () =
    assert!(IMPORT_FRAME_BYTES + super::MAX_VALUE_BYTES + (1 << 20) <= super::MAX_FRAME_BYTES);
/// Most events of one `Import` frame: the owner merges them all before it
/// answers.
const IMPORT_FRAME_EVENTS: usize = 1024;

/// Merges the events of an import (checked) at owners: those of
/// partitions this node owns here, the others handed to an owner of their
/// partition over its link (`Import`), one owner after another if one
/// fails. Each owner's replication carries them on. No owner reachable
/// for some event: `503`, after the others were merged (importing again
/// is safe: a merge of an event held already changes nothing).
pub async fn import(
    node: &Node,
    cluster: &Arc<Cluster>,
    events: Vec<Event>,
) -> Result<ImportReport, NodeError> {
    let placement = cluster.placement();
    let me = cluster.identity.node.as_str();
    let part_of = |e: &Event| node.partition_of(&e.path) as u16;
    let (here, mut away): (Vec<Event>, Vec<Event>) = events
        .into_iter()
        .partition(|e| placement.owns(me, part_of(e)));
    let mut report = node.merge_here(&here).await?;
    let mut tried: HashMap<u16, usize> = HashMap::new();
    // The first event no owner could take: the import fails with it once
    // the others are merged.
    let mut stranded: Option<NodeError> = None;
    while !away.is_empty() {
        let mut batches: BTreeMap<&str, (OwnerLink, Vec<Event>)> = BTreeMap::new();
        // Each partition's owner this round (its events go together).
        let mut round: HashMap<u16, &str> = HashMap::new();
        for event in away.drain(..) {
            let part = part_of(&event);
            let owner = match round.get(&part) {
                Some(owner) => *owner,
                None => match next_owner(cluster, &placement, part, tried.entry(part).or_default())
                {
                    Some((owner, link)) => {
                        batches.entry(owner).or_insert((link, Vec::new()));
                        round.insert(part, owner);
                        owner
                    }
                    None => {
                        stranded.get_or_insert(NodeError::NoOwner(event.path.to_string()));
                        continue;
                    }
                },
            };
            if let Some((_, events)) = batches.get_mut(owner) {
                events.push(event);
            }
        }
        let handed = batches
            .into_iter()
            .map(|(owner, (link, events))| async move {
                let mut done = ImportReport::default();
                let mut frames = frames_of(events).into_iter();
                while let Some(frame) = frames.next() {
                    let wire: Vec<WireEvent> = frame.iter().map(WireEvent::from).collect();
                    // The owner merges the frame before it answers.
                    let deadline = cluster.config.ack_timeout + cluster.config.peer_dead_after;
                    let frame_of = |id| PeerFrame::Import { id, events: wire };
                    let answer = ask_within(cluster, (owner, link.clone()), frame_of, deadline)
                        .await
                        .and_then(|a| match a {
                            Answer::Import(Ok(r)) => Ok(r),
                            Answer::Import(Err(e)) => Err(e.into()),
                            _ => Err(NodeError::NoOwner(format!("node '{owner}'"))),
                        });
                    match answer {
                        Ok(r) => done.add(&r),
                        Err(e) => {
                            // This frame and those after it go to another owner.
                            let rest: Vec<Event> =
                                frame.into_iter().chain(frames.flatten()).collect();
                            return (done, Err((e, rest)));
                        }
                    }
                }
                (done, Ok(()))
            });
        for (done, result) in join_all(handed).await {
            report.add(&done);
            match result {
                Ok(()) => {}
                Err((e, rest)) if worth_another_owner(&e) => {
                    log::debug!("an import's events at an owner: {e}");
                    away.extend(rest);
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
    match stranded {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// `events` in frames of about [`IMPORT_FRAME_BYTES`] of values, at most
/// [`IMPORT_FRAME_EVENTS`] events.
fn frames_of(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut frames = vec![Vec::new()];
    let mut bytes = 0;
    for event in events {
        let size = 128 + event.value.as_ref().map_or(0, |v| v.len());
        let last = frames.last().map_or(0, Vec::len);
        if last > 0 && (bytes + size > IMPORT_FRAME_BYTES || last == IMPORT_FRAME_EVENTS) {
            frames.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        frames.last_mut().expect("a frame").push(event);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_coordinate_conditional_writes_need_the_first_caught_up_and_forwards_are_not_passed_on(
    ) {
        let owners = ["a", "b", "c"];
        let caught_up = || true;
        let behind = || false;
        // Plain writes: any owner; a node that owns none forwards to them all.
        assert_eq!(
            coordinator(&owners, "b", false, false, behind),
            Coordinator::Here
        );
        assert_eq!(
            coordinator(&owners, "d", false, false, caught_up),
            Coordinator::Forward(&owners[..])
        );
        // Conditional writes: the first owner, once caught up; the others
        // forward to it alone.
        assert_eq!(
            coordinator(&owners, "a", true, false, caught_up),
            Coordinator::Here
        );
        assert!(matches!(
            coordinator(&owners, "a", true, false, behind),
            Coordinator::Refuse(_)
        ));
        assert!(matches!(
            coordinator(&owners, "a", true, true, behind),
            Coordinator::Refuse(_)
        ));
        assert_eq!(
            coordinator(&owners, "b", true, false, caught_up),
            Coordinator::Forward(&owners[..1])
        );
        // Forwarded here: coordinated by an owner, refused elsewhere (never
        // forwarded on).
        assert_eq!(
            coordinator(&owners, "c", false, true, behind),
            Coordinator::Here
        );
        assert!(matches!(
            coordinator(&owners, "d", false, true, caught_up),
            Coordinator::Refuse(_)
        ));
        assert!(matches!(
            coordinator(&owners, "b", true, true, caught_up),
            Coordinator::Refuse(_)
        ));
        assert_eq!(
            coordinator(&[], "d", false, false, caught_up),
            Coordinator::Forward(&[])
        );
    }
}
