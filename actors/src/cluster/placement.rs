//! Placement: which members own each partition. A partition's owners are
//! the `replication` live members with the highest rendezvous score
//! (BLAKE3 of the node id and the partition), best first; the first decides
//! conditional writes. Every node computes the same owners from the same
//! member list, and a change of members moves only the partitions whose
//! top `replication` it changes: a new member takes about `r / n` of the
//! partition slots, a departed one gives up its own.

use std::collections::BTreeMap;

/// The owners of every partition, for one member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    members: Vec<String>,
    replication: usize,
    /// Per partition, indices into `members`, best first.
    owners: Vec<Vec<u32>>,
}

/// The rendezvous score of `node` for partition `part`.
pub fn score(node: &str, part: u16) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(node.len() as u64).to_le_bytes());
    h.update(node.as_bytes());
    h.update(&part.to_le_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

impl Placement {
    /// The placement of `partitions` partitions over `members` (live node
    /// ids, in any order, duplicates ignored), `replication` owners each
    /// (capped by the member count).
    pub fn new(members: &[String], partitions: u32, replication: usize) -> Placement {
        let mut members: Vec<String> = members.to_vec();
        members.sort();
        members.dedup();
        let r = replication.min(members.len());
        let owners = (0..partitions)
            .map(|part| {
                let mut scored: Vec<(u64, u32)> = members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (score(m, part as u16), i as u32))
                    .collect();
                // Highest score first; ties (never in practice) by id order.
                scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.into_iter().take(r).map(|(_, i)| i).collect()
            })
            .collect();
        Placement {
            members,
            replication: r,
            owners,
        }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Owners per partition (the replication, capped by the members).
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// The owners of `part`, best first (none if out of range).
    pub fn owners(&self, part: u16) -> impl Iterator<Item = &str> {
        self.owners
            .get(usize::from(part))
            .into_iter()
            .flatten()
            .map(|&i| self.members[i as usize].as_str())
    }

    /// True if `node` owns `part`.
    pub fn owns(&self, node: &str, part: u16) -> bool {
        self.owners(part).any(|o| o == node)
    }

    /// How many partitions each member owns.
    pub fn load(&self) -> BTreeMap<&str, usize> {
        let mut load: BTreeMap<&str, usize> =
            self.members.iter().map(|m| (m.as_str(), 0)).collect();
        for owners in &self.owners {
            for &i in owners {
                *load.entry(self.members[i as usize].as_str()).or_default() += 1;
            }
        }
        load
    }

    /// The partitions whose owner set differs between `self` and `other`.
    pub fn moved(&self, other: &Placement) -> usize {
        (0..self.owners.len().min(other.owners.len()))
            .filter(|&p| {
                let mut a: Vec<&str> = self.owners(p as u16).collect();
                let mut b: Vec<&str> = other.owners(p as u16).collect();
                a.sort_unstable();
                b.sort_unstable();
                a != b
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node-{i:02}")).collect()
    }

    #[test]
    fn owners_are_the_top_scores_and_the_same_whatever_the_member_order() {
        let members = nodes(5);
        let mut shuffled = members.clone();
        shuffled.reverse();
        let a = Placement::new(&members, 64, 3);
        assert_eq!(a, Placement::new(&shuffled, 64, 3));
        for part in 0..64u16 {
            let owners: Vec<&str> = a.owners(part).collect();
            assert_eq!(owners.len(), 3);
            let mut best: Vec<&String> = members.iter().collect();
            best.sort_by_key(|m| std::cmp::Reverse(score(m, part)));
            let best: Vec<&str> = best.iter().take(3).map(|m| m.as_str()).collect();
            assert_eq!(owners, best, "partition {part}");
        }
        // Capped by the members.
        let two = Placement::new(&nodes(2), 8, 3);
        assert_eq!(two.replication(), 2);
        assert!(two.owns("node-01", 0) && two.owns("node-02", 0));
    }

    #[test]
    fn sixteen_nodes_share_1024_partitions_evenly_and_a_17th_moves_few() {
        let (partitions, r) = (1024u32, 3usize);
        let sixteen = Placement::new(&nodes(16), partitions, r);
        let load = sixteen.load();
        let mean = (partitions as usize * r) as f64 / 16.0;
        let (min, max) = (*load.values().min().unwrap(), *load.values().max().unwrap());
        println!(
            "partitions per node, 16 nodes, r = 3: {load:?} (mean {mean}, min {min}, max {max})"
        );
        assert!(max as f64 <= 1.25 * mean, "max {max} over 1.25 x {mean}");
        assert!(min as f64 >= 0.75 * mean, "min {min} under 0.75 x {mean}");
        let seventeen = Placement::new(&nodes(17), partitions, r);
        let moved = sixteen.moved(&seventeen);
        let bound = 1.2 * r as f64 / 17.0 * partitions as f64;
        println!("a 17th node moves {moved} of {partitions} partitions (bound {bound:.0})");
        assert!(moved as f64 <= bound, "{moved} moved, bound {bound}");
        // Only partitions the new node joined changed.
        for part in 0..partitions as u16 {
            let before: Vec<&str> = sixteen.owners(part).collect();
            let after: Vec<&str> = seventeen.owners(part).collect();
            if before != after {
                assert!(seventeen.owns("node-17", part), "partition {part}");
            }
        }
    }
}
