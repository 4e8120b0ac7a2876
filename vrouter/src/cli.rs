//! Helpers for the command-line tools.

pub use vrouter_api::quiet_broken_pipe;
