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
//!   the live members.

pub mod backoff;
pub mod frame;
pub mod handshake;
pub mod links;
pub mod membership;
pub mod peer;
pub mod placement;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use actix::Addr;

use crate::config::ClusterConfig;
use crate::model::Layout;

pub use handshake::{Identity, Secret};
pub use links::{Direction, LinkInfo, LinkReport, LinkStats, Links};
pub use peer::{FromSocket, Peer, Shut, SocketClosed, ToSocket};

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
    members: Mutex<BTreeMap<String, membership::MemberView>>,
}

impl Cluster {
    /// The cluster side of node `node` with `layout`, in its `bump`-th life
    /// (raised at each start: see `membership`).
    pub fn new(config: ClusterConfig, node: &str, layout: Layout, bump: u16) -> Cluster {
        Cluster {
            identity: Identity {
                cluster: config.id.clone(),
                node: node.to_string(),
                address: config.address.clone(),
                layout,
                bump,
            },
            secret: Secret::new(&config.secret),
            links: Links::default(),
            config,
            dialer: OnceLock::new(),
            membership: OnceLock::new(),
            members: Mutex::default(),
        }
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
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
    }
}
