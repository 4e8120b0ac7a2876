//! Errors from DPDK calls, carrying the `rte_errno` text.

use std::ffi::CStr;

use crate::ffi;

/// A failed DPDK operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DPDK returned an error code; `msg` is `rte_strerror` of it.
    #[error("{op} failed: {msg} (errno {errno})")]
    Rte {
        /// The operation, e.g. `rte_eth_dev_configure(port 0)`.
        op: String,
        /// The positive errno value.
        errno: i32,
        /// DPDK's text for it.
        msg: String,
    },
    /// An argument was refused before DPDK was called.
    #[error("{op}: {why}")]
    Invalid {
        /// The operation refused.
        op: String,
        /// What was wrong and what is allowed.
        why: String,
    },
    /// `rte_eal_init` can run once per process.
    #[error("the DPDK EAL is already initialised in this process (it can be initialised once)")]
    AlreadyInitialised,
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error from an errno value (positive or negative, as DPDK functions return either).
    pub(crate) fn rte(op: impl Into<String>, errno: i32) -> Self {
        let errno = errno.abs();
        // SAFETY: rte_strerror accepts any int and returns a pointer to a static or
        // thread-local NUL-terminated string that stays valid until the next call on this
        // thread; we copy it out at once.
        let msg = unsafe { CStr::from_ptr(ffi::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        Error::Rte {
            op: op.into(),
            errno,
            msg,
        }
    }

    /// An error from the calling thread's current `rte_errno`.
    pub(crate) fn last(op: impl Into<String>) -> Self {
        // SAFETY: shim_errno reads the per-lcore rte_errno thread-local; no preconditions.
        let errno = unsafe { ffi::shim_errno() };
        Self::rte(op, errno)
    }

    pub(crate) fn invalid(op: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Invalid {
            op: op.into(),
            why: why.into(),
        }
    }

    /// The errno value, for DPDK errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rte { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Turns a DPDK `int` return (negative errno on failure) into a `Result`.
pub(crate) fn check(op: impl FnOnce() -> String, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(Error::rte(op(), ret))
    } else {
        Ok(ret)
    }
}
