//! Helpers for tests that run the project's binaries as real processes.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Path of a binary built in this workspace's target directory (next to the test binary's
/// `deps/` folder). `make test` builds them (`cargo build --workspace --bins`) before
/// running the tests, since nextest builds only the binaries of the package under test.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `make test`, or `cargo build --workspace --bins` before nextest",
        path.display()
    );
    path
}

/// A name unique to this process and call site, for DPDK `--file-prefix` and vdev names.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}{}", std::process::id())
}
