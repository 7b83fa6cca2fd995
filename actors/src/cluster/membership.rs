//! Membership: who is in the cluster and whether they are alive, by SWIM
//! (the `foca` crate, which does no I/O of its own) carried over the peer
//! links as `Gossip` frames.
//!
//! Members go `alive` → `suspect` → `dead` (foca's `Down`). A member is
//! known by its node id; its identity also carries its address (so others
//! can dial it) and a *bump*, raised when it restarts or is declared down
//! while alive, so that a restarted node rejoins under its id and wins over
//! its old identity. A node that learns of a member it has no link with
//! dials it. A node stopping on SIGTERM leaves the cluster, so the others
//! mark it dead at once.
//!
//! SWIM sends nothing to a member it holds dead, so two nodes that
//! declared each other dead (both paused, or cut apart, longer than the
//! suspicion) would stay apart while their link is up. So a node announces
//! itself to every linked peer it does not see alive, twice per peer
//! timeout, and to every linked peer when it rejoins under a new bump: the
//! peer that holds it dead answers that it is (foca's `TurnUndead`), the
//! node rejoins under a higher bump, and the next announce is heard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec};
use rand_swim::{rngs::SmallRng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Cluster;

/// A member's identity in the SWIM protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its node id (what identifies it).
    pub node: String,
    /// Where it is reached.
    pub address: String,
    /// Raised each time it comes back (restart, or refuting its death).
    pub bump: u16,
}

impl foca::Identity for Member {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.node.clone()
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        // Serial number arithmetic: the more recent bump wins.
        let ahead = self.bump.wrapping_sub(other.bump);
        ahead != 0 && ahead < u16::MAX / 2
    }
}

/// A member as `GET /cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Its node id.
    pub node: String,
    /// Where it is reached.
    pub address: String,
    /// `alive`, `suspect` or `dead`.
    pub state: &'static str,
}

type Swim = Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// SWIM bytes that arrived on a peer link.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GossipIn(pub Vec<u8>);

/// A peer link came up with `member`: tell it about this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LinkedWith(pub Member);

/// Leave the cluster (the node is stopping); answers once the farewell is
/// handed to the links.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// The membership of this node.
pub struct Membership {
    cluster: Arc<Cluster>,
    swim: Swim,
    runtime: AccumulatingRuntime<Member>,
    /// Addresses handed to the dialer already.
    dialed: HashSet<String>,
    /// By node id, the identity each linked peer gave when its link came
    /// up.
    linked: HashMap<String, Member>,
}

/// SWIM settings from the link settings: probe twice per heartbeat, expect
/// an answer within a fifth of it, suspect for two heartbeats before
/// `dead` (at the defaults, 16 nodes all see a killed one dead within 5 s).
fn swim_config(heartbeat: Duration) -> foca::Config {
    let mut config = foca::Config::new_lan(std::num::NonZeroU32::new(16).expect("16"));
    config.probe_period = heartbeat / 2;
    config.probe_rtt = heartbeat / 5;
    config.suspect_to_down_after = heartbeat * 2;
    config.max_packet_size = std::num::NonZeroUsize::new(64 << 10).expect("64 KiB");
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: heartbeat / 5,
        num_members: std::num::NonZeroUsize::new(3).expect("3"),
    });
    config
}

impl Membership {
    /// The membership of `cluster`'s node, with its identity `bump` (raise
    /// it at each start so the node rejoins under its id).
    pub fn new(cluster: Arc<Cluster>, bump: u16) -> Membership {
        let me = Member {
            node: cluster.identity.node.clone(),
            address: cluster.identity.address.clone(),
            bump,
        };
        let swim = Foca::new(
            me,
            swim_config(cluster.config.heartbeat_interval),
            SmallRng::seed_from_u64(rand::random()),
            PostcardCodec,
        );
        Membership {
            cluster,
            swim,
            runtime: AccumulatingRuntime::new(),
            dialed: HashSet::new(),
            linked: HashMap::new(),
        }
    }

    /// Carries out what SWIM asked: frames to send, timers, notifications.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        while let Some((to, data)) = self.runtime.to_send() {
            match self.cluster.links.peer(&to.node) {
                Some(peer) => peer.do_send(super::peer::SendGossip(data.to_vec())),
                None => self.dial(&to.address),
            }
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            ctx.run_later(after, move |this, ctx| {
                if let Err(e) = this.swim.handle_timer(timer, &mut this.runtime) {
                    log::debug!("membership timer: {e}");
                }
                this.drain(ctx);
            });
        }
        let mut changes = 0;
        let mut rejoined = false;
        while let Some(note) = self.runtime.to_notify() {
            match note {
                OwnedNotification::MemberUp(m) => {
                    log::info!("member '{}' ({}) is up", m.node, m.address);
                    changes += 1;
                    // Linked now, not when SWIM first has a frame for it:
                    // what it sends a member with no link is lost (a
                    // node's join, too), so late links slow dissemination.
                    if self.cluster.links.peer(&m.node).is_none() {
                        self.dial(&m.address);
                    }
                }
                OwnedNotification::MemberDown(m) => {
                    log::warn!("member '{}' ({}) is dead", m.node, m.address);
                    changes += 1;
                }
                OwnedNotification::Rename(old, new) => {
                    log::info!(
                        "member '{}' came back (bump {} → {})",
                        new.node,
                        old.bump,
                        new.bump
                    );
                    changes += 1;
                }
                OwnedNotification::Rejoin(me) => {
                    log::warn!("this node was declared dead; it rejoins (bump {})", me.bump);
                    rejoined = true;
                }
                _ => {}
            }
        }
        self.cluster
            .links
            .stats
            .membership_changes
            .fetch_add(changes, std::sync::atomic::Ordering::Relaxed);
        // Suspicion changes no notification: publish the view every time.
        self.publish();
        if rejoined {
            self.announce_to_linked(false, ctx);
        }
    }

    /// Announces this node to the linked peers (`only_unseen`: those SWIM
    /// does not list alive or suspect).
    fn announce_to_linked(&mut self, only_unseen: bool, ctx: &mut Context<Self>) {
        let seen: HashSet<String> = if only_unseen {
            self.swim
                .iter_membership_state()
                .filter(|m| m.state() != foca::State::Down)
                .map(|m| m.id().node.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let to: Vec<Member> = self
            .cluster
            .links
            .list()
            .into_iter()
            .filter(|l| !seen.contains(&l.node))
            .filter_map(|l| self.linked.get(&l.node).cloned())
            .collect();
        if to.is_empty() {
            return;
        }
        for member in to {
            if let Err(e) = self.swim.announce(member, &mut self.runtime) {
                log::debug!("membership: announce: {e}");
            }
        }
        self.drain(ctx);
    }

    /// Hands `address` to the dialer, once.
    fn dial(&mut self, address: &str) {
        if address == self.cluster.identity.address || !self.dialed.insert(address.to_string()) {
            return;
        }
        if let Some(dial) = self.cluster.dialer.get() {
            dial(address.to_string());
        }
    }

    /// Copies the member list where `/cluster` and placement read it.
    fn publish(&self) {
        let mut view = BTreeMap::new();
        for m in self.swim.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                foca::State::Alive => "alive",
                foca::State::Suspect => "suspect",
                foca::State::Down => "dead",
            };
            view.insert(
                id.node.clone(),
                MemberView {
                    node: id.node.clone(),
                    address: id.address.clone(),
                    state,
                },
            );
        }
        self.cluster.set_members(view);
    }
}

impl Actor for Membership {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _ = self.cluster.membership.set(ctx.address());
        for address in self.cluster.config.join.clone() {
            self.dial(&address);
        }
        // Gossip and probing are driven by timers foca asks for; start them.
        if let Err(e) = self.swim.gossip(&mut self.runtime) {
            log::debug!("membership: {e}");
        }
        self.drain(ctx);
        ctx.run_interval(self.cluster.config.peer_dead_after / 2, |this, ctx| {
            this.announce_to_linked(true, ctx)
        });
    }
}

impl Handler<GossipIn> for Membership {
    type Result = ();

    fn handle(&mut self, msg: GossipIn, ctx: &mut Self::Context) {
        if let Err(e) = self.swim.handle_data(&msg.0, &mut self.runtime) {
            log::debug!("membership: a gossip frame foca refused: {e}");
        }
        self.drain(ctx);
    }
}

impl Handler<LinkedWith> for Membership {
    type Result = ();

    fn handle(&mut self, msg: LinkedWith, ctx: &mut Self::Context) {
        self.dialed.insert(msg.0.address.clone());
        self.linked.insert(msg.0.node.clone(), msg.0.clone());
        if let Err(e) = self.swim.announce(msg.0, &mut self.runtime) {
            log::debug!("membership: announce: {e}");
        }
        self.drain(ctx);
    }
}

impl Handler<Leave> for Membership {
    type Result = ();

    fn handle(&mut self, _: Leave, ctx: &mut Self::Context) {
        if let Err(e) = self.swim.leave_cluster(&mut self.runtime) {
            log::debug!("membership: leave: {e}");
        }
        self.drain(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_member_that_came_back_wins_over_its_old_identity() {
        let old = Member {
            node: "a".into(),
            address: "h:1".into(),
            bump: 7,
        };
        let new = old.renew().unwrap();
        assert_eq!(new.bump, 8);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert!(!old.win_addr_conflict(&old));
        let wrapped = Member {
            bump: 0,
            ..old.clone()
        };
        let before = Member {
            bump: u16::MAX,
            ..old
        };
        assert!(wrapped.win_addr_conflict(&before), "bumps wrap");
    }
}
