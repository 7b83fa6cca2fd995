//! [`Change`]: a committed change of a path's latest value, as every
//! subscriber receives it, with its wire encodings made once and shared.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::model::cursor::Cursor;
use crate::model::Event;

/// Number of cached encodings a change can carry (one per wire format).
pub const FRAME_SLOTS: usize = 4;

/// A committed change of a path's latest value, shared by every subscriber.
pub struct Change {
    /// The event that became the latest value.
    pub event: Arc<Event>,
    /// Its node-local seq.
    pub seq: u64,
    /// The resume cursor after it.
    pub cursor: Cursor,
    frames: [OnceLock<Bytes>; FRAME_SLOTS],
}

impl Change {
    /// Wraps an event committed at `seq`.
    pub fn new(event: Arc<Event>, seq: u64, incarnation: &Arc<str>) -> Change {
        Change {
            event,
            seq,
            cursor: Cursor {
                incarnation: incarnation.clone(),
                seq,
            },
            frames: Default::default(),
        }
    }

    /// The change encoded for wire format `slot`, encoded once and shared by
    /// every subscriber that uses that format.
    pub fn frame(&self, slot: usize, encode: impl FnOnce(&Change) -> Bytes) -> Bytes {
        self.frames[slot % FRAME_SLOTS]
            .get_or_init(|| encode(self))
            .clone()
    }
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Change({} @{} {:?})",
            self.event.path, self.seq, self.event.version
        )
    }
}
