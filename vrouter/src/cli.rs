//! Helpers for the command-line tools.

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
