//! The handshake of a peer link: who each side is, and proof that both know
//! the cluster secret, which never crosses the wire.
//!
//! Both sides send a [`Hello`] at once, with a fresh random nonce; each
//! checks the other's (same protocol, cluster and partition layout, not
//! itself, fields of sane size). Then the side that dialed proves first: a
//! [`PeerFrame::Proof`], the BLAKE3 keyed hash, under a key derived from the
//! secret, of the acceptor's nonce, both node ids, the cluster and its role.
//! The acceptor checks it and only then proves in turn, over the dialer's
//! nonce; the dialer checks that, and the link is up at both ends.
//!
//! So a node never proves anything to a socket that has not proved first,
//! except as a dialer, to an address it chose (its `--join` list): nobody
//! can collect MACs by connecting, nor relay one node's proof to another (a
//! proof names who proves to whom and in which role, and covers a nonce
//! fresh per link). Frames after the handshake are not authenticated one by
//! one: between nodes on a network that is not trusted, peer links run
//! over TLS (`--join https://…`).

use crate::model::Layout;

use super::frame::{Hello, PeerFrame, NONCE_BYTES, PROTOCOL_VERSION};

/// Context string of the key derived from the cluster secret.
const KEY_CONTEXT: &str = "spread 2026-12 peer link proof key";

/// The key derived from a cluster secret.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    /// The key of `text` (the `--cluster-secret`).
    pub fn new(text: &str) -> Secret {
        Secret(blake3::derive_key(KEY_CONTEXT, text.as_bytes()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who this node is, as its `Hello` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster id.
    pub cluster: String,
    /// This node's id.
    pub node: String,
    /// Where other nodes reach it.
    pub address: String,
    /// Its partition layout.
    pub layout: Layout,
    /// Its membership bump (see `membership`).
    pub bump: u16,
    /// Its store's log incarnation.
    pub incarnation: String,
    /// The most it takes in flight unmerged from a peer (see `Hello`).
    pub window: u64,
}

/// The MAC by which `prover` shows `verifier` that it knows the secret,
/// over the challenge `verifier` sent.
pub fn proof(
    secret: &Secret,
    challenge: &[u8; NONCE_BYTES],
    prover: &str,
    verifier: &str,
    cluster: &str,
    role: Role,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&secret.0);
    h.update(challenge);
    let role = match role {
        Role::Dialer => "dialer",
        Role::Acceptor => "acceptor",
    };
    for part in [prover, verifier, cluster, role] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// Which side of a link a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It dialed: it proves first.
    Dialer,
    /// It accepted (`GET /peer`): it proves once the dialer has.
    Acceptor,
}

/// Longest node id, cluster id and address a `Hello` may carry.
const MAX_HELLO_FIELD: usize = 256;

/// `text` cut to `max` bytes and with control characters escaped, to be
/// logged or sent back safely.
pub fn sanitized(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end].escape_debug().collect();
    if end < text.len() {
        out.push('…');
    }
    out
}

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// For both logs.
    pub reason: String,
    /// Whether to tell the other side (not when it refused first).
    pub tell: bool,
}

impl Refusal {
    fn tell(reason: String) -> Refusal {
        Refusal { reason, tell: true }
    }
}

/// What a frame did to the handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not done yet; send this frame, if any.
    Continue(Option<PeerFrame>),
    /// The link is up, with this peer; send this frame first, if any.
    Up(Hello, Option<PeerFrame>),
}

/// One side of a handshake.
pub struct Handshake {
    me: Identity,
    secret: Secret,
    role: Role,
    nonce: [u8; NONCE_BYTES],
    peer: Option<Hello>,
}

impl Handshake {
    /// A handshake of `me` in `role`, and the `Hello` to send first.
    pub fn start(me: Identity, secret: Secret, role: Role) -> (Handshake, PeerFrame) {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let hello = PeerFrame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            cluster: me.cluster.clone(),
            node: me.node.clone(),
            address: me.address.clone(),
            partitions: me.layout.partitions(),
            shard_depth: me.layout.shard_depth() as u32,
            bump: me.bump,
            incarnation: me.incarnation.clone(),
            window: me.window,
            nonce,
        });
        let handshake = Handshake {
            me,
            secret,
            role,
            nonce,
            peer: None,
        };
        (handshake, hello)
    }

    /// The peer's `Hello`, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// The MAC this node sends: over the peer's nonce, in its own role.
    fn my_proof(&self, peer: &Hello) -> PeerFrame {
        let mac = proof(
            &self.secret,
            &peer.nonce,
            &self.me.node,
            &peer.node,
            &self.me.cluster,
            self.role,
        );
        PeerFrame::Proof { mac }
    }

    /// Takes the next frame of the other side.
    pub fn on_frame(&mut self, frame: PeerFrame) -> Result<Progress, Refusal> {
        match frame {
            PeerFrame::Hello(hello) => {
                if self.peer.is_some() {
                    return Err(Refusal::tell("a second hello".into()));
                }
                self.check(&hello)?;
                // The dialer proves first; the acceptor waits for it.
                let answer = (self.role == Role::Dialer).then(|| self.my_proof(&hello));
                self.peer = Some(hello);
                Ok(Progress::Continue(answer))
            }
            PeerFrame::Proof { mac } => {
                let Some(peer) = &self.peer else {
                    return Err(Refusal::tell("a proof before the hello".into()));
                };
                let theirs = match self.role {
                    Role::Dialer => Role::Acceptor,
                    Role::Acceptor => Role::Dialer,
                };
                let expected = proof(
                    &self.secret,
                    &self.nonce,
                    &peer.node,
                    &self.me.node,
                    &self.me.cluster,
                    theirs,
                );
                // blake3's Hash compares in constant time.
                if blake3::Hash::from(expected) != blake3::Hash::from(mac) {
                    return Err(Refusal::tell(format!(
                        "node '{}' does not prove the cluster secret (wrong --cluster-secret?)",
                        sanitized(&peer.node, MAX_HELLO_FIELD)
                    )));
                }
                let answer = (self.role == Role::Acceptor).then(|| self.my_proof(peer));
                Ok(Progress::Up(peer.clone(), answer))
            }
            PeerFrame::Refused { reason } => Err(Refusal {
                reason: format!("refused by the peer: {}", sanitized(&reason, 512)),
                tell: false,
            }),
            other => Err(Refusal::tell(format!(
                "a {} frame before the handshake",
                other.kind()
            ))),
        }
    }

    /// Refuses a peer this node cannot link with.
    fn check(&self, hello: &Hello) -> Result<(), Refusal> {
        for (what, field) in [
            ("node id", &hello.node),
            ("cluster id", &hello.cluster),
            ("address", &hello.address),
        ] {
            if field.len() > MAX_HELLO_FIELD || field.chars().any(char::is_control) {
                return Err(Refusal::tell(format!(
                    "a hello whose {what} is over {MAX_HELLO_FIELD} bytes or has control characters"
                )));
            }
        }
        if hello.protocol != PROTOCOL_VERSION {
            return Err(Refusal::tell(format!(
                "node '{}' speaks peer protocol {}, this node {PROTOCOL_VERSION}",
                hello.node, hello.protocol
            )));
        }
        if hello.cluster != self.me.cluster {
            return Err(Refusal::tell(format!(
                "node '{}' is in cluster '{}', this node in '{}'",
                hello.node, hello.cluster, self.me.cluster
            )));
        }
        let layout = (
            self.me.layout.partitions(),
            self.me.layout.shard_depth() as u32,
        );
        if (hello.partitions, hello.shard_depth) != layout {
            return Err(Refusal::tell(format!(
                "node '{}' has {} partitions at shard depth {}, this node {} at {}",
                hello.node, hello.partitions, hello.shard_depth, layout.0, layout.1
            )));
        }
        if hello.node == self.me.node {
            return Err(Refusal::tell(format!(
                "node '{}' is this node itself (or has its id)",
                hello.node
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn identity(node: &str, cluster: &str, partitions: u32) -> Identity {
        Identity {
            cluster: cluster.into(),
            node: node.into(),
            address: format!("{node}:1"),
            layout: Layout::new(partitions, 2).unwrap(),
            bump: 0,
            incarnation: "i".into(),
            window: 1 << 20,
        }
    }

    /// Runs a handshake between dialer `a` and acceptor `b`, delivering
    /// frames in order both ways, to its end on both sides: each side's
    /// peer, or why it stopped.
    fn link(
        a: (Identity, &str),
        b: (Identity, &str),
    ) -> (Result<Hello, String>, Result<Hello, String>) {
        let (ha, hello_a) = Handshake::start(a.0, Secret::new(a.1), Role::Dialer);
        let (hb, hello_b) = Handshake::start(b.0, Secret::new(b.1), Role::Acceptor);
        let mut sides = [ha, hb];
        let mut inbox: [VecDeque<PeerFrame>; 2] =
            [VecDeque::from([hello_b]), VecDeque::from([hello_a])];
        let mut done: [Option<Result<Hello, String>>; 2] = [None, None];
        while done.iter().any(Option::is_none) {
            let mut moved = false;
            for i in 0..2 {
                if done[i].is_some() {
                    continue;
                }
                let Some(frame) = inbox[i].pop_front() else {
                    continue;
                };
                moved = true;
                let out = match sides[i].on_frame(frame) {
                    Ok(Progress::Continue(out)) => out,
                    Ok(Progress::Up(peer, out)) => {
                        done[i] = Some(Ok(peer));
                        out
                    }
                    Err(r) => {
                        done[i] = Some(Err(r.reason.clone()));
                        r.tell.then_some(PeerFrame::Refused { reason: r.reason })
                    }
                };
                if let Some(frame) = out {
                    inbox[1 - i].push_back(frame);
                }
            }
            if !moved {
                break;
            }
        }
        let [a, b] = done;
        let stuck = || Err("stuck".to_string());
        (a.unwrap_or_else(stuck), b.unwrap_or_else(stuck))
    }

    #[test]
    fn nodes_with_the_same_secret_cluster_and_layout_link() {
        let (a, b) = link(
            (identity("a", "c", 64), "s3cret"),
            (identity("b", "c", 64), "s3cret"),
        );
        assert_eq!(a.unwrap().node, "b");
        assert_eq!(b.unwrap().node, "a");
    }

    #[test]
    fn a_wrong_secret_another_cluster_or_layout_is_refused_with_a_reason() {
        let (a, b) = link(
            (identity("a", "c", 64), "s3cret"),
            (identity("b", "c", 64), "other"),
        );
        assert!(b.unwrap_err().contains("does not prove the cluster secret"));
        assert!(a.unwrap_err().contains("refused by the peer"));
        let (a, b) = link((identity("a", "c", 64), "s"), (identity("b", "d", 64), "s"));
        assert!(a.unwrap_err().contains("in cluster 'd', this node in 'c'"));
        assert!(b.unwrap_err().contains("in cluster 'c', this node in 'd'"));
        let (a, _) = link((identity("a", "c", 64), "s"), (identity("b", "c", 32), "s"));
        assert!(a
            .unwrap_err()
            .contains("has 32 partitions at shard depth 2, this node 64"));
        let (a, _) = link((identity("a", "c", 64), "s"), (identity("a", "c", 64), "s"));
        assert!(a.unwrap_err().contains("itself"));
    }

    #[test]
    fn an_acceptor_proves_nothing_to_a_dialer_that_has_not_proved() {
        let secret = Secret::new("s");
        let (mut acceptor, _) = Handshake::start(identity("b", "c", 64), secret, Role::Acceptor);
        // A stranger's hello gets no proof back.
        let (_, stranger_hello) =
            Handshake::start(identity("a", "c", 64), Secret::new("guess"), Role::Dialer);
        assert_eq!(
            acceptor.on_frame(stranger_hello),
            Ok(Progress::Continue(None))
        );
        // A heartbeat cannot stand in for the handshake.
        assert!(acceptor
            .on_frame(PeerFrame::Heartbeat { sent_at: 1 })
            .is_err());
    }

    #[test]
    fn a_proof_is_bound_to_its_challenge_direction_and_role() {
        let secret = Secret::new("s");
        let nonce = [1; NONCE_BYTES];
        let p = proof(&secret, &nonce, "a", "b", "c", Role::Dialer);
        assert_ne!(
            p,
            proof(&secret, &[2; NONCE_BYTES], "a", "b", "c", Role::Dialer)
        );
        assert_ne!(
            p,
            proof(&secret, &nonce, "b", "a", "c", Role::Dialer),
            "not reflectable"
        );
        assert_ne!(
            p,
            proof(&secret, &nonce, "a", "b", "c", Role::Acceptor),
            "nor relayable"
        );
        assert_ne!(
            p,
            proof(&Secret::new("t"), &nonce, "a", "b", "c", Role::Dialer)
        );
        let (mut h, _) = Handshake::start(identity("a", "c", 64), secret, Role::Acceptor);
        let early = h.on_frame(PeerFrame::Proof { mac: p });
        assert!(early.unwrap_err().reason.contains("before the hello"));
    }

    #[test]
    fn hello_fields_are_bounded_and_logged_safely() {
        let (mut h, _) = Handshake::start(identity("a", "c", 64), Secret::new("s"), Role::Acceptor);
        let (_, hello) = Handshake::start(identity("b", "c", 64), Secret::new("s"), Role::Dialer);
        let PeerFrame::Hello(mut hello) = hello else {
            unreachable!()
        };
        hello.node = "x\ny".into();
        assert!(h
            .on_frame(PeerFrame::Hello(hello))
            .unwrap_err()
            .reason
            .contains("control"));
        assert_eq!(sanitized("a\nb", 10), "a\\nb");
        assert_eq!(sanitized("abcdef", 3), "abc…");
    }
}
