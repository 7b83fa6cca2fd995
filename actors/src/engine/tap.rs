//! The tap: every event each commit wrote (a late one too), in seq order,
//! for the one reader that follows the whole log as it grows — the
//! cluster's replicator, which streams partitions to peers.
//!
//! Handing over never blocks the committer: the reader's mailbox is
//! bounded, and a commit that finds it full is not sent but marked *lost*;
//! the reader then reads what it missed from the store (everything the tap
//! carries is committed there first).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use actix::prelude::*;

use crate::model::Event;

/// The events of one commit.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Committed {
    /// (seq, partition, event), in seq order.
    pub entries: Vec<(u64, u16, Arc<Event>)>,
}

/// Where commits are handed to, once someone follows them.
#[derive(Default)]
pub struct Tap {
    reader: OnceLock<Recipient<Committed>>,
    lost: AtomicBool,
}

impl Tap {
    /// Makes `reader` the follower of every commit from now on (once; false
    /// if there is one already).
    pub fn attach(&self, reader: Recipient<Committed>) -> bool {
        self.reader.set(reader).is_ok()
    }

    /// True if someone follows the commits.
    pub fn attached(&self) -> bool {
        self.reader.get().is_some()
    }

    /// Hands one commit to the reader; marks it lost if the reader's
    /// mailbox is full.
    pub(crate) fn send(&self, entries: Vec<(u64, u16, Arc<Event>)>) {
        if let Some(reader) = self.reader.get() {
            if reader.try_send(Committed { entries }).is_err() {
                self.lost.store(true, Ordering::Release);
            }
        }
    }

    /// True (once) if a commit was not handed over since the last call:
    /// the reader must read the store to know what it missed.
    pub fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
    }
}

/// A shared tap.
pub type SharedTap = Arc<Tap>;
