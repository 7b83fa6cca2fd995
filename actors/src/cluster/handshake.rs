//! The handshake of a peer link: who each side is, and proof that both know
//! the cluster secret, which never crosses the wire.
//!
//! Both sides send a [`Hello`] at once, with a fresh random nonce. On the
//! other's `Hello`, a side checks that it speaks the same protocol, belongs
//! to the same cluster and has the same partition layout, then answers a
//! [`PeerFrame::Proof`]: the BLAKE3 keyed hash, under a key derived from the
//! secret, of the other's nonce and both node ids. On the other's proof it
//! checks the MAC of its own nonce; then the link is up. A replayed proof is
//! worthless (the nonce is new per link), and the MAC names who proves to
//! whom, so it cannot be reflected back.

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
}

/// The MAC by which `prover` shows `verifier` that it knows the secret,
/// over the challenge `verifier` sent.
pub fn proof(
    secret: &Secret,
    challenge: &[u8; NONCE_BYTES],
    prover: &str,
    verifier: &str,
    cluster: &str,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&secret.0);
    h.update(challenge);
    for part in [prover, verifier, cluster] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    *h.finalize().as_bytes()
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
    /// The link is up, with this peer.
    Up(Hello),
}

/// One side of a handshake.
pub struct Handshake {
    me: Identity,
    secret: Secret,
    nonce: [u8; NONCE_BYTES],
    peer: Option<Hello>,
}

impl Handshake {
    /// A handshake of `me`, and the `Hello` to send first.
    pub fn start(me: Identity, secret: Secret) -> (Handshake, PeerFrame) {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let hello = PeerFrame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            cluster: me.cluster.clone(),
            node: me.node.clone(),
            address: me.address.clone(),
            partitions: me.layout.partitions(),
            shard_depth: me.layout.shard_depth() as u32,
            nonce,
        });
        let handshake = Handshake {
            me,
            secret,
            nonce,
            peer: None,
        };
        (handshake, hello)
    }

    /// The peer's `Hello`, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Takes the next frame of the other side.
    pub fn on_frame(&mut self, frame: PeerFrame) -> Result<Progress, Refusal> {
        match frame {
            PeerFrame::Hello(hello) => {
                if self.peer.is_some() {
                    return Err(Refusal::tell("a second hello".into()));
                }
                self.check(&hello)?;
                let mac = proof(
                    &self.secret,
                    &hello.nonce,
                    &self.me.node,
                    &hello.node,
                    &self.me.cluster,
                );
                self.peer = Some(hello);
                Ok(Progress::Continue(Some(PeerFrame::Proof { mac })))
            }
            PeerFrame::Proof { mac } => {
                let Some(peer) = &self.peer else {
                    return Err(Refusal::tell("a proof before the hello".into()));
                };
                let expected = proof(
                    &self.secret,
                    &self.nonce,
                    &peer.node,
                    &self.me.node,
                    &self.me.cluster,
                );
                // blake3's Hash compares in constant time.
                if blake3::Hash::from(expected) != blake3::Hash::from(mac) {
                    return Err(Refusal::tell(format!(
                        "node '{}' does not prove the cluster secret (wrong --cluster-secret?)",
                        peer.node
                    )));
                }
                Ok(Progress::Up(peer.clone()))
            }
            PeerFrame::Refused { reason } => Err(Refusal {
                reason: format!("refused by the peer: {reason}"),
                tell: false,
            }),
            PeerFrame::Heartbeat { .. } => Ok(Progress::Continue(None)),
            #[allow(unreachable_patterns)]
            other => Err(Refusal::tell(format!(
                "a {} frame before the handshake",
                other.kind()
            ))),
        }
    }

    /// Refuses a peer this node cannot link with.
    fn check(&self, hello: &Hello) -> Result<(), Refusal> {
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

    fn identity(node: &str, cluster: &str, partitions: u32) -> Identity {
        Identity {
            cluster: cluster.into(),
            node: node.into(),
            address: format!("{node}:1"),
            layout: Layout::new(partitions, 2).unwrap(),
        }
    }

    /// Runs a handshake between `a` and `b` to its end on both sides.
    fn link(
        a: (Identity, &str),
        b: (Identity, &str),
    ) -> (Result<Hello, Refusal>, Result<Hello, Refusal>) {
        let (mut ha, hello_a) = Handshake::start(a.0, Secret::new(a.1));
        let (mut hb, hello_b) = Handshake::start(b.0, Secret::new(b.1));
        // Each side takes the other's hello, then the other's answer.
        let step = |h: &mut Handshake, f: PeerFrame| h.on_frame(f);
        let a1 = step(&mut ha, hello_b);
        let b1 = step(&mut hb, hello_a);
        let finish = |h: &mut Handshake, answer: Result<Progress, Refusal>| match answer {
            Ok(Progress::Continue(Some(frame))) => match h.on_frame(frame) {
                Ok(Progress::Up(peer)) => Ok(peer),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(r) => Err(r),
            },
            Err(r) => Err(Refusal {
                reason: format!("refused by the peer: {}", r.reason),
                tell: false,
            }),
            Ok(other) => panic!("unexpected {other:?}"),
        };
        let a_done = finish(&mut ha, b1);
        let b_done = finish(&mut hb, a1);
        (a_done, b_done)
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
        assert!(a.unwrap_err().reason.contains("cluster secret"));
        assert!(b.unwrap_err().reason.contains("cluster secret"));
        let (a, _) = link((identity("a", "c", 64), "s"), (identity("b", "d", 64), "s"));
        assert!(a
            .unwrap_err()
            .reason
            .contains("in cluster 'c', this node in 'd'"));
        let (a, _) = link((identity("a", "c", 64), "s"), (identity("b", "c", 32), "s"));
        assert!(a
            .unwrap_err()
            .reason
            .contains("64 partitions at shard depth 2, this node 32"));
        let (a, _) = link((identity("a", "c", 64), "s"), (identity("a", "c", 64), "s"));
        assert!(a.unwrap_err().reason.contains("itself"));
    }

    #[test]
    fn a_proof_is_bound_to_its_challenge_and_direction() {
        let secret = Secret::new("s");
        let nonce = [1; NONCE_BYTES];
        let p = proof(&secret, &nonce, "a", "b", "c");
        assert_ne!(p, proof(&secret, &[2; NONCE_BYTES], "a", "b", "c"));
        assert_ne!(p, proof(&secret, &nonce, "b", "a", "c"), "not reflectable");
        assert_ne!(p, proof(&Secret::new("t"), &nonce, "a", "b", "c"));
        // Out of order frames are refused.
        let (mut h, _) = Handshake::start(identity("a", "c", 64), secret);
        let early = h.on_frame(PeerFrame::Proof { mac: p });
        assert!(early.unwrap_err().reason.contains("before the hello"));
    }
}
