//! [`StreamItem`]: what a session streams to its client, in order.

use std::sync::Arc;

use crate::engine::hub::Change;
use crate::model::cursor::Cursor;
use crate::model::Path;

/// What a session streams to its client, in order.
#[derive(Clone, Debug)]
pub enum StreamItem {
    /// A current value under a new subscription's prefix (before `Ready`).
    Snapshot(Arc<Change>),
    /// The subscription to `prefix` is up to date as of `cursor`.
    Ready {
        /// The subscription.
        prefix: Path,
        /// The resume point.
        cursor: Cursor,
    },
    /// A change (live, or replayed after a resume cursor).
    Update(Arc<Change>),
    /// An event of history sent by a playback, in version order (a late
    /// one, which never was the value, too). It has no resume point: a
    /// playback cut short starts again.
    Played(Arc<Change>),
    /// A bounded playback of `prefix` has sent everything up to its end:
    /// nothing more comes for it.
    End {
        /// The subscription.
        prefix: Path,
    },
    /// The resume cursor for `prefix` could not be honoured: drop what you
    /// hold under it; a fresh snapshot follows.
    Reset {
        /// The subscription.
        prefix: Path,
    },
    /// Nothing happened for a while; everything up to `cursor` was delivered.
    Ping {
        /// The log head.
        cursor: Cursor,
    },
    /// The client read too slowly; the session ends here. Resume from the
    /// last cursor received.
    Lagged,
    /// The store failed while sending `prefix`'s snapshot: what was sent of
    /// it is not the whole state, and the session ends here (never with a
    /// `Ready` that would claim it is). The client may retry.
    Failed {
        /// The subscription.
        prefix: Path,
        /// What failed.
        detail: String,
    },
}

impl StreamItem {
    /// Bytes this item is counted as in the outbox budget.
    pub(super) fn weight(&self) -> usize {
        const OVERHEAD: usize = 96;
        match self {
            StreamItem::Snapshot(c) | StreamItem::Update(c) | StreamItem::Played(c) => {
                OVERHEAD
                    + c.event.path.as_str().len()
                    + c.event.value.as_ref().map_or(0, |v| v.len())
            }
            _ => OVERHEAD,
        }
    }
}
