//! `Subscriber`: one client session (a WebSocket, an SSE stream or an
//! embedded subscription) and its subscriptions.
//!
//! For each subscription it registers with the hub (which fixes the cut: the
//! log head `H`), sends the snapshot of the prefix — or, when resuming, the
//! changes after the client's cursor up to `H` — then `ready`, then every live
//! change after `H`. Live changes that arrive while the snapshot is being sent
//! wait in a per-subscription buffer, so nothing between snapshot and live is
//! lost.
//!
//! A subscription with a [`Playback`] sends, instead of the snapshot, every
//! event since a time in version order (`Played`), then the changes made
//! meanwhile, then `ready` and live changes; or, bounded by `to`, the
//! events up to then and `End`.
//!
//! Everything it sends goes through an [`Outbox`] bounded in items and bytes.
//! The snapshot is paced by the reader; live changes never wait: when the
//! outbox is full the session is *lagging* — it gets a final
//! [`StreamItem::Lagged`] and stops, and the client resumes from its last
//! cursor. A client that stops reading costs the node at most that bound.

mod initial;
pub mod interest;
mod item;
mod outbox;
mod playback;
mod subscriber;

pub use item::StreamItem;
pub use outbox::{Outbox, SessionStream};
pub(crate) use subscriber::SessionContext;
pub use subscriber::{Playback, Subscribe, Subscriber, Unsubscribe};
