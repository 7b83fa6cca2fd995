//! Serving one watch: a session of this node subscribed to the watched
//! prefix, its items kept to the partitions the watcher asked of this node,
//! cut into frames of bounded size, paced by the link's send queue and by
//! what the watcher reports merged (a watcher that reads or merges slowly
//! makes the session wait, and one that stops makes it lag and end, never
//! a queue without bound), and `WatchReady`
//! once the snapshot is out and this node is caught up on those partitions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::serving::FRAME_BYTES;
use super::LINK_WAIT;
use crate::cluster::frame::PeerFrame;
use crate::cluster::frame::{wire_weight, FRAME_OVERHEAD};
use crate::cluster::peer::SendPaced;
use crate::cluster::wire::WireEvent;
use crate::cluster::Cluster;
use crate::session::StreamItem;
use crate::Node;

/// How often a snapshot that is out looks again whether this node has
/// caught up on the watched partitions.
const READY_RECHECK: Duration = Duration::from_millis(50);

/// Items taken from the session at once.
const CHUNK_ITEMS: usize = 256;

/// One watch served over one link.
pub(super) struct WatchStream {
    /// This node.
    pub node: Node,
    /// Its cluster.
    pub cluster: Arc<Cluster>,
    /// The watcher.
    pub to: String,
    /// The link the watch came over (a stream ends with it).
    pub link: u64,
    /// The prefix, as the watcher named it.
    pub prefix: String,
    /// The partitions asked of this node, sorted.
    pub parts: Vec<u16>,
    /// A frame waits while the link holds more than this.
    pub high_water: usize,
}

/// The link went down, or another replaced it.
struct Gone;

impl WatchStream {
    /// Streams `items` (the session's) until the session or the link ends,
    /// then says the watch ended if the link is still up.
    pub async fn run(self, items: impl Stream<Item = StreamItem> + Unpin) {
        if self.stream(items).await.is_ok() {
            let _ = self
                .send(
                    PeerFrame::WatchEnded {
                        prefix: self.prefix.clone(),
                    },
                    FRAME_OVERHEAD,
                )
                .await;
        }
    }

    async fn stream(&self, items: impl Stream<Item = StreamItem> + Unpin) -> Result<(), Gone> {
        let mut chunks = items.ready_chunks(CHUNK_ITEMS);
        let mut ready_pending = false;
        loop {
            let next = if ready_pending {
                match tokio::time::timeout(READY_RECHECK, chunks.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        if self.caught_up() {
                            self.send_ready().await?;
                            ready_pending = false;
                        }
                        continue;
                    }
                }
            } else {
                chunks.next().await
            };
            let Some(chunk) = next else {
                return Ok(());
            };
            let mut events = Vec::new();
            let mut bytes = 0;
            for item in chunk {
                match item {
                    StreamItem::Snapshot(c) | StreamItem::Update(c) => {
                        let part = self.node.partition_of(&c.event.path) as u16;
                        if self.parts.binary_search(&part).is_err() {
                            continue;
                        }
                        bytes += wire_weight(c.event.path.as_str(), c.event.value.as_deref());
                        events.push(WireEvent::from(&*c.event));
                        if bytes >= FRAME_BYTES {
                            self.send_events(std::mem::take(&mut events), bytes).await?;
                            bytes = 0;
                        }
                    }
                    StreamItem::Ready { .. } => {
                        self.send_events(std::mem::take(&mut events), bytes).await?;
                        bytes = 0;
                        ready_pending = true;
                    }
                    // The session ends (it lagged, or its snapshot failed):
                    // the watcher asks again.
                    StreamItem::Lagged | StreamItem::Failed { .. } => {
                        self.send_events(events, bytes).await?;
                        return Ok(());
                    }
                    // (A watch plays nothing back and never ends.)
                    StreamItem::Reset { .. }
                    | StreamItem::Ping { .. }
                    | StreamItem::Played(_)
                    | StreamItem::End { .. } => {}
                }
            }
            self.send_events(events, bytes).await?;
            if ready_pending && self.caught_up() {
                self.send_ready().await?;
                ready_pending = false;
            }
        }
    }

    /// True if this node answers reads of every watched partition.
    fn caught_up(&self) -> bool {
        let placement = self.cluster.placement();
        self.parts
            .iter()
            .all(|&p| self.cluster.serves_reads(&placement, p))
    }

    async fn send_ready(&self) -> Result<(), Gone> {
        self.send(
            PeerFrame::WatchReady {
                prefix: self.prefix.clone(),
                parts: self.parts.clone(),
            },
            FRAME_OVERHEAD,
        )
        .await
    }

    async fn send_events(&self, events: Vec<WireEvent>, bytes: usize) -> Result<(), Gone> {
        if events.is_empty() {
            return Ok(());
        }
        self.cluster
            .links
            .stats
            .events_sent
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.send(
            PeerFrame::Watched {
                prefix: self.prefix.clone(),
                events,
            },
            bytes + FRAME_OVERHEAD,
        )
        .await
    }

    /// Hands `frame` to the link once it holds no more than the high
    /// water mark and the watcher has merged what it was sent but a
    /// window's worth.
    async fn send(&self, frame: PeerFrame, weight: usize) -> Result<(), Gone> {
        loop {
            let (id, peer, queue) = self.cluster.links.link_and_queue(&self.to).ok_or(Gone)?;
            if id != self.link {
                return Err(Gone);
            }
            if queue.room(self.high_water).is_some() {
                queue.sent_unmerged(frame.merge_weight());
                queue.hand(weight);
                peer.do_send(SendPaced { frame, weight });
                return Ok(());
            }
            tokio::time::sleep(LINK_WAIT).await;
        }
    }
}
