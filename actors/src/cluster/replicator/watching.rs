//! Interest across nodes: a node whose clients watch a prefix it does not
//! own (wholly) watches it at owners, and keeps what they stream in its own
//! store, so its clients' reads and streams of that prefix are local.
//!
//! The watcher picks, for each partition the prefix covers and it does not
//! own, the first owner it has a link to, and asks each owner picked once
//! (`Watch`). The owner serves the watch as a client subscription of its
//! own (a snapshot, then every change), which is how replication and
//! client streams share one mechanism. Watches follow links and placement:
//! checked at each change of interest and a few times a second.

use std::collections::{BTreeSet, HashMap};

use actix::SpawnHandle;

use crate::cluster::placement::Placement;
use crate::cluster::Cluster;
use crate::model::{Layout, Path};

/// The watches this node asked for: by prefix, the owners asked and over
/// which link.
#[derive(Default)]
pub(super) struct Watches {
    asked: HashMap<Path, HashMap<String, u64>>,
}

/// What to ask and to stop asking.
#[derive(Default, Debug)]
pub(super) struct WatchChanges {
    /// (owner, prefix) to watch.
    pub watch: Vec<(String, Path)>,
    /// (owner, prefix) to stop watching.
    pub unwatch: Vec<(String, Path)>,
}

impl Watches {
    /// Brings the watches to what `watched` (the prefixes this node's
    /// clients watch) needs under `placement`, with the links up now.
    pub fn refresh(
        &mut self,
        cluster: &Cluster,
        layout: Layout,
        placement: &Placement,
        watched: &[Path],
    ) -> WatchChanges {
        let me = cluster.identity.node.as_str();
        let mut changes = WatchChanges::default();
        let wanted: BTreeSet<&Path> = watched.iter().collect();
        self.asked.retain(|prefix, owners| {
            let keep = wanted.contains(prefix);
            if !keep {
                for owner in owners.keys() {
                    changes.unwatch.push((owner.clone(), prefix.clone()));
                }
            }
            keep
        });
        for prefix in watched {
            let mut desired: HashMap<String, u64> = HashMap::new();
            for part in layout.covering(prefix).iter() {
                if placement.owns(me, part) {
                    continue;
                }
                let asked = self.asked.get(prefix);
                // Keep an owner already asked while its link lasts.
                let kept = placement.owners(part).find_map(|o| {
                    let link = *asked?.get(o)?;
                    (cluster.links.link(o)?.0 == link).then(|| (o.to_string(), link))
                });
                let chosen = kept.or_else(|| {
                    placement
                        .owners(part)
                        .find_map(|o| cluster.links.link(o).map(|(id, _)| (o.to_string(), id)))
                });
                if let Some((owner, link)) = chosen {
                    desired.insert(owner, link);
                }
            }
            let asked = self.asked.entry(prefix.clone()).or_default();
            for (owner, link) in &desired {
                if asked.get(owner) != Some(link) {
                    changes.watch.push((owner.clone(), prefix.clone()));
                }
            }
            for owner in asked.keys() {
                if !desired.contains_key(owner) {
                    changes.unwatch.push((owner.clone(), prefix.clone()));
                }
            }
            *asked = desired;
        }
        changes
    }

    /// `owner` ended its stream of `prefix`: ask again at the next refresh.
    pub fn ended(&mut self, owner: &str, prefix: &Path) {
        if let Some(owners) = self.asked.get_mut(prefix) {
            owners.remove(owner);
        }
    }

    /// Watches asked for now.
    pub fn count(&self) -> usize {
        self.asked.values().map(HashMap::len).sum()
    }
}

/// The watches this node serves: by (watcher, prefix), the link and the
/// task streaming it.
#[derive(Default)]
pub(super) struct Served {
    /// (link, task, a number naming this serving of it).
    pub streams: HashMap<(String, Path), (u64, SpawnHandle, u64)>,
}
