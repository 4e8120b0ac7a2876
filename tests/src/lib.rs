//! Helpers for tests that run the project's binaries as real processes.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Path of a binary built in this workspace's target directory (next to the test binary's
/// `deps/` folder, where cargo and nextest put it when they build the workspace).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests through `cargo nextest run --workspace`",
        path.display()
    );
    path
}

/// A name unique to this process and call site, for DPDK `--file-prefix` and vdev names.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}
