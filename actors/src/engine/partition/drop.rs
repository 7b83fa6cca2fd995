//! Dropping a partition whole: a copy of it that nobody needs any more (the
//! node neither owns it nor watches any of it). The drop goes to the
//! committer behind the partition's batches in flight, so what they write
//! goes with it; nothing is decided until it is done, and then the
//! partition forgets what it knew of its paths (the store holds none of
//! them now).

use actix::prelude::*;
use tokio::sync::oneshot;

use super::Partition;
use crate::engine::committer::CommitRequest;
use crate::error::NodeError;
use crate::store::StoreError;

/// Drops everything the partition holds: its latest values, history, log
/// and merkle tree. Writes that reach it meanwhile are decided after the
/// drop, against an empty partition.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DropAll {
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), NodeError>>,
}

impl Handler<DropAll> for Partition {
    type Result = ();

    fn handle(&mut self, msg: DropAll, ctx: &mut Self::Context) {
        if self.dropping {
            let _ = msg.reply.send(Err(NodeError::Store(StoreError::Failed(
                "a drop of this partition is under way".into(),
            ))));
            return;
        }
        let (done, dropped) = oneshot::channel();
        let request = CommitRequest {
            partition: self.index,
            epoch: self.epoch,
            writes: Vec::new(),
            replies: Vec::new(),
            done,
            drop: true,
        };
        if self.committer.send(request).is_err() {
            let _ = msg.reply.send(Err(NodeError::ShuttingDown));
            return;
        }
        self.dropping = true;
        // Every batch decided so far commits before the drop.
        self.forget_before = self.next_batch;
        ctx.spawn(dropped.into_actor(self).map(move |result, act, ctx| {
            act.dropping = false;
            act.forget();
            let answer = match result {
                Ok(true) => Ok(()),
                _ => Err(NodeError::Store(StoreError::Failed(format!(
                    "partition {} could not be dropped (see the log)",
                    act.index
                )))),
            };
            let _ = msg.reply.send(answer);
            act.pump(ctx);
        }));
    }
}

impl Partition {
    /// Forgets every path's current event and every event it knew of: the
    /// partition was dropped (or may be, when the drop failed partway).
    fn forget(&mut self) {
        self.drops += 1;
        // A batch that failed just before the drop settles unseen (see
        // `settle`): a new epoch, so later batches do not fail with it.
        self.epoch += 1;
        self.known.clear();
        self.pending.clear();
        self.pending_events.clear();
        self.recent_events.clear();
        self.prefetched.clear();
        self.looked_up.clear();
        self.looked_up_at = None;
        // Batches before the drop are all done (the committer ran them
        // first): they settle without teaching the partition anything.
        self.retire();
    }
}
