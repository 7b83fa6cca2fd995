//! The cluster: peer links between nodes (and, as it grows, membership,
//! placement and replication).
//!
//! - `frame`: the typed frames of a link, in MessagePack;
//! - `handshake`: identity, cluster, layout and proof of the cluster secret;
//! - `peer`: the `Peer` actor, one per link (handshake, heartbeats, closing
//!   with a reason), over a socket the web layer owns;
//! - `links`: the links that are up, and their counters;
//! - `backoff`: jittered exponential backoff for dialers;
//! - `placement`: the owners of each partition, by rendezvous hashing over
//!   the live members.

pub mod backoff;
pub mod frame;
pub mod handshake;
pub mod links;
pub mod peer;
pub mod placement;

use crate::config::ClusterConfig;
use crate::model::Layout;

pub use handshake::{Identity, Secret};
pub use links::{Direction, LinkInfo, LinkReport, LinkStats, Links};
pub use peer::{FromSocket, Peer, Shut, SocketClosed, ToSocket};

/// This node's side of the cluster: who it is, the secret, its links.
pub struct Cluster {
    /// As the node's `Hello` says.
    pub identity: Identity,
    /// The key of the cluster secret.
    pub secret: Secret,
    /// Links that are up.
    pub links: Links,
    /// The settings it was made with.
    pub config: ClusterConfig,
}

impl Cluster {
    /// The cluster side of node `node` with `layout`.
    pub fn new(config: ClusterConfig, node: &str, layout: Layout) -> Cluster {
        Cluster {
            identity: Identity {
                cluster: config.id.clone(),
                node: node.to_string(),
                address: config.address.clone(),
                layout,
            },
            secret: Secret::new(&config.secret),
            links: Links::default(),
            config,
        }
    }
}
