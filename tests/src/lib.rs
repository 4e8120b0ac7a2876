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

/// Prints the counters of the vrouters behind these control sockets if the test thread is
/// panicking when it is dropped: which vif saw what, and drops by reason, so a failed
/// end-to-end scenario says which hop lost the packet.
#[derive(Debug)]
pub struct DumpOnFailure(pub Vec<PathBuf>);

impl Drop for DumpOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for s in &self.0 {
            let stats = vrouter::control::Client::connect(s)
                .and_then(|mut c| c.call(vrouter::control::Op::Stats))
                .map(|r| r.data.unwrap_or_default());
            match stats {
                Ok(v) => eprintln!(
                    "vrouter at {}: vifs {} drops {} flows {}",
                    s.display(),
                    v["vifs"],
                    v["drops"],
                    v["flow_table"]
                ),
                Err(e) => eprintln!("vrouter at {}: unreachable ({e})", s.display()),
            }
        }
    }
}
