//! Arbitrary frames through the whole pipeline, on a VM, the fabric and the host
//! interface: every frame gets a disposition and nothing panics.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use vrouter::testbed::{FABRIC, HOST, Testbed, VM1};

static TB: Mutex<Option<Testbed>> = Mutex::new(None);

fuzz_target!(|b: &[u8]| {
    let mut guard = TB.lock().unwrap_or_else(|p| p.into_inner());
    let tb = guard.get_or_insert_with(|| Testbed::new(4096));
    let Some((&sel, frame)) = b.split_first() else { return };
    let vif = [VM1, FABRIC, HOST][usize::from(sel) % 3];
    let out = tb.run(vif, &[frame.to_vec()], u64::from(sel));
    assert_eq!(out.len(), 1);
});
