//! Reads answered where the data is held: a path's value (now or in the
//! past), a prefix's listing and a path's history. A node reads what it
//! owns (caught up) from its own store; the rest it asks of an owner over
//! a link, each owner in turn until one answers (one catching up,
//! stopping or silent does not end the read). A listing over several
//! partitions asks each owner for its share at once and merges the pages
//! in path order (`node::list_page`).
//!
//! The owners answer on a blocking thread (`replicator::reads`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::Addr;
use futures_util::future::join_all;

use super::frame::PeerFrame;
use super::in_turn::send_in_turn;
use super::peer::Peer;
use super::placement::Placement;
use super::{Answer, Cluster};
use crate::error::NodeError;
use crate::model::{AsOf, Digest, Event, Path, Version};
use crate::node::{merge_pages, HistoryRange, ListPage};
use crate::store::Stored;
use crate::Node;

/// Reads the live value of `path` (at time `at` when given): here if this
/// node owns its partition or its clients watch it (a local copy, which
/// holds the present only: not for `at`), else at the first owner it has a
/// link to.
pub async fn read(
    node: &Node,
    cluster: &Arc<Cluster>,
    path: &Path,
    at: Option<&AsOf>,
) -> Result<Option<Event>, NodeError> {
    let part = node.partition_of(path) as u16;
    let placement = cluster.placement();
    let local = || {
        let stored = match at {
            Some(at) => node.get_as_of(path, at)?,
            None => node.get_path(path)?,
        };
        Ok(stored.map(|s| s.event))
    };
    if cluster.serves_reads(&placement, part) || (at.is_none() && node.interest().serves(path)) {
        return local();
    }
    let frame = |id| PeerFrame::Read {
        id,
        path: path.as_str().to_string(),
        at: at.cloned(),
    };
    let answer = ask_owners(cluster, &placement, part, path, frame, |owner, a| match a {
        Answer::Read(Ok(event)) => event.map(Event::try_from).transpose().map_err(|why| {
            log::warn!("node '{owner}' answered a read with a bad event: {why}");
            NodeError::NoOwner(path.to_string())
        }),
        Answer::Read(Err(e)) => Err(e.into()),
        _ => Err(NodeError::NoOwner(path.to_string())),
    })
    .await;
    match answer {
        // No other owner could answer: an owner still catching up answers
        // with what it holds rather than not at all.
        Err(e) if worth_another_owner(&e) && placement.owns(me_of(cluster), part) => local(),
        other => other.map_err(|e| no_owner(e, path)),
    }
}

/// Up to `limit` events of the history of `path` in `range`, oldest first,
/// read at an owner (a watched copy holds only what arrived while it was
/// watched); true with them when an owner's answer stopped at its byte
/// bound before `limit` (more may follow).
pub async fn history(
    node: &Node,
    cluster: &Arc<Cluster>,
    path: &Path,
    range: HistoryRange,
    after: Option<(Version, Digest)>,
) -> Result<(Vec<Stored>, bool), NodeError> {
    let part = node.partition_of(path) as u16;
    let placement = cluster.placement();
    if cluster.serves_reads(&placement, part) {
        return node.history_off_thread(path, range, after).await;
    }
    let frame = |id| PeerFrame::History {
        id,
        path: path.as_str().to_string(),
        from: range.from,
        to: range.to,
        limit: u32::try_from(range.limit).unwrap_or(u32::MAX),
        after: after.as_ref().map(|(version, digest)| {
            (
                version.time,
                version.node.as_str().to_string(),
                digest.to_vec(),
            )
        }),
    };
    let answer = ask_owners(cluster, &placement, part, path, frame, |owner, a| match a {
        Answer::History(Ok(h)) => {
            let mut events = Vec::with_capacity(h.events.len());
            for wire in h.events {
                let event = Event::try_from(wire).map_err(|why| {
                    log::warn!("node '{owner}' answered a history with a bad event: {why}");
                    NodeError::NoOwner(path.to_string())
                })?;
                // Its change number is the owner's, not this node's.
                events.push(Stored {
                    digest: event.digest(),
                    event,
                    seq: None,
                    late: false,
                });
            }
            Ok((events, h.cut))
        }
        Answer::History(Err(e)) => Err(e.into()),
        _ => Err(NodeError::NoOwner(path.to_string())),
    })
    .await;
    match answer {
        Err(e) if worth_another_owner(&e) && placement.owns(me_of(cluster), part) => {
            node.history_off_thread(path, range, after).await
        }
        other => other.map_err(|e| no_owner(e, path)),
    }
}

/// Asks the owners of `part` but this node about `path`, each in turn
/// until one answers (`decode` reads its answer): one that cannot be
/// reached, is catching up, stopping or failing does not end the read;
/// a client's error (a bad time, a compacted history) does. Without an
/// answer, the last owner's error (`NoOwner` when none had a link).
async fn ask_owners<T>(
    cluster: &Arc<Cluster>,
    placement: &Placement,
    part: u16,
    path: &Path,
    frame: impl Fn(u64) -> PeerFrame,
    decode: impl Fn(&str, Answer) -> Result<T, NodeError>,
) -> Result<T, NodeError> {
    let me = me_of(cluster);
    let mut last = NodeError::NoOwner(path.to_string());
    for owner in placement.owners(part).filter(|o| *o != me) {
        let Some(link) = cluster.links.link(owner) else {
            continue;
        };
        let answer = ask(cluster, (owner, link), &frame)
            .await
            .and_then(|a| decode(owner, a));
        match answer {
            Ok(answer) => return Ok(answer),
            Err(e) if worth_another_owner(&e) => {
                log::debug!("reading {path} at '{owner}': {e}");
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// This node's id.
fn me_of(cluster: &Cluster) -> &str {
    cluster.identity.node.as_str()
}

/// What a listing asks: where it starts, how many, as of when, and
/// whether deleted paths count.
#[derive(Clone, Debug)]
pub struct ListAsk {
    /// Start strictly after this path.
    pub after: Option<String>,
    /// Most entries.
    pub limit: usize,
    /// The paths as they stood then (µs); now when `None`.
    pub at: Option<u64>,
    /// Every path with a latest event, deleted ones too, instead of the
    /// live ones (never with `at`).
    pub deleted: bool,
}

/// A page of the paths of `prefix` (see [`ListAsk`]) across the cluster:
/// each partition under the prefix is read here if this node serves it
/// (or, for a listing of now, if this node's clients watch the whole
/// prefix), else at one of its owners; the owners' pages are merged in
/// path order.
pub async fn list(
    node: &Node,
    cluster: &Arc<Cluster>,
    prefix: &Path,
    ask_for: ListAsk,
) -> Result<ListPage, NodeError> {
    let placement = cluster.placement();
    let me = cluster.identity.node.as_str();
    if ask_for.at.is_none() && !ask_for.deleted && node.interest().serves(prefix) {
        return local_page(node, prefix, None, &ask_for).await;
    }
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for part in node.layout().covering(prefix).iter() {
        if cluster.serves_reads(&placement, part) {
            local.push(part);
        } else {
            remote.push(part);
        }
    }
    // Which of its owners each remote partition goes to next.
    let mut tried: HashMap<u16, usize> = HashMap::new();
    let mut pages = Vec::new();
    let mut last = NodeError::NoOwner(prefix.to_string());
    while !remote.is_empty() {
        let mut shares: BTreeMap<&str, (u64, Addr<Peer>, Vec<u16>)> = BTreeMap::new();
        for part in remote.drain(..) {
            match next_owner(cluster, &placement, part, tried.entry(part).or_default()) {
                Some((owner, (id, peer))) => {
                    shares
                        .entry(owner)
                        .or_insert((id, peer, Vec::new()))
                        .2
                        .push(part);
                }
                // An owner still catching up answers with what it holds
                // rather than not at all.
                None if placement.owns(me, part) => local.push(part),
                None => return Err(no_owner(last, prefix)),
            }
        }
        let ask_for = &ask_for;
        let asked = shares
            .into_iter()
            .map(|(owner, (id, peer, parts))| async move {
                let frame = |rid| PeerFrame::List {
                    id: rid,
                    prefix: prefix.as_str().to_string(),
                    parts: parts.clone(),
                    after: ask_for.after.clone(),
                    limit: u32::try_from(ask_for.limit).unwrap_or(u32::MAX),
                    at: ask_for.at,
                    deleted: ask_for.deleted,
                };
                let answer = ask(cluster, (owner, (id, peer)), frame)
                    .await
                    .and_then(|a| match a {
                        Answer::List(Ok(page)) => ListPage::try_from(page).map_err(|why| {
                            log::warn!("node '{owner}' answered a listing with a bad page: {why}");
                            NodeError::NoOwner(prefix.to_string())
                        }),
                        Answer::List(Err(e)) => Err(e.into()),
                        _ => Err(NodeError::NoOwner(prefix.to_string())),
                    });
                (owner, parts, answer)
            });
        for (owner, parts, answer) in join_all(asked).await {
            match answer {
                Ok(page) => pages.push(page),
                Err(e) if worth_another_owner(&e) => {
                    log::debug!("listing {prefix} at '{owner}': {e}");
                    last = e;
                    remote.extend(parts);
                }
                Err(e) => return Err(e),
            }
        }
    }
    if !local.is_empty() {
        local.sort_unstable();
        pages.push(local_page(node, prefix, Some(local), &ask_for).await?);
    }
    Ok(merge_pages(pages, ask_for.limit))
}

/// This node's page of `prefix` over `parts` (all when `None`), read on a
/// blocking thread.
async fn local_page(
    node: &Node,
    prefix: &Path,
    parts: Option<Vec<u16>>,
    ask_for: &ListAsk,
) -> Result<ListPage, NodeError> {
    let (node, prefix, ask_for) = (node.clone(), prefix.clone(), ask_for.clone());
    tokio::task::spawn_blocking(move || node.list_page(&prefix, parts.as_deref(), &ask_for))
        .await
        .map_err(|_| NodeError::ShuttingDown)?
}

/// A link to an owner: its number and its `Peer`.
pub(super) type OwnerLink = (u64, Addr<Peer>);

/// The next owner of `part` but this node with a link up, past the first
/// `tried` of them (and moves `tried` past it): where a request goes when
/// the owners before it failed.
pub(super) fn next_owner<'p>(
    cluster: &Cluster,
    placement: &'p Placement,
    part: u16,
    tried: &mut usize,
) -> Option<(&'p str, OwnerLink)> {
    let me = cluster.identity.node.as_str();
    let (i, owner, link) = placement
        .owners(part)
        .filter(|o| *o != me)
        .enumerate()
        .skip(*tried)
        .find_map(|(i, o)| cluster.links.link(o).map(|link| (i, o, link)))?;
    *tried = i + 1;
    Some((owner, link))
}

/// Sends `frame` (given its answer's id) to `owner` over `link` and waits
/// for its answer, up to the time a link takes to be declared dead.
pub(super) async fn ask(
    cluster: &Arc<Cluster>,
    to: (&str, (u64, Addr<Peer>)),
    frame: impl FnOnce(u64) -> PeerFrame,
) -> Result<Answer, NodeError> {
    ask_within(cluster, to, frame, cluster.config.peer_dead_after).await
}

/// [`ask`], waiting up to `deadline`.
pub(super) async fn ask_within(
    cluster: &Arc<Cluster>,
    (owner, (link, _)): (&str, (u64, Addr<Peer>)),
    frame: impl FnOnce(u64) -> PeerFrame,
    deadline: std::time::Duration,
) -> Result<Answer, NodeError> {
    let (id, answer) = cluster.expect_forward(owner, link);
    let _forget = Forget(cluster, id);
    cluster
        .links
        .stats
        .reads_forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + deadline;
    if send_in_turn(cluster, (owner, link), &frame(id), deadline)
        .await
        .is_err()
    {
        return Err(NodeError::NoOwner(format!("node '{owner}'")));
    }
    match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(answer)) => Ok(answer),
        // The link went down, or no answer in time.
        _ => Err(NodeError::NoOwner(format!("node '{owner}'"))),
    }
}

/// True if another owner may answer where this one failed: it could not
/// be reached, is catching up or stopping, or its store failed. A client's
/// error (a bad time, a compacted history) would be the same there.
pub(super) fn worth_another_owner(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::NoOwner(_) | NodeError::ShuttingDown | NodeError::Store(_)
    )
}

/// The error of a read no owner could answer.
fn no_owner(last: NodeError, what: &Path) -> NodeError {
    match last {
        // "Not ready" or "stopping" from every owner asked.
        NodeError::ShuttingDown | NodeError::NoOwner(_) => NodeError::NoOwner(what.to_string()),
        other => other,
    }
}

/// Forgets a forwarded request when its waiter ends (answered or gone).
pub(super) struct Forget<'a>(pub(super) &'a Cluster, pub(super) u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.forget_forward(self.1);
    }
}
