//! The system's networking commands (`ip`, `ethtool`) as the lab and the HAProxy manager
//! run them: a failure is an error that names the command and carries its stderr.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `args[0]` with the rest; its standard output.
pub fn run(args: &[&str]) -> Result<String> {
    let Some((prog, rest)) = args.split_first() else {
        bail!("no command");
    };
    let o = Command::new(prog)
        .args(rest)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !o.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// [`run`] inside the named network namespace (`ip netns exec`).
pub fn in_netns(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}
