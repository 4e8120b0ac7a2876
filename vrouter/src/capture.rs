//! Bounded packet capture of one vif (`vrctl vif --capture`): frames received on it and
//! sent on it, copied by the forwarding lcores while a capture is armed. When none is,
//! the cost on the fast path is one relaxed atomic load per poll round.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

/// Most frames one capture may ask for.
pub const MAX_FRAMES: u32 = 100_000;
/// Most bytes one capture keeps.
pub const MAX_BYTES: usize = 64 << 20;

/// The capture slot shared by the control thread and the lcores.
#[derive(Debug, Default)]
pub struct Capture {
    /// vif id + 1 of the armed capture; 0 when none.
    armed: AtomicU32,
    /// Frames still wanted.
    remaining: AtomicI64,
    frames: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl Capture {
    /// The vif being captured, if any (one relaxed load: the fast path's check).
    #[inline]
    pub fn armed(&self) -> Option<u32> {
        match self.armed.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v - 1),
        }
    }

    /// Arms a capture of `count` frames on `vif`; false if one is already armed.
    pub fn arm(&self, vif: u32, count: u32) -> bool {
        if self.armed().is_some() {
            return false;
        }
        *self.frames.lock().unwrap_or_else(|e| e.into_inner()) = (Vec::new(), 0);
        self.remaining
            .store(i64::from(count.min(MAX_FRAMES)), Ordering::Relaxed);
        // Release: the cleared buffer and the count are visible to an lcore that sees it.
        self.armed
            .compare_exchange(
                0,
                vif.saturating_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Offers a frame seen on the armed vif; it is copied while frames are still wanted.
    pub fn offer(&self, frame: &[u8]) {
        if self.remaining.fetch_sub(1, Ordering::Relaxed) <= 0 {
            return;
        }
        let mut g = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 + frame.len() <= MAX_BYTES {
            g.1 += frame.len();
            g.0.push(frame.to_vec());
        }
    }

    /// True once the wanted frames have been offered.
    pub fn full(&self) -> bool {
        self.remaining.load(Ordering::Relaxed) <= 0
    }

    /// Disarms and returns what was captured.
    pub fn take(&self) -> Vec<Vec<u8>> {
        self.armed.store(0, Ordering::Release);
        std::mem::take(&mut self.frames.lock().unwrap_or_else(|e| e.into_inner()).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_offer_take_and_bounds() {
        let c = Capture::default();
        assert_eq!(c.armed(), None);
        assert!(c.arm(3, 2));
        assert!(!c.arm(4, 1), "one capture at a time");
        assert_eq!(c.armed(), Some(3));
        for i in 0..5u8 {
            c.offer(&[i; 4]);
        }
        assert!(c.full());
        assert_eq!(c.take(), vec![vec![0u8; 4], vec![1u8; 4]]);
        assert_eq!(c.armed(), None);
        assert!(c.arm(0, u32::MAX));
        assert_eq!(c.remaining.load(Ordering::Relaxed), i64::from(MAX_FRAMES));
    }
}
