//! The first part of a subscription, before `ready`: the snapshot of a
//! prefix, or the replay of the change log after a resume cursor, read from
//! the store on a blocking thread and paced by the client.

use std::sync::Arc;

use super::outbox::{Outbox, PushError};
use super::subscriber::SessionContext;
use super::StreamItem;
use crate::engine::hub::Change;
use crate::model::cursor::Cursor;
use crate::model::{version::wall_micros, Path};
use crate::store::{Store, StoreError, Stored};

/// Store entries read per step of a snapshot or replay.
const READ_CHUNK: usize = 256;

/// `since` up to `head` (with a `Reset` + snapshot when that is impossible).
/// A snapshot `for_copy` (a peer's watch, whose copy may hold values
/// deleted since it last watched) carries the latest event of every path,
/// deleted and expired ones too.
pub(super) async fn send_initial(
    ctx: Arc<SessionContext>,
    outbox: Outbox,
    prefix: Path,
    since: Option<String>,
    head: u64,
    for_copy: bool,
) -> Result<(), PushError> {
    if let Some(since) = since {
        let cursor = Cursor::parse(&since).ok();
        let resumable = cursor
            .filter(|c| *c.incarnation == *ctx.incarnation && c.seq <= head)
            .map(|c| c.seq);
        if let Some(after) = resumable {
            if replay(&ctx, &outbox, &prefix, after, head).await? {
                return Ok(());
            }
        }
        outbox
            .push_paced(StreamItem::Reset {
                prefix: prefix.clone(),
            })
            .await?;
    }
    snapshot(&ctx, &outbox, &prefix, for_copy).await
}

/// Replays log entries `(after, head]` under `prefix`, reading only the
/// partitions the prefix covers. False if the log no longer reaches back to
/// `after` there (or was trimmed while reading).
pub(super) async fn replay(
    ctx: &SessionContext,
    outbox: &Outbox,
    prefix: &Path,
    after: u64,
    head: u64,
) -> Result<bool, PushError> {
    let mut from = after;
    while from < head {
        let scope = prefix.clone();
        let read = off_thread(&ctx.store, move |store| {
            store.log_read(&scope, from, head, READ_CHUNK)
        });
        let page = match read.await {
            Ok(page) => page,
            Err(e) => {
                log::error!("replay after {from} failed: {e}");
                return Ok(false);
            }
        };
        if page.trimmed {
            return Ok(false); // cannot resume exactly
        }
        for stored in page.entries {
            // A late event (history only) changed no value: not a change
            // for a client, though it takes a seq.
            if !stored.late {
                let change = to_change(stored, &ctx.incarnation);
                outbox.push_paced(StreamItem::Update(change)).await?;
            }
        }
        from = page.through; // later changes come live from the hub
    }
    Ok(true)
}

/// Sends every live value under `prefix`, in path order (every latest
/// event, tombstones too, `for_copy`).
async fn snapshot(
    ctx: &SessionContext,
    outbox: &Outbox,
    prefix: &Path,
    for_copy: bool,
) -> Result<(), PushError> {
    let mut after: Option<String> = None;
    loop {
        let (scanned, from) = (prefix.clone(), after.take());
        let read = off_thread(&ctx.store, move |store| {
            store.scan_latest(&scanned, from.as_deref(), READ_CHUNK)
        });
        let chunk = read.await.map_err(|e| PushError::Failed(e.to_string()))?;
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        after = Some(last.event.path.as_str().to_string());
        let full = chunk.len() == READ_CHUNK;
        let now = wall_micros();
        for stored in chunk {
            if for_copy || stored.event.is_live_at(now) {
                outbox
                    .push_paced(StreamItem::Snapshot(to_change(stored, &ctx.incarnation)))
                    .await?;
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// Runs a store read on a blocking thread and waits for it without holding
/// the session's thread: a session runs on the HTTP worker that serves its
/// socket, beside many others, and a snapshot over many tombstones or the
/// replay of a stale cursor may read for a long time without sending
/// anything.
pub(super) async fn off_thread<T: Send + 'static>(
    store: &Arc<dyn Store>,
    read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&*store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Failed(format!("a store read stopped: {e}"))))
}

pub(super) fn to_change(stored: Stored, incarnation: &Arc<str>) -> Arc<Change> {
    Arc::new(Change::new(
        Arc::new(stored.event),
        stored.seq.unwrap_or(0),
        incarnation,
    ))
}
