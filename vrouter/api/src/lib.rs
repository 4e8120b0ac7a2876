//! The vrouter's interface to the programs around it: the control protocol and its
//! client ([`control`]), the objects it carries ([`config`]), MAC addresses ([`MacAddr`])
//! and the counters and drop reasons the vrouter keeps ([`counters`], [`drops`]). The
//! agent, kube-manager, the CNI plugin and the node services depend on this crate alone,
//! so none of them builds or links DPDK; the `vrouter` crate implements the protocol on
//! its tables.

pub mod config;
pub mod control;
pub mod counters;
pub mod drops;
mod mac;

pub use mac::MacAddr;

/// The port name of a device spec: what comes before the first comma.
pub fn port_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// A command whose output goes to a pipe that closes early (`vrctl flow | head`) ends
/// quietly with the status a shell gives a process killed by SIGPIPE (141), instead of
/// the panic Rust's printing macros raise on a write error.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
