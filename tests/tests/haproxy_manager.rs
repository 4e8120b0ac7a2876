//! haproxy-manager against a real agent: what an earlier run left is cleaned up, but a pid
//! file whose pid now belongs to another process (pid reuse, a reboot) does not get that
//! process killed.

use std::io::BufRead;
use std::process::{Command, Stdio};

use vr_tests::{PodLab, Reap, workspace_bin};

#[test]
fn a_stale_pid_file_never_kills_a_process_that_is_not_its_haproxy() {
    let lab = PodLab::start("hpm", 0);
    let dir = lab.dir.join("hpm");
    std::fs::create_dir_all(&dir).unwrap();
    // Someone else's process now has the pid an old pid file names.
    let mut bystander = Reap(Command::new("sleep").arg("600").spawn().unwrap());
    let vmi = "0b0e0c7a-1111-4222-8333-444455556666";
    std::fs::write(
        dir.join(format!("{vmi}.pid")),
        format!("{}\n", bystander.0.id()),
    )
    .unwrap();
    let mut m = Reap(
        Command::new(workspace_bin("haproxy-manager"))
            .args(["--agent", &lab.target(), "--host", "nobody-here"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It says so once the clean-up is done and it manages instances.
    let mut out = std::io::BufReader::new(m.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("managing HAProxy instances"), "{line:?}");
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "the bystander was killed"
    );
    assert!(
        !dir.join(format!("{vmi}.pid")).exists(),
        "the stale pid file is gone"
    );
    let _ = bystander.0.kill();
    drop(m);
}
