//! Spread's engine, in folders that name its parts (arrows point down):
//!
//! - [`node`]: the facade — [`Node`], what the library and the HTTP layer call;
//!   opening and stopping the engine.
//! - [`session`]: one client session ([`Subscriber`]), its bounded outbox, its
//!   snapshot or replay, then live changes.
//! - [`engine`]: one node's write path — `Partition` (stamp, preconditions,
//!   LWW per slice of the topic space), the committer (group commit, seqs,
//!   durability) and the `Hub` (fan-out in log order).
//! - [`store`]: sled behind the `Store` trait — layout, commit, reads,
//!   upgrade.
//! - [`model`]: paths, versions and the clock, events and the LWW rule,
//!   cursors, field limits.
//! - [`merkle`]: a merkle tree per partition over its events, folded from
//!   the change log in the background, and the diff of two trees.
//! - [`cluster`]: peer links between nodes — frames, the handshake that
//!   proves the cluster secret, the `Peer` actor per link.
//! - [`config`] (every default in one place) and [`error`].
//!
//! The `spread-web` crate puts HTTP, SSE and WebSocket in front of [`Node`].

pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod merkle;
pub mod model;
pub mod node;
pub mod session;
pub mod store;

pub use config::{ClusterConfig, Config, Durability};
pub use engine::acks::WaitFor;
pub use engine::hub::Change;
pub use engine::partition::{Input, Precondition, Write, WriteReport, WriteStatus};
pub use error::NodeError;
pub use model::cursor::Cursor;
pub use model::{Event, FieldError, Layout, NodeId, Path, PathError, Version};
pub use node::{HistoryRange, Listing, Node, NodeStats, PrefixDigest, Session};
pub use session::{Playback, SessionStream, StreamItem, Subscribe, Subscriber, Unsubscribe};
pub use store::{LogPage, PartitionDigest, Stored};
