//! The cluster: peer links between nodes (and, as it grows, membership,
//! placement and replication).
//!
//! - `frame`: the typed frames of a link, in MessagePack;
//! - `handshake`: identity, cluster, layout and proof of the cluster secret;
//! - `peer`: the `Peer` actor, one per link (handshake, heartbeats, closing
//!   with a reason), over a socket the web layer owns;
//! - `links`: the links that are up, and their counters;
//! - `membership`: SWIM (foca) over the links: members alive, suspect,
//!   dead;
//! - `backoff`: jittered exponential backoff for dialers;
//! - `placement`: the owners of each partition, by rendezvous hashing over
//!   the live members;
//! - `wire`: events, forwarded writes and their answers on a link;
//! - `replicator`: owners following each other's partition logs (streams
//!   served and followed, acks, forwarded writes);
//! - `route`: where a client's write is coordinated, and what it waits for;
//! - `fetch`: reads of values, listings and histories answered where they
//!   are held;
//! - `in_turn`: clients' requests and their answers over a link, sent only
//!   while its queue has room;
//! - `differ`: anti-entropy sessions comparing merkle trees with a peer.

pub mod backoff;
pub mod differ;
pub mod fetch;
pub mod frame;
pub mod handshake;
pub mod in_turn;
pub mod links;
pub mod membership;
pub mod peer;
pub mod placement;
pub mod replicator;
pub mod route;
pub mod sendq;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix::Addr;

use crate::config::ClusterConfig;
use crate::model::Layout;

pub use frame::{MAX_FRAME_BYTES, MAX_VALUE_BYTES};
pub use handshake::{Identity, Secret};
pub use links::{Direction, LinkInfo, LinkReport, LinkStats, Links};
pub use peer::{FromSocket, Peer, Shut, SocketClosed};
pub use sendq::{Outgoing, SendGauge, SendQueue, SendStream};

/// Asks the web layer to keep a link to an address (see `web::dial`).
pub type Dialer = Box<dyn Fn(String) + Send + Sync>;

/// This node's side of the cluster: who it is, the secret, its links, its
/// view of the members.
pub struct Cluster {
    /// As the node's `Hello` says.
    pub identity: Identity,
    /// The key of the cluster secret.
    pub secret: Secret,
    /// Links that are up.
    pub links: Links,
    /// The settings it was made with.
    pub config: ClusterConfig,
    /// Keeps links to members this node learns of (set once, by whoever
    /// can dial: the web layer).
    pub dialer: OnceLock<Dialer>,
    /// The membership actor, once started.
    pub membership: OnceLock<Addr<membership::Membership>>,
    /// Nodes whose links the fault switch cuts (see
    /// `ClusterConfig::fault_injection`).
    faults: Mutex<std::collections::HashSet<String>>,
    /// The fault switch's delay before each batch of replication merges
    /// and each frame of watched values (ms; tests of a slow receiver).
    merge_delay_ms: AtomicU64,
    /// Partitions owned here that have caught up with a co-owner since
    /// this node became their owner (see `mark_caught_up`).
    caught_up: Mutex<Arc<std::collections::HashSet<u16>>>,
    /// The replicator, once started.
    pub replicator: OnceLock<Addr<replicator::Replicator>>,
    /// Anti-entropy sessions running, and their counters.
    pub differs: differ::Differs,
    /// Counters of the copies nobody needs here.
    pub copies: replicator::CopyStats,
    members: Mutex<BTreeMap<String, membership::MemberView>>,
    placement: Mutex<Arc<placement::Placement>>,
    forwards: Mutex<HashMap<u64, Forward>>,
    next_forward: AtomicU64,
}

/// A write forwarded to another node, waiting for its answer.
struct Forward {
    node: String,
    /// The link it was sent on.
    link: u64,
    answer: tokio::sync::oneshot::Sender<Answer>,
}

/// The answer to a forwarded request.
#[derive(Debug)]
pub enum Answer {
    /// To a forwarded write.
    Write(Result<wire::WireReport, wire::WireError>),
    /// To a forwarded read.
    Read(Result<Option<wire::WireEvent>, wire::WireError>),
    /// To a forwarded listing.
    List(Result<wire::WirePage, wire::WireError>),
    /// To a forwarded read of a history.
    History(Result<wire::WireHistory, wire::WireError>),
    /// To events of an import handed to an owner.
    Import(Result<crate::node::ImportReport, wire::WireError>),
}

impl Cluster {
    /// The cluster side of node `node` with `layout`, in its `bump`-th life
    /// (raised at each start: see `membership`).
    pub fn new(
        config: ClusterConfig,
        node: &str,
        layout: Layout,
        bump: u16,
        incarnation: &str,
    ) -> Cluster {
        let rate = config.anti_entropy_rate;
        Cluster {
            identity: Identity {
                cluster: config.id.clone(),
                node: node.to_string(),
                address: config.address.clone(),
                layout,
                bump,
                incarnation: incarnation.to_string(),
                window: (config.send_queue_bytes / 4) as u64,
            },
            secret: Secret::new(&config.secret),
            links: Links::default(),
            config,
            dialer: OnceLock::new(),
            membership: OnceLock::new(),
            replicator: OnceLock::new(),
            differs: differ::Differs::new(rate),
            copies: replicator::CopyStats::default(),
            faults: Mutex::default(),
            caught_up: Mutex::default(),
            merge_delay_ms: AtomicU64::new(0),
            members: Mutex::default(),
            placement: Mutex::new(Arc::new(placement::Placement::new(
                &[node.to_string()],
                layout.partitions(),
                1,
            ))),
            forwards: Mutex::default(),
            next_forward: AtomicU64::new(1),
        }
    }

    /// Marks the partitions whose stream from a co-owner has caught up
    /// (the replicator does). A partition stays caught up while this node
    /// owns it, when that stream ends too: it held what its co-owner held,
    /// and misses only what that co-owner takes while they are apart (a
    /// dead co-owner, nothing; a cut link, its writes until anti-entropy
    /// brings them), which a reader at any one owner may miss anyway (LWW
    /// replication, not linearizable). Readers keep an owner to ask when a
    /// co-owner dies, instead of none until membership moves the
    /// partition. It must catch up again once it stops owning the
    /// partition (see `set_members`) or restarts.
    pub fn mark_caught_up(&self, parts: std::collections::HashSet<u16>) {
        let placement = self.placement.lock().unwrap_or_else(|p| p.into_inner());
        let mut caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        let me = self.identity.node.as_str();
        let fresh: Vec<u16> = parts
            .into_iter()
            .filter(|p| !caught_up.contains(p) && placement.owns(me, *p))
            .collect();
        if !fresh.is_empty() {
            let mut all = (**caught_up).clone();
            all.extend(fresh);
            *caught_up = Arc::new(all);
        }
    }

    /// True if this node answers reads of partition `part` as an owner:
    /// it owns it, and either owns it alone or has caught up with a
    /// co-owner's log of it (a new owner does not count for reads until
    /// then, so a path never seems to vanish or go back while it moves).
    pub fn serves_reads(&self, placement: &placement::Placement, part: u16) -> bool {
        let me = self.identity.node.as_str();
        placement.owns(me, part)
            && (placement.owners(part).count() == 1
                || self
                    .caught_up
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&part))
    }

    /// Cuts this node's links to `nodes` (and lets every other link be):
    /// the fault switch of tests.
    pub fn cut_links(&self, nodes: impl IntoIterator<Item = String>) {
        let cut: std::collections::HashSet<String> = nodes.into_iter().collect();
        for node in &cut {
            if let Some(peer) = self.links.peer(node) {
                peer.do_send(peer::Shut("cut by the fault switch".into()));
            }
        }
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = cut;
    }

    /// Has every batch of replication merges wait `delay` first: the fault
    /// switch's slow follower (tests only).
    pub fn set_merge_delay(&self, delay: std::time::Duration) {
        self.merge_delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Waits the fault switch's delay, if any, before a batch of
    /// replication merges or a frame of watched values is merged.
    pub async fn delay_merge(&self) {
        let ms = self
            .merge_delay_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// True if the fault switch cuts links to `node`.
    pub fn is_cut(&self, node: &str) -> bool {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(node)
    }

    /// The owners of every partition over the live members (this node and
    /// every member not dead), as of the last membership change.
    pub fn placement(&self) -> Arc<placement::Placement> {
        self.placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers a request (a write or a read) forwarded to `node` over link `link`: its id, and
    /// where its answer arrives (see [`Cluster::answer_forward`]).
    pub fn expect_forward(
        &self,
        node: &str,
        link: u64,
    ) -> (u64, tokio::sync::oneshot::Receiver<Answer>) {
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Forward {
                    node: node.to_string(),
                    link,
                    answer,
                },
            );
        (id, rx)
    }

    /// Hands the answer of forwarded write `id` to its writer (from `node`
    /// only: another node cannot answer it).
    pub fn answer_forward(&self, node: &str, id: u64, answer: Answer) {
        let mut forwards = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        if forwards.get(&id).is_some_and(|f| f.node == node) {
            if let Some(f) = forwards.remove(&id) {
                let _ = f.answer.send(answer);
            }
        }
    }

    /// Forgets forwarded write `id` (its writer gave up).
    pub fn forget_forward(&self, id: u64) {
        self.forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Fails every write forwarded over link `link` (it went down: a new
    /// link to the same node would never carry their answers).
    pub fn fail_forwards(&self, link: u64) {
        self.forwards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, f| f.link != link);
    }

    /// The members this node knows of, by node id (itself not included).
    pub fn members(&self) -> BTreeMap<String, membership::MemberView> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the member list (the membership actor does).
    pub fn set_members(&self, members: BTreeMap<String, membership::MemberView>) {
        let mut live: Vec<String> = members
            .values()
            .filter(|m| m.state != "dead")
            .map(|m| m.node.clone())
            .collect();
        live.push(self.identity.node.clone());
        live.sort();
        live.dedup();
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
        let mut placement = self.placement.lock().unwrap_or_else(|p| p.into_inner());
        if placement.members() != live.as_slice()
            || placement.replication() != self.config.replication.min(live.len())
        {
            *placement = Arc::new(placement::Placement::new(
                &live,
                self.identity.layout.partitions(),
                self.config.replication,
            ));
            // A partition this node no longer owns must be caught up again
            // if it comes back.
            let me = self.identity.node.as_str();
            let mut caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
            if caught_up.iter().any(|p| !placement.owns(me, *p)) {
                let kept = caught_up
                    .iter()
                    .copied()
                    .filter(|p| placement.owns(me, *p))
                    .collect();
                *caught_up = Arc::new(kept);
            }
        }
    }
}
