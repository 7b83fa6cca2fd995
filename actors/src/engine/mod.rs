//! One node's write path: the [`partition::Partition`] actors decide (stamp,
//! preconditions, LWW), the committer writes groups of batches to the store
//! and numbers them in the change log, and the [`hub::Hub`] fans committed
//! changes out to the sessions in log order.

pub mod change;
pub(crate) mod committer;
pub mod hub;
pub mod partition;
#[cfg(test)]
mod write_path_tests;
