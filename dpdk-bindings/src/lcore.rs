//! Launching closures on EAL worker lcores and joining them.

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::ffi;
use crate::ids::LcoreId;

type Slot<T> = Arc<Mutex<Option<std::thread::Result<T>>>>;

struct Job<F, T> {
    f: F,
    slot: Slot<T>,
}

extern "C" fn trampoline<F, T>(arg: *mut c_void) -> c_int
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: arg is the Box<Job<F, T>> leaked by `launch` for exactly this call; EAL passes
    // it to us once, so ownership is taken back once.
    let job = unsafe { Box::from_raw(arg.cast::<Job<F, T>>()) };
    let Job { f, slot } = *job;
    let result = catch_unwind(AssertUnwindSafe(f));
    let failed = result.is_err();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    c_int::from(failed)
}

/// A closure running on a worker lcore. Dropping it without `join` waits for the lcore.
#[derive(Debug)]
pub struct LcoreJoin<T> {
    lcore: LcoreId,
    slot: Slot<T>,
    joined: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T> LcoreJoin<T> {
    /// The lcore the closure runs on.
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Waits for the closure and returns its value; a panic in it is returned as `Err`.
    pub fn join(mut self) -> std::thread::Result<T> {
        self.wait();
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| Err(Box::new("lcore job produced no result")))
    }

    fn wait(&mut self) {
        if !self.joined {
            // SAFETY: lcore is a worker we launched on; rte_eal_wait_lcore blocks until it is
            // back in WAIT state. Called from the main lcore (LcoreJoin is not Send).
            unsafe { ffi::rte_eal_wait_lcore(self.lcore.0) };
            self.joined = true;
        }
    }
}

impl<T> Drop for LcoreJoin<T> {
    fn drop(&mut self) {
        self.wait();
    }
}

pub(crate) fn launch<F, T>(lcore: LcoreId, f: F) -> Result<LcoreJoin<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if lcore.0 >= ffi::RTE_MAX_LCORE {
        return Err(Error::invalid(
            "rte_eal_remote_launch",
            format!("{lcore} is out of range"),
        ));
    }
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let job = Box::new(Job {
        f,
        slot: Arc::clone(&slot),
    });
    let arg = Box::into_raw(job).cast::<c_void>();
    // SAFETY: trampoline::<F, T> matches lcore_function_t and takes ownership of arg, a
    // leaked Box<Job<F, T>>; F and T are Send + 'static so moving them to another thread
    // is sound.
    let ret = unsafe { ffi::rte_eal_remote_launch(Some(trampoline::<F, T>), arg, lcore.0) };
    if ret < 0 {
        // SAFETY: launch failed, so EAL never called trampoline: we still own the Box.
        drop(unsafe { Box::from_raw(arg.cast::<Job<F, T>>()) });
        return Err(Error::rte(format!("rte_eal_remote_launch({lcore})"), ret));
    }
    Ok(LcoreJoin {
        lcore,
        slot,
        joined: false,
        _not_send: PhantomData,
    })
}
