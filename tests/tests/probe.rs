//! `vrouter probe` as a real process on real vdevs.

use std::process::Command;

use vr_tests::{unique_prefix, workspace_bin};

#[test]
fn probe_brings_up_ring_and_null_ports_and_moves_frames() {
    let prefix = unique_prefix("probe");
    let out = Command::new(workspace_bin("vrouter"))
        .args(["probe", "--frames", "16", "--"])
        .args(["--no-huge", "-m", "256", "--no-pci", "-l", "0"])
        .args(["--vdev", "net_ring0", "--vdev", "net_null0"])
        .args(["--file-prefix", &prefix])
        .output()
        .expect("run vrouter probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 port(s)"), "{stdout}");
    let ring = stdout
        .lines()
        .find(|l| l.starts_with("port ") && l.contains(" net_ring0 "))
        .expect("net_ring0 line");
    assert!(ring.contains("driver=net_ring"), "{ring}");
    assert!(
        ring.contains("tx=16 rx=16 echoed=16"),
        "frames loop back unchanged: {ring}"
    );
    let null = stdout
        .lines()
        .find(|l| l.starts_with("port ") && l.contains(" net_null0 "))
        .expect("net_null0 line");
    assert!(null.contains("tx=16"), "{null}");
    assert!(
        null.contains("echoed=0"),
        "net_null makes up its own frames: {null}"
    );
}

#[test]
fn probe_fails_cleanly_on_bad_eal_arguments() {
    let out = Command::new(workspace_bin("vrouter"))
        .args(["probe", "--", "--no-such-eal-option"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run vrouter probe");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting the DPDK EAL"), "{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "an error, not a panic: {stderr}"
    );
}
