//! Spread's engine: the model (paths, versions, events, LWW), the sled store
//! with history and a node-local change log, and the actors that run a node —
//! `Partition` (serialized writes of one slice of the topic space), the
//! committer (group commit, seqs, durability), `Hub` (fan-out in log order)
//! and `Subscriber` (one client session).
//!
//! [`Node`] is the entry point for embedding; the `spread-web` crate puts
//! HTTP, SSE and WebSocket in front of it.

pub(crate) mod committer;
pub mod config;
pub mod cursor;
pub mod error;
pub mod hub;
pub mod model;
pub mod node;
pub mod partition;
pub mod store;
pub mod subscriber;
#[cfg(test)]
mod write_path_tests;

pub use config::{Config, Durability};
pub use cursor::Cursor;
pub use error::NodeError;
pub use hub::Change;
pub use model::{Event, FieldError, NodeId, Path, PathError, Version};
pub use node::{HistoryRange, Listing, Node, NodeStats, Session};
pub use partition::{Precondition, Write, WriteReport, WriteStatus};
pub use store::Stored;
pub use subscriber::{SessionStream, StreamItem, Subscribe, Subscriber, Unsubscribe};
