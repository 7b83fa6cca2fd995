//! How writes reach a partition: [`Apply`] messages through its bounded
//! [`Inbox`], drained by the partition only while its queue has room, and
//! the [`Wake`] a writer sends when the partition is idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::{Input, Partition, WriteReport};
use crate::error::NodeError;

/// Applies one write; `reply` gets the report once the write is as durable
/// as configured (or the error). The answer travels on `reply` rather than
/// as a message's result so that the writer is woken once, by whoever
/// finishes the write. Sent through a partition's `Inbox`.
pub struct Apply {
    /// A client's write, or a foreign event to merge.
    pub input: Input,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<WriteReport, NodeError>>,
}

/// Tells a partition its inbox has writes (sent only when it is idle).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// The sending side of a partition: its bounded inbox, and its address to
/// wake it with.
#[derive(Clone)]
pub(crate) struct Inbox {
    pub(super) writes: mpsc::Sender<Apply>,
    /// True while the partition will look at its inbox again by itself;
    /// a writer that sets it sends [`Wake`].
    pub(super) scheduled: Arc<AtomicBool>,
    pub(super) addr: Addr<Partition>,
}

impl Inbox {
    /// Hands a write to the partition, waiting for room when the inbox is
    /// full (counted in `waits` before waiting).
    pub(crate) async fn send(&self, apply: Apply, waits: &AtomicU64) -> Result<(), NodeError> {
        match self.writes.try_send(apply) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(apply)) => {
                waits.fetch_add(1, Ordering::Relaxed);
                self.writes
                    .send(apply)
                    .await
                    .map_err(|_| NodeError::ShuttingDown)?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(NodeError::ShuttingDown),
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.addr.do_send(Wake);
        }
        Ok(())
    }

    /// Drops everything the partition holds (see [`super::DropAll`]).
    pub(crate) async fn drop_all(&self) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        self.addr
            .send(super::DropAll { reply })
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// The partition's actor (tests).
    #[cfg(test)]
    pub(crate) fn actor(&self) -> &Addr<Partition> {
        &self.addr
    }
}
