//! Playback: every event under a prefix with a time in `[from, to]`, in
//! version order, read from history in bounded passes and paced by the
//! client — the history is never loaded whole.
//!
//! History is kept per path, not in one time order, so each pass merges the
//! paths' histories: it reads, from every path changed since the pass's
//! start, the events after the last one sent, and keeps the smallest (by
//! version, then digest) within a budget of events and bytes. What it keeps
//! is exactly every event below a *cut* — the smallest event it had to drop
//! or could not read — so the next pass starts after the last one sent and
//! nothing is skipped or sent twice.
//!
//! The paths to read are found once (those whose latest event, the newest
//! they have, is at or after `from`) and kept in memory when there are at
//! most [`MAX_TRACKED_PATHS`]; beyond that every pass scans the prefix again.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::initial::{off_thread, to_change};
use super::outbox::{Outbox, PushError};
use super::subscriber::SessionContext;
use super::StreamItem;
use crate::model::{Digest, Path, Version};
use crate::store::{Store, StoreError, Stored};

/// Most events one pass keeps (and reads of one path).
const PASS_EVENTS: usize = 4096;
/// About the most bytes of values one pass keeps (at least one event).
const PASS_BYTES: usize = 4 << 20;
/// Most paths whose list is kept between passes.
const MAX_TRACKED_PATHS: usize = 65_536;
/// Latest values scanned per step when finding the paths to read.
const SCAN_CHUNK: usize = 1024;

/// Where an event sorts in a playback: by version, then digest (the order
/// of a path's history).
type Key = (Version, Digest);

fn key(s: &Stored) -> Key {
    (s.event.version.clone(), s.digest)
}

/// An event kept by a pass; the heap's top is the greatest.
struct Kept(Key, Stored);

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// The paths a playback reads: each with the time of its newest event.
enum Paths {
    /// Not found yet.
    Unknown,
    /// Found and kept.
    Tracked(Vec<(Path, u64)>),
    /// Too many to keep: every pass scans the prefix.
    Untracked,
}

/// A playback's position between passes.
struct State {
    prefix: Path,
    from: u64,
    to: u64,
    /// The last event sent: passes read after it.
    after: Option<Key>,
    paths: Paths,
}

/// What one pass found: the events to send, in order; none once the
/// playback is done.
fn pass(store: &dyn Store, state: &mut State) -> Result<Vec<Stored>, StoreError> {
    let start = state.after.as_ref().map_or(state.from, |k| k.0.time);
    let mut kept = BinaryHeap::new();
    let mut bytes = 0usize;
    // Only events below the cut may be sent by this pass.
    let mut cut: Option<Key> = None;
    let mut read_path = |path: &Path, kept: &mut BinaryHeap<Kept>, cut: &mut Option<Key>| {
        let events = store.history_within(path, start, state.to, PASS_EVENTS, PASS_BYTES)?;
        // (Checked after the read.) Compaction took events this playback was to send (it began
        // after the playback was checked): say so rather than skip them.
        // (Events dropped are older than the path's newest event: a path
        // whose expired value was reclaimed has its floor at the expiry's
        // `expires_at`, past its newest event, the expiry itself.)
        let floor = store.history_floor(path)?.filter(|f| *f > state.from);
        let lost = match floor {
            Some(floor) => {
                let newest = store.latest(path)?.map_or(0, |s| s.event.version.time);
                Some(floor).filter(|_| state.from <= newest)
            }
            None => None,
        };
        if let Some(floor) = lost {
            return Err(StoreError::Failed(format!(
                "the history of '{path}' before {} was compacted during the playback",
                crate::model::format_moment(floor)
            )));
        }
        let read_bytes: usize = events.iter().map(weight).sum();
        let truncated = events.len() == PASS_EVENTS || read_bytes >= PASS_BYTES;
        let mut last = None;
        for stored in events {
            let k = key(&stored);
            last = Some(k.clone());
            if state.after.as_ref().is_some_and(|a| k <= *a) {
                continue;
            }
            if cut.as_ref().is_some_and(|c| k >= *c) {
                break;
            }
            bytes += weight(&stored);
            kept.push(Kept(k, stored));
            while kept.len() > PASS_EVENTS || (bytes > PASS_BYTES && kept.len() > 1) {
                let Kept(k, dropped) = kept.pop().expect("not empty");
                bytes -= weight(&dropped);
                *cut = Some(cut.take().map_or(k.clone(), |c| c.min(k)));
            }
        }
        // The rest of this path's history was not read: nothing at or
        // past the last event read may be sent by this pass.
        if truncated {
            if let Some(k) = last {
                *cut = Some(cut.take().map_or(k.clone(), |c| c.min(k)));
            }
        }
        Ok::<_, StoreError>(())
    };
    match &mut state.paths {
        Paths::Tracked(paths) => {
            paths.retain(|(_, newest)| *newest >= start);
            for (path, _) in paths.iter() {
                read_path(path, &mut kept, &mut cut)?;
            }
        }
        paths => {
            let mut found = matches!(paths, Paths::Unknown).then(Vec::new);
            let mut after: Option<String> = None;
            loop {
                let chunk = store.scan_latest(&state.prefix, after.as_deref(), SCAN_CHUNK)?;
                let Some(last) = chunk.last() else { break };
                after = Some(last.event.path.as_str().to_string());
                let full = chunk.len() == SCAN_CHUNK;
                for latest in chunk {
                    let newest = latest.event.version.time;
                    if newest < start {
                        continue;
                    }
                    read_path(&latest.event.path, &mut kept, &mut cut)?;
                    if let Some(list) = &mut found {
                        if list.len() < MAX_TRACKED_PATHS {
                            list.push((latest.event.path, newest));
                        } else {
                            found = None;
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            *paths = match found {
                Some(list) => Paths::Tracked(list),
                None => Paths::Untracked,
            };
        }
    }
    let mut events: Vec<Stored> = kept
        .into_sorted_vec()
        .into_iter()
        .filter(|Kept(k, _)| cut.as_ref().is_none_or(|c| k < c))
        .map(|Kept(_, s)| s)
        .collect();
    if events.is_empty() && cut.is_some() {
        return Err(StoreError::Failed(
            "playback could not move past an event (history too dense at one time)".into(),
        ));
    }
    state.after = events.last().map(key).or(state.after.take());
    events.shrink_to_fit();
    Ok(events)
}

fn weight(s: &Stored) -> usize {
    96 + s.event.path.as_str().len() + s.event.value.as_ref().map_or(0, |v| v.len())
}

/// Sends, as [`StreamItem::Played`], every event under `prefix` with
/// `from <= time <= to` that the log holds up to `head` (seq at most
/// `head`: later ones come live), in version order, paced by the client.
pub(super) async fn play(
    ctx: &Arc<SessionContext>,
    outbox: &Outbox,
    prefix: Path,
    (from, to): (u64, u64),
    head: u64,
    gone: &std::sync::atomic::AtomicBool,
) -> Result<(), PushError> {
    let mut state = Some(State {
        prefix,
        from,
        to,
        after: None,
        paths: Paths::Unknown,
    });
    loop {
        let mut moved = state.take().expect("the state comes back from each pass");
        let read = off_thread(&ctx.store, move |store| {
            pass(store, &mut moved).map(|events| (events, moved))
        });
        let (events, back) = read.await.map_err(|e| PushError::Failed(e.to_string()))?;
        if events.is_empty() {
            return Ok(());
        }
        state = Some(back);
        for stored in events {
            // Unsubscribed: stop (the session goes on).
            if gone.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            if stored.seq.is_none_or(|seq| seq <= head) {
                let change = to_change(stored, &ctx.incarnation);
                outbox.push_paced(StreamItem::Played(change)).await?;
            }
        }
    }
}
