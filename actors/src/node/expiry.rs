//! Expiry: when a value's time to live runs out, the node writes its expiry,
//! so that subscribers see it as a delete, once, and the history says when
//! the value ended.
//!
//! The expiry of event `e` (expiring at `x`) is a tombstone every replica
//! makes alike: version `(e.time + 1 µs, e.node)`, `expires_at = x`, no
//! author, so the same event whoever makes it (merged twice, it is
//! `existing`; anti-entropy sees one event). Its version follows `e`'s at
//! once, so any write made after `e` — before or after `x`, wherever it
//! arrives first — is newer and wins (LWW); an expiry never deletes a value
//! that replaced the one that expired. Reads of the past know it takes
//! effect at `x`, not at its version's time.
//!
//! The store indexes values with a time to live by expiry time as they are
//! committed (namespace `X`); a thread of the node looks at the index every
//! [`TICK`] and merges the expiry of each value due that is still its
//! path's value, then drops the index key. So an expiry is written once,
//! even across restarts: one that came due while the node was down is
//! written when it starts, and a restarted node does not write it again.
//!
//! A path whose value expired is then queued for compaction to reclaim
//! its space: once the expiry has left the change log, the history before
//! it goes, whatever `--history-keep-*` says (`Store::reclaim`); reads of
//! a time before the value expired then answer `Compacted`.

use std::sync::Weak;
use std::time::Duration;

use super::{Inner, Node};
use crate::error::NodeError;
use crate::model::{version::wall_micros, Event, Version};

/// How often the index is looked at: an expiry reaches subscribers at most
/// this late.
pub const TICK: Duration = Duration::from_millis(200);
/// Values expired per look at most (the rest, at the next).
const PER_TICK: usize = 4096;

/// The expiry of `e` (which has a value and an expiry time).
pub fn expiry_of(e: &Event) -> Option<Event> {
    let at = e.expires_at?;
    e.value.as_ref()?;
    Some(Event {
        path: e.path.clone(),
        version: Version::new(e.version.time.checked_add(1)?, e.version.node.clone()),
        value: None,
        content_type: None,
        expires_at: Some(at),
        author: None,
    })
}

/// True for an expiry (a tombstone with an expiry time).
pub fn is_expiry(e: &Event) -> bool {
    e.value.is_none() && e.expires_at.is_some()
}

/// Starts the thread that writes expiries for the node behind `inner`; it
/// ends once the node is gone.
pub(super) fn start(inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("spread-expiry".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            else {
                log::error!("expiries: no runtime; values expire but subscribers are not told");
                return;
            };
            loop {
                std::thread::sleep(TICK);
                let Some(inner) = inner.upgrade() else { return };
                let node = Node { inner };
                if let Err(e) = rt.block_on(node.expire_due()) {
                    if matches!(e, NodeError::ShuttingDown) {
                        return;
                    }
                    log::warn!("expiries: {e}");
                }
            }
        })
        .map(|_| ())
}

impl Node {
    /// Writes the expiry of every value due by now that is still its
    /// path's value; answers how many.
    pub(crate) async fn expire_due(&self) -> Result<usize, NodeError> {
        let store = self.inner.store.clone();
        let now = wall_micros();
        let due = store.expiries_due(now, PER_TICK)?;
        let mut written = 0;
        let mut handled = Vec::with_capacity(due.len());
        let mut reclaim = Vec::new();
        for d in due {
            let latest = store.latest(&d.path)?;
            let expired = latest.as_ref().filter(|s| {
                s.event.version == d.version
                    && s.digest == d.digest
                    && s.event.expires_at.is_some_and(|at| at <= now)
            });
            if let Some(expiry) = expired.and_then(|s| expiry_of(&s.event)) {
                // Through the partition, as any event: its caches stay
                // right and subscribers see it.
                self.merge(expiry).await?;
                written += 1;
                reclaim.push(d.path);
            } else if latest.is_some_and(|s| {
                // Its expiry came first from another owner.
                is_expiry(&s.event)
                    && s.event.version.node == d.version.node
                    && s.event.version.time == d.version.time.saturating_add(1)
            }) {
                reclaim.push(d.path);
            }
            handled.push(d.key);
        }
        // Queued before the expiry keys go: a crash between the two makes
        // the next start queue them again, never forget them.
        for path in &reclaim {
            store.queue_reclaim(path)?;
        }
        store.remove_expiries(handled)?;
        Ok(written)
    }
}
