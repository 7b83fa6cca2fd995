//! The cluster from the web side: starting membership and the dialer it
//! uses, and `GET /cluster` (this node, the members with their state, each
//! partition's owners).

use std::sync::{Arc, Weak};

use actix::Actor;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use spread_actors::cluster::membership::{MemberView, Membership};
use spread_actors::cluster::placement::Placement;
use spread_actors::cluster::replicator::Replicator;
use spread_actors::Node;

use crate::error::ApiError;
use crate::AppState;

/// Starts the replication and the membership of `node` (if it is in a
/// cluster) on the current actix system, with a dialer that keeps a link to
/// every member it learns of (over TLS with `tls` for `https://`
/// addresses). Call it before the server takes peers' links.
pub fn start(node: &Node, tls: Option<Arc<rustls::ClientConfig>>) {
    let Some(cluster) = node.cluster() else {
        return;
    };
    let weak: Weak<_> = Arc::downgrade(cluster);
    let _ = cluster.dialer.set(Box::new(move |address| {
        if let Some(cluster) = weak.upgrade() {
            actix_web::rt::spawn(crate::dial::dial_forever(cluster, address, tls.clone()));
        }
    }));
    // On its own thread: its store reads (catching a peer up) must not
    // delay membership's probes or the HTTP workers. Known to the links
    // before any can come up: a frame for it (a peer's `Follow`) that found
    // none would be lost, and the peer would never ask again.
    let arbiter = actix::Arbiter::new();
    let (n, c) = (node.clone(), cluster.clone());
    let replicator =
        Replicator::start_in_arbiter(&arbiter.handle(), move |_| Replicator::new(n, c));
    let _ = cluster.replicator.set(replicator);
    Membership::new(cluster.clone(), cluster.identity.bump).start();
}

/// `PUT /cluster/faults` with `{"cut": ["<node>", …]}`: cuts this node's
/// links to those nodes until the next call (an empty list heals them);
/// `"merge_delay_ms": n` (optional, 0 when absent) has every batch of
/// replication merges, and every frame of watched values, wait that long
/// first (a slow receiver). Served only
/// with `--fault-injection` (tests of faults); `404` otherwise.
pub async fn faults(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(cluster) = state.node.cluster().filter(|c| c.config.fault_injection) else {
        return Err(ApiError::NotFound("/cluster/faults".into()));
    };
    #[derive(serde::Deserialize)]
    struct Faults {
        cut: Vec<String>,
        #[serde(default)]
        merge_delay_ms: u64,
    }
    let faults: Faults = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"cut\": [node ids], \"merge_delay_ms\": n}}: {e}"
        ))
    })?;
    log::warn!(
        "fault switch: links to {:?} cut, merges delayed {} ms",
        faults.cut,
        faults.merge_delay_ms
    );
    cluster.set_merge_delay(std::time::Duration::from_millis(faults.merge_delay_ms));
    cluster.cut_links(faults.cut);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize)]
struct ClusterJson<'a> {
    node: &'a str,
    cluster: Option<&'a str>,
    address: Option<&'a str>,
    members: Vec<MemberView>,
    replication: usize,
    partitions: Vec<PartitionJson<'a>>,
}

#[derive(Serialize)]
struct PartitionJson<'a> {
    partition: u16,
    owners: Vec<&'a str>,
    /// The merkle root of what this node holds of it (see `/digest`).
    root: Option<String>,
    /// The events this node holds of it.
    events: Option<u64>,
}

/// `GET /cluster`.
pub async fn cluster(state: web::Data<AppState>) -> HttpResponse {
    let node = &state.node;
    let me = node.node_id().to_string();
    let mut members = vec![MemberView {
        node: me.clone(),
        address: node
            .cluster()
            .map_or_else(String::new, |c| c.identity.address.clone()),
        state: "alive",
    }];
    if let Some(c) = node.cluster() {
        members.extend(c.members().into_values().filter(|m| m.node != me));
    }
    let layout = node.layout();
    // The placement this node routes by (computed once per membership
    // change); a single node owns everything.
    let placement = match node.cluster() {
        Some(c) => c.placement(),
        None => Arc::new(Placement::new(
            std::slice::from_ref(&me),
            layout.partitions(),
            1,
        )),
    };
    let partitions = (0..layout.partitions())
        .map(|p| {
            let root = node.partition_root(p as u16).ok();
            PartitionJson {
                partition: p as u16,
                owners: placement.owners(p as u16).collect(),
                root: root.map(|r| r.hex()),
                events: root.map(|r| r.count),
            }
        })
        .collect();
    let body = ClusterJson {
        node: &me,
        cluster: node.cluster().map(|c| c.identity.cluster.as_str()),
        address: node.cluster().map(|c| c.identity.address.as_str()),
        members,
        replication: placement.replication(),
        partitions,
    };
    HttpResponse::Ok().json(body)
}
