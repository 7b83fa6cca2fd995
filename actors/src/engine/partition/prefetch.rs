//! The store reads a batch needs before it is decided, made on a blocking
//! thread: the partitions share one thread, which a cold read would hold.

use std::collections::HashMap;

use actix::prelude::*;

use super::{Current, Partition};
use crate::model::{Digest, Path, Version};
use crate::store::Store;

/// A store read a batch needs before it can be decided.
pub(super) struct Read {
    path: Path,
    /// Also look this event up in the path's history, when it turns out to
    /// be older than the path's current event (an explicit time).
    lookup: Option<(Version, Digest)>,
}

/// What a [`Read`] found.
struct Found {
    path: Path,
    current: Result<Option<Current>, String>,
    /// The event looked up and whether history has it.
    known: Option<((Version, Digest), Result<bool, String>)>,
}

impl Partition {
    /// The store reads the first `take` queued writes need before they can
    /// be decided without touching the store: the current event of each
    /// path the partition does not know, and, for a write with an explicit
    /// time older than its path's current event, a look-up in history.
    /// (A write stamped by the clock is newer than anything the clock has
    /// seen, so it never needs one.) A write made older than the current
    /// event only by an earlier write of the same batch is looked up when
    /// it is decided, on this thread: the one case left.
    pub(super) fn reads_for(&self, take: usize) -> Vec<Read> {
        let mut reads: Vec<Read> = Vec::new();
        // Where each path's read is in `reads`.
        let mut at: HashMap<&Path, usize> = HashMap::new();
        for q in self.queue.iter().take(take) {
            let Some(path) = q.input.path() else { continue };
            let known = self.known_current(path);
            let lookup = q.fixed.as_ref().and_then(|(version, digest)| {
                let older = match &known {
                    Some(Ok(Some(c))) => (version, digest) < (&c.version, &c.digest),
                    Some(_) => false,
                    None => true, // decided once the current event is read
                };
                let done = self
                    .looked_up
                    .contains_key(&(path.clone(), version.clone(), *digest));
                (older && !done).then(|| (version.clone(), *digest))
            });
            if known.is_some() && lookup.is_none() {
                continue;
            }
            match at.get(path) {
                Some(&i) if reads[i].lookup.is_none() => reads[i].lookup = lookup,
                Some(_) => {}
                None => {
                    at.insert(path, reads.len());
                    reads.push(Read {
                        path: path.clone(),
                        lookup,
                    });
                }
            }
        }
        reads
    }

    /// Reads what a batch needs on a blocking thread, then goes on deciding.
    pub(super) fn prefetch(&mut self, reads: Vec<Read>, ctx: &mut Context<Self>) {
        self.loading = true;
        // What settles from now on may be missing from these look-ups.
        if self.looked_up_at.is_none() {
            self.looked_up_at = Some(self.settles);
        }
        let store = self.store.clone();
        let drops = self.drops;
        let read = tokio::task::spawn_blocking(move || {
            reads
                .into_iter()
                .map(|r| read_one(&*store, r))
                .collect::<Vec<Found>>()
        });
        ctx.spawn(read.into_actor(self).map(move |found, act, ctx| {
            act.loading = false;
            match found {
                // Read before the partition was dropped: read again.
                Ok(_) if act.drops != drops => {}
                Ok(found) => {
                    for f in found {
                        if let Some((key, known)) = f.known {
                            act.looked_up.insert((f.path.clone(), key.0, key.1), known);
                        }
                        act.prefetched.insert(f.path, f.current);
                    }
                }
                // The reading thread failed: the batch's writes read again
                // when decided, and fail on their own errors.
                Err(e) => log::error!("partition {}: a store read failed: {e}", act.index),
            }
            act.pump(ctx);
        }));
    }
}

/// Reads one path's current event (and looks one event up in its history)
/// on a blocking thread.
fn read_one(store: &dyn Store, read: Read) -> Found {
    let current = store
        .latest(&read.path)
        .map(|s| s.map(|s| Current::of(&s.event, s.digest)))
        .map_err(|e| e.to_string());
    let known = read.lookup.and_then(|key| {
        let older = match &current {
            Ok(Some(c)) => (&key.0, &key.1) < (&c.version, &c.digest),
            _ => false,
        };
        older.then(|| {
            let known = store
                .contains(&read.path, &key.0, &key.1)
                .map_err(|e| e.to_string());
            (key, known)
        })
    });
    Found {
        path: read.path,
        current,
        known,
    }
}
