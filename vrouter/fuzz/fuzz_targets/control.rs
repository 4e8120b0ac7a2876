//! Arbitrary frames at the control socket's handler: every one gets a reply, nothing
//! panics, and a refused change leaves the tables as they were.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vrouter::control::{ControlState, handle_frame};
use vrouter::flow::FlowTable;

fn state() -> &'static ControlState {
    static S: OnceLock<ControlState> = OnceLock::new();
    S.get_or_init(|| ControlState::detached(vrouter::testbed::writer(), Arc::new(FlowTable::new(1024))))
}

fuzz_target!(|b: &[u8]| {
    let s = state();
    let before = s.writer.lock().unwrap().tables().version;
    let r = handle_frame(s, b);
    if !r.ok {
        assert!(r.error.is_some());
        assert_eq!(s.writer.lock().unwrap().tables().version, before, "a refusal published nothing");
    }
});
