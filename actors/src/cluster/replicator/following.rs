//! The streams a node follows: for each co-owner, the partitions they
//! share, each with a cursor in that peer's log (`<incarnation>:<seq>`,
//! like a client's), kept in the store so a restarted node resumes where it
//! stopped instead of starting over.
//!
//! Frames from one peer are merged in arrival order, a batch at a time:
//! whatever arrived while one batch merged is the next batch (so merges
//! group into commits under load). A cursor moves only after everything
//! before it is merged, durably as configured.

use std::collections::{BTreeSet, HashMap};

use crate::cluster::frame::PeerFrame;
use crate::error::NodeError;
use crate::Node;

/// The store's key for the cursor of `part` in `peer`'s log.
fn cursor_key(peer: &str, part: u16) -> String {
    format!("follow/{peer}/{part}")
}

#[derive(Debug, Default)]
struct Cursor {
    /// Everything up to here in the peer's log is merged (`None`: nothing
    /// known; follow from a snapshot).
    seq: Option<u64>,
    /// A snapshot is coming; once merged, the cursor is this.
    resetting: Option<u64>,
    /// Moved since it was last saved.
    dirty: bool,
}

/// What a frame does to cursors once merged.
#[derive(Debug)]
pub(super) enum Step {
    Reset { part: u16, head: u64 },
    SnapshotDone { part: u16 },
    Through { part: u16, seq: u64 },
}

impl Step {
    /// What `frame` does to cursors, if anything.
    pub fn of(frame: &PeerFrame) -> Option<Step> {
        match frame {
            PeerFrame::Reset { part, head } => Some(Step::Reset {
                part: *part,
                head: *head,
            }),
            PeerFrame::Snapshot {
                part, done: true, ..
            } => Some(Step::SnapshotDone { part: *part }),
            PeerFrame::Events { part, through, .. } => Some(Step::Through {
                part: *part,
                seq: *through,
            }),
            _ => None,
        }
    }
}

/// Partitions to start following (each from its cursor, if any) and to
/// stop following.
pub(super) struct Changes {
    pub start: Vec<(u16, Option<u64>)>,
    pub stop: Vec<u16>,
}

struct Followed {
    link: u64,
    incarnation: String,
    parts: HashMap<u16, Cursor>,
    queue: Vec<PeerFrame>,
    busy: bool,
}

/// The streams followed, by peer node id.
#[derive(Default)]
pub(super) struct Following {
    peers: HashMap<String, Followed>,
}

impl Following {
    /// Brings the partitions followed from `peer` (over link `link`, whose
    /// log is `incarnation`) to `desired`: answers those to start, each
    /// from its saved cursor (when it is of that incarnation), and those to
    /// stop.
    pub fn diff(
        &mut self,
        local: &Node,
        peer: &str,
        link: u64,
        incarnation: &str,
        desired: &BTreeSet<u16>,
    ) -> Result<Changes, NodeError> {
        if self.peers.get(peer).is_some_and(|f| f.link != link) {
            self.drop_peer(local, peer)?;
        }
        let followed = self
            .peers
            .entry(peer.to_string())
            .or_insert_with(|| Followed {
                link,
                incarnation: incarnation.to_string(),
                parts: HashMap::new(),
                queue: Vec::new(),
                busy: false,
            });
        let mut start = Vec::new();
        for &part in desired {
            if followed.parts.contains_key(&part) {
                continue;
            }
            let saved = local
                .meta(&cursor_key(peer, part))?
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|text| {
                    let (inc, seq) = text.rsplit_once(':')?;
                    (inc == incarnation).then(|| seq.parse::<u64>().ok())?
                });
            followed.parts.insert(
                part,
                Cursor {
                    seq: saved,
                    ..Cursor::default()
                },
            );
            start.push((part, saved));
        }
        let stop: Vec<u16> = followed
            .parts
            .keys()
            .filter(|p| !desired.contains(p))
            .copied()
            .collect();
        for part in &stop {
            if let Some(cursor) = followed.parts.remove(part) {
                save(local, peer, &followed.incarnation, *part, &cursor)?;
            }
        }
        Ok(Changes { start, stop })
    }

    /// Partitions followed now.
    pub fn streams(&self) -> usize {
        self.peers.values().map(|f| f.parts.len()).sum()
    }

    /// The link to `peer` is gone: saves its cursors and forgets it.
    pub fn drop_link(&mut self, local: &Node, peer: &str, link: u64) -> Result<(), NodeError> {
        if self.peers.get(peer).is_some_and(|f| f.link == link) {
            self.drop_peer(local, peer)?;
        }
        Ok(())
    }

    fn drop_peer(&mut self, local: &Node, peer: &str) -> Result<(), NodeError> {
        if let Some(f) = self.peers.remove(peer) {
            for (part, cursor) in &f.parts {
                save(local, peer, &f.incarnation, *part, cursor)?;
            }
        }
        Ok(())
    }

    /// Queues a frame of `peer`'s stream (over `link`); false if that is
    /// not the link followed.
    pub fn enqueue(&mut self, peer: &str, link: u64, frame: PeerFrame) -> bool {
        match self.peers.get_mut(peer).filter(|f| f.link == link) {
            Some(f) => {
                f.queue.push(frame);
                true
            }
            None => false,
        }
    }

    /// The frames to merge next from `peer`, unless a batch is merging.
    pub fn take_batch(&mut self, peer: &str) -> Option<(u64, Vec<PeerFrame>)> {
        let f = self.peers.get_mut(peer)?;
        if f.busy || f.queue.is_empty() {
            return None;
        }
        f.busy = true;
        Some((f.link, std::mem::take(&mut f.queue)))
    }

    /// A batch from `peer` over `link` is merged: its steps move cursors.
    pub fn merged(&mut self, peer: &str, link: u64, steps: &[Step]) {
        let Some(f) = self.peers.get_mut(peer).filter(|f| f.link == link) else {
            return;
        };
        f.busy = false;
        for step in steps {
            match *step {
                Step::Reset { part, head } => {
                    if let Some(c) = f.parts.get_mut(&part) {
                        c.resetting = Some(head);
                    }
                }
                Step::SnapshotDone { part } => {
                    if let Some(c) = f.parts.get_mut(&part) {
                        if let Some(head) = c.resetting.take() {
                            c.seq = Some(head);
                            c.dirty = true;
                        }
                    }
                }
                Step::Through { part, seq } => {
                    if let Some(c) = f.parts.get_mut(&part) {
                        if c.resetting.is_none() && c.seq.is_none_or(|s| s < seq) {
                            c.seq = Some(seq);
                            c.dirty = true;
                        }
                    }
                }
            }
        }
    }

    /// A batch failed: the link is to be closed (the stream resumes from
    /// the saved cursors on the next one).
    pub fn failed(&mut self, peer: &str, link: u64) {
        if let Some(f) = self.peers.get_mut(peer).filter(|f| f.link == link) {
            f.busy = false;
            f.queue.clear();
        }
    }

    /// Saves the cursors that moved.
    pub fn save_dirty(&mut self, local: &Node) -> Result<(), NodeError> {
        for (peer, f) in &mut self.peers {
            for (part, cursor) in &mut f.parts {
                if cursor.dirty {
                    save(local, peer, &f.incarnation, *part, cursor)?;
                    cursor.dirty = false;
                }
            }
        }
        Ok(())
    }
}

fn save(
    local: &Node,
    peer: &str,
    incarnation: &str,
    part: u16,
    cursor: &Cursor,
) -> Result<(), NodeError> {
    if let Some(seq) = cursor.seq {
        local.set_meta(
            &cursor_key(peer, part),
            format!("{incarnation}:{seq}").as_bytes(),
        )?;
    }
    Ok(())
}
