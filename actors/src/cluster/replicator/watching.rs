//! Interest across nodes: a node whose clients watch a prefix it does not
//! own (wholly) watches it at owners, and keeps what they stream in its own
//! store, so its clients' reads and streams of that prefix are local.
//!
//! The watcher picks, for each partition the prefix covers and it does not
//! own, the first owner it has a link to, and asks each owner picked once
//! for the partitions it was picked for (`Watch`), so each partition comes
//! from one owner. The owner serves the watch as a client subscription of
//! its own (a snapshot, `WatchReady`, then every change), which is how
//! replication and client streams share one mechanism. The copy of a
//! prefix is complete, and the interest in it marked ready, once every
//! partition it covers is owned here (and caught up) or its owner's
//! snapshot has been kept. Watches follow links and placement: checked at
//! each change of interest and a few times a second.

use std::collections::{BTreeSet, HashMap};

use actix::SpawnHandle;

use crate::cluster::placement::Placement;
use crate::cluster::Cluster;
use crate::model::{Layout, Path};

/// One owner asked for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Asked {
    /// The link the watch was asked over.
    link: u64,
    /// The partitions asked of this owner.
    parts: Vec<u16>,
    /// Its snapshot of them has been kept.
    ready: bool,
}

/// The watches this node asked for: by prefix, the owners asked.
#[derive(Default)]
pub(super) struct Watches {
    asked: HashMap<Path, HashMap<String, Asked>>,
}

/// What to ask and to stop asking, and which copies are complete.
#[derive(Default, Debug)]
pub(super) struct WatchChanges {
    /// (owner, prefix, partitions) to watch.
    pub watch: Vec<(String, Path, Vec<u16>)>,
    /// (owner, prefix) to stop watching.
    pub unwatch: Vec<(String, Path)>,
    /// Prefixes whose copy here is complete.
    pub complete: Vec<Path>,
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
            let asked = self.asked.entry(prefix.clone()).or_default();
            let mut complete = true;
            let mut desired: HashMap<String, (u64, Vec<u16>)> = HashMap::new();
            for part in layout.covering(prefix).iter() {
                if placement.owns(me, part) {
                    complete &= cluster.serves_reads(placement, part);
                    continue;
                }
                // Keep the owner already asked for this partition while its
                // link lasts.
                let kept = placement.owners(part).find_map(|o| {
                    let a = asked.get(o)?;
                    let (link, _) = cluster.links.link(o)?;
                    (link == a.link && a.parts.contains(&part)).then(|| (o.to_string(), link))
                });
                let chosen = kept.or_else(|| {
                    placement
                        .owners(part)
                        .find_map(|o| cluster.links.link(o).map(|(id, _)| (o.to_string(), id)))
                });
                match chosen {
                    Some((owner, link)) => {
                        desired.entry(owner).or_insert((link, vec![])).1.push(part)
                    }
                    None => complete = false,
                }
            }
            for owner in asked.keys() {
                if !desired.contains_key(owner) {
                    changes.unwatch.push((owner.clone(), prefix.clone()));
                }
            }
            asked.retain(|owner, _| desired.contains_key(owner));
            for (owner, (link, parts)) in desired {
                let same = asked
                    .get(&owner)
                    .is_some_and(|a| a.link == link && a.parts == parts);
                if !same {
                    changes
                        .watch
                        .push((owner.clone(), prefix.clone(), parts.clone()));
                    asked.insert(
                        owner,
                        Asked {
                            link,
                            parts,
                            ready: false,
                        },
                    );
                }
            }
            if complete && asked.values().all(|a| a.ready) {
                changes.complete.push(prefix.clone());
            }
        }
        changes
    }

    /// True if this node asked `owner` over `link` for `prefix` (what else
    /// arrives is not kept).
    pub fn asked(&self, owner: &str, link: u64, prefix: &Path) -> bool {
        self.asked
            .get(prefix)
            .and_then(|owners| owners.get(owner))
            .is_some_and(|a| a.link == link)
    }

    /// `owner`'s snapshot of `parts` under `prefix`, sent over `link`, has
    /// been kept. (A readiness of an earlier watch, of other partitions or
    /// over another link, counts for nothing.)
    pub fn ready(&mut self, owner: &str, link: u64, prefix: &Path, parts: &[u16]) {
        if let Some(a) = self.asked.get_mut(prefix).and_then(|o| o.get_mut(owner)) {
            if a.link == link && a.parts == parts {
                a.ready = true;
            }
        }
    }

    /// `owner` ended its stream of `prefix`: ask again at the next refresh.
    pub fn ended(&mut self, owner: &str, prefix: &Path) {
        if let Some(owners) = self.asked.get_mut(prefix) {
            owners.remove(owner);
        }
    }

    /// The prefixes asked of `owner` over `link` whose copy here is
    /// complete, each with the partitions asked: what a periodic
    /// anti-entropy sweep with that owner compares.
    pub fn ready_at(&self, owner: &str, link: u64) -> Vec<(Path, Vec<u16>)> {
        let mut out: Vec<(Path, Vec<u16>)> = self
            .asked
            .iter()
            .filter_map(|(prefix, owners)| {
                let a = owners.get(owner)?;
                (a.link == link && a.ready).then(|| (prefix.clone(), a.parts.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// Watches asked for now.
    pub fn count(&self) -> usize {
        self.asked.values().map(HashMap::len).sum()
    }
}

/// A watch this node serves.
pub(super) struct Serve {
    /// The link it is served over.
    pub link: u64,
    /// The task streaming it.
    pub task: SpawnHandle,
    /// A number naming this serving of it.
    pub id: u64,
}

/// The watches this node serves: by (watcher, prefix).
#[derive(Default)]
pub(super) struct Served {
    /// The watches.
    pub streams: HashMap<(String, Path), Serve>,
}
