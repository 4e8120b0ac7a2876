//! The packet pipeline: stages that take a burst in and give each packet a result.

mod drop;

pub use drop::{DropReason, DropStats, NUM_REASONS};
