//! Reads as a client of the node asks them, wherever the data is: a
//! path's value, a prefix's listing, a path's history. On a single node
//! they read the store; in a cluster they are answered where the data is
//! held (see `cluster::fetch`). And the local reads an owner answers a
//! peer with, and whether this node holds a whole prefix (what reading it
//! from the own store, as a playback does, needs).

use super::{HistoryRange, ListPage, Node};
use crate::cluster::fetch::{self, ListAsk};
use crate::error::NodeError;
use crate::model::{AsOf, Digest, Event, Path, Version};
use crate::store::Stored;

/// Value bytes an owner's answer to a peer's history read holds, about (at
/// least one event): well under a peer frame's limit.
pub const HISTORY_ANSWER_BYTES: usize = 8 << 20;

impl Node {
    /// The value of `path` now, or at `at`: in a cluster, read where it is
    /// held (an owner, or this node's copy of a watched prefix for the
    /// present), as `GET /raw` reads it.
    pub async fn read(&self, path: &Path, at: Option<&AsOf>) -> Result<Option<Event>, NodeError> {
        match self.cluster() {
            Some(cluster) => fetch::read(self, cluster, path, at).await,
            None => {
                let stored = match at {
                    Some(at) => self.get_as_of(path, at)?,
                    None => self.get_path(path)?,
                };
                Ok(stored.map(|s| s.event))
            }
        }
    }

    /// A page of the live paths of `prefix` after `after` (as they stood at
    /// `at`, µs, when given), at most `limit`, as `GET /list` answers it: in
    /// a cluster, each partition under the prefix is read at an owner and
    /// the pages merged, so any node lists the whole prefix.
    pub async fn read_list(
        &self,
        prefix: &Path,
        after: Option<String>,
        limit: usize,
        at: Option<u64>,
    ) -> Result<ListPage, NodeError> {
        self.read_pages(
            prefix,
            ListAsk {
                after,
                limit,
                at,
                deleted: false,
            },
        )
        .await
    }

    /// [`Node::read_list`] of every path of `prefix` with a latest event,
    /// deleted ones too (their entries have size 0): every path that ever
    /// had a value there.
    pub async fn read_paths(
        &self,
        prefix: &Path,
        after: Option<String>,
        limit: usize,
    ) -> Result<ListPage, NodeError> {
        self.read_pages(
            prefix,
            ListAsk {
                after,
                limit,
                at: None,
                deleted: true,
            },
        )
        .await
    }

    async fn read_pages(&self, prefix: &Path, ask: ListAsk) -> Result<ListPage, NodeError> {
        match self.cluster() {
            Some(cluster) => fetch::list(self, cluster, prefix, ask).await,
            None => {
                let (node, prefix) = (self.clone(), prefix.clone());
                tokio::task::spawn_blocking(move || node.list_page(&prefix, None, &ask))
                    .await
                    .map_err(|_| NodeError::ShuttingDown)?
            }
        }
    }

    /// Up to `range.limit` events of the history of `path` (those ordered
    /// after `after`, the last event a reader has, when given), about
    /// [`HISTORY_ANSWER_BYTES`] of values at most (at least one event), as
    /// `GET /history` reads it: in a cluster, at an owner. True with them
    /// when the read stopped at the byte bound before its limit: more may
    /// follow.
    pub async fn read_history(
        &self,
        path: &Path,
        range: HistoryRange,
        after: Option<(Version, Digest)>,
    ) -> Result<(Vec<Stored>, bool), NodeError> {
        match self.cluster() {
            Some(cluster) => fetch::history(self, cluster, path, range, after).await,
            None => self.history_off_thread(path, range, after).await,
        }
    }

    /// [`Node::history_bounded`] to [`HISTORY_ANSWER_BYTES`], on a
    /// blocking thread.
    pub(crate) async fn history_off_thread(
        &self,
        path: &Path,
        range: HistoryRange,
        after: Option<(Version, Digest)>,
    ) -> Result<(Vec<Stored>, bool), NodeError> {
        let (node, path) = (self.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            node.history_bounded(&path, range, HISTORY_ANSWER_BYTES, after.as_ref())
        })
        .await
        .map_err(|_| NodeError::ShuttingDown)?
    }

    /// Fails ([`NodeError::NotHeld`]) unless this node's store holds every
    /// path under `prefix`, history included: a
    /// single node always does; in a cluster, only an owner (caught up) of
    /// every partition the prefix covers.
    pub fn holds(&self, prefix: &Path) -> Result<(), NodeError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        let placement = cluster.placement();
        for part in self.inner.layout.covering(prefix).iter() {
            if !cluster.serves_reads(&placement, part) {
                return Err(NodeError::NotHeld {
                    prefix: prefix.to_string(),
                    part,
                    owners: placement.owners(part).collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(())
    }

    /// This node's own page of `prefix` (see [`ListAsk`]) over the
    /// partitions `parts` (sorted; all when `None`).
    pub fn list_page(
        &self,
        prefix: &Path,
        parts: Option<&[u16]>,
        ask: &ListAsk,
    ) -> Result<ListPage, NodeError> {
        if !ask.deleted {
            let listing = self.list_in(prefix, parts, ask.after.as_deref(), ask.limit, ask.at)?;
            return Ok(ListPage::from(&listing));
        }
        let scanned =
            self.inner
                .store
                .scan_latest_in(prefix, parts, ask.after.as_deref(), ask.limit)?;
        let next = (scanned.len() == ask.limit)
            .then(|| scanned.last().map(|s| s.event.path.as_str().to_string()))
            .flatten();
        Ok(ListPage::from(&super::Listing {
            entries: scanned,
            next,
        }))
    }

    /// [`Node::history_of`] that stops once the values read reach
    /// `max_bytes` (at least one event is read), and that starts after
    /// event `after` (a version and digest) when given, whatever
    /// `range.from`; true with the events when it stopped at `max_bytes`
    /// before `range.limit`.
    pub fn history_bounded(
        &self,
        path: &Path,
        range: HistoryRange,
        max_bytes: usize,
        after: Option<&(Version, Digest)>,
    ) -> Result<(Vec<Stored>, bool), NodeError> {
        let store = &self.inner.store;
        let events = match after {
            Some((version, digest)) => {
                store.history_after(path, (version, digest), range.to, range.limit, max_bytes)?
            }
            None => store.history_within(path, range.from, range.to, range.limit, max_bytes)?,
        };
        // After the read (see `get_as_of`). A step after an event already
        // read checks from that event's time: compaction may have dropped
        // what follows it since the last step (a 410 rather than a gap).
        let from = after.map_or(range.from, |(version, _)| version.time);
        if from > 0 {
            self.check_floor(path, from)?;
        }
        let bytes: usize = events
            .iter()
            .map(|s| s.event.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        let cut = events.len() < range.limit && bytes >= max_bytes;
        Ok((events, cut))
    }
}
