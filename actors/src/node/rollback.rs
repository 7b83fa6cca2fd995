//! Rollback: writing, as new events, the values paths had at a point of
//! their history. History is never rewritten: a rollback is ordinary writes
//! (replicated, streamed to subscribers as updates), each conditional on the
//! value it replaces, so a write that lands meanwhile is never overwritten
//! unseen.

use bytes::Bytes;
use futures_util::future::join_all;

use super::Node;
use crate::engine::partition::{Precondition, Write, WriteReport};
use crate::error::NodeError;
use crate::model::{version::wall_micros, AsOf, Event, Path};

/// Paths of a subtree read per step of a recursive rollback.
const STEP_PATHS: usize = 256;
/// Rollback writes of a subtree in flight at once.
const WRITES_IN_FLIGHT: usize = 64;

/// What a recursive rollback did.
#[derive(Debug, Default)]
pub struct RollbackReport {
    /// The paths it changed, with their write reports, in path order.
    pub changed: Vec<WriteReport>,
    /// The paths it could not change, with why (a write that landed
    /// meanwhile: `PreconditionFailed`; too few owners: `Unavailable`…), in
    /// path order. Rolling back again retries them: paths already as they
    /// were then are left alone.
    pub failed: Vec<(Path, NodeError)>,
    /// Paths under the prefix already as they were then.
    pub unchanged: usize,
}

/// The live value an event gives a path: the bytes, their content type and
/// when they expire.
type Content = (Bytes, Option<std::sync::Arc<str>>, Option<u64>);

fn content(event: Option<&Event>, at: u64) -> Option<Content> {
    let e = event.filter(|e| e.is_live_at(at))?;
    Some((e.value.clone()?, e.content_type.clone(), e.expires_at))
}

/// The write that gives `path` back the value `then` (a tombstone when
/// none), conditional on `now` still being its value. A value that expired
/// since it stood is written as a tombstone; one that expires later keeps
/// its expiry time (rounded up to the second).
fn restoring(path: &Path, then: Option<Content>, now: Option<&Event>, base: &Write) -> Write {
    let wall = wall_micros();
    let mut write = Write {
        path: Some(path.clone()),
        precondition: match now {
            Some(e) => Precondition::IfMatch(e.version.clone()),
            None => Precondition::IfAbsent,
        },
        ..base.clone()
    };
    if let Some((value, content_type, expires_at)) = then {
        match expires_at {
            Some(at) if at <= wall => {}
            expiry => {
                write.value = Some(value);
                write.content_type = content_type;
                write.ttl_secs = expiry.map(|at| (at - wall).div_ceil(1_000_000));
            }
        }
    }
    write
}

impl Node {
    /// Writes, as a new event, the value `path` had at `to` (a tombstone if
    /// it had none), on condition that the value it replaces is still the
    /// current one (else [`NodeError::PreconditionFailed`]: read and retry).
    /// `base` gives the author and `w` of the write.
    pub async fn rollback(
        &self,
        path: &Path,
        to: &AsOf,
        base: Write,
    ) -> Result<WriteReport, NodeError> {
        if path.is_root() {
            return Err(crate::model::PathError::Empty.into());
        }
        let then = self.read(path, Some(to)).await?;
        let now = self.read(path, None).await?;
        let then = content(then.as_ref(), to.time);
        self.write(restoring(path, then, now.as_ref(), &base)).await
    }

    /// [`Node::rollback`] of every path at or under `prefix`: paths that
    /// did not exist then are deleted, paths already as they were are left
    /// alone. In a cluster the paths are listed, read and written where
    /// they are held, so any node rolls back any subtree. A path that
    /// could not be read or written is listed in the report's `failed`.
    pub async fn rollback_tree(
        &self,
        prefix: &Path,
        to: &AsOf,
        base: Write,
    ) -> Result<RollbackReport, NodeError> {
        let mut report = RollbackReport::default();
        let mut after: Option<String> = None;
        loop {
            // Every path that ever had an event under the prefix has a
            // latest record (a tombstone at least): what was there then is
            // among them.
            let page = self.read_paths(prefix, after.take(), STEP_PATHS).await?;
            let mut writes = Vec::new();
            for chunk in page.entries.chunks(WRITES_IN_FLIGHT) {
                let reads = chunk.iter().map(|entry| async move {
                    let then = self.read(&entry.path, Some(to)).await;
                    let now = self.read(&entry.path, None).await;
                    (entry.path.clone(), then, now)
                });
                let wall = wall_micros();
                for (path, then, now) in join_all(reads).await {
                    // A path compacted past `to`, or that could not be
                    // read, is listed as failed; the others go on.
                    let (then, now) = match (then, now) {
                        (Ok(then), Ok(now)) => (content(then.as_ref(), to.time), now),
                        (Err(e), _) | (_, Err(e)) => {
                            report.failed.push((path, e));
                            continue;
                        }
                    };
                    let now = now.filter(|e| e.is_live_at(wall));
                    if then == content(now.as_ref(), wall) {
                        report.unchanged += 1;
                        continue;
                    }
                    let write = restoring(&path, then, now.as_ref(), &base);
                    writes.push((path, write));
                }
            }
            for chunk in writes.chunks(WRITES_IN_FLIGHT) {
                let done = join_all(chunk.iter().map(|(_, w)| self.write(w.clone()))).await;
                for ((path, _), result) in chunk.iter().zip(done) {
                    match result {
                        Ok(r) => report.changed.push(r),
                        Err(e) => report.failed.push((path.clone(), e)),
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        report.failed.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(report)
    }
}
