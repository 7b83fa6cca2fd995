//! One node's write path: the [`partition::Partition`] actors decide (stamp,
//! preconditions, LWW), the committer writes groups of batches to the store
//! and numbers them in the change log, fans the committed changes out to the
//! sessions in log order through the [`hub::Hub`], and answers the writers.

pub mod acks;
#[cfg(test)]
mod acks_tests;
pub mod change;
pub(crate) mod committer;
pub(crate) mod compaction;
pub mod hub;
pub mod partition;
pub mod tap;
#[cfg(test)]
mod write_path_tests;
