//! Two virtual networks programmed through the agent, with real traffic between a pod in
//! each: nothing passes without a network policy; a policy passing TCP lets TCP through
//! and still stops ICMP (counted as policy drops); one passing everything lets ping
//! through; removing it cuts the networks apart again.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vr_tests::{PodLab, in_ns, python, vrctl_json};

/// A process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pings(ns: &str, ip: &str) -> bool {
    in_ns(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
        .status
        .success()
}

fn connects(ns: &str, ip: &str, port: u16) -> bool {
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('{ip}', {port}), timeout=2).close(); print('ok')\n\
         except OSError as e:\n    print('blocked', e)"
    );
    let o = in_ns(ns, &["python3", "-c", &code]);
    String::from_utf8_lossy(&o.stdout).starts_with("ok")
}

fn drops(lab: &PodLab, reason: &str) -> u64 {
    vrctl_json(&lab.socket(), &["stats"])["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn network_policy_decides_what_crosses_between_two_networks() {
    let lab = PodLab::start("agvn", 2);
    let target = lab.target();
    let out = python(
        "agent_vns.py",
        &[&target, "setup", &lab.host_if[0], &lab.host_if[1]],
    );
    let ports = vr_tests::json_lines(&out);
    assert_eq!(ports.len(), 2, "{out}");
    for (i, p) in ports.iter().enumerate() {
        lab.plug(i, p);
    }
    let ip = |i: usize| {
        ports[i]["ip"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let (red, blue) = (ip(0), ip(1));
    assert!(red.starts_with("10.45.1.") && blue.starts_with("10.45.2."));
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{blue}', 80)); s.listen(16)\nwhile True:\n    c,_=s.accept(); c.close()"
    );
    let _server = Killed(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns[1], "python3", "-c", &server])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));

    // No policy: red's VRF has no route to blue.
    let before = drops(&lab, "no_route");
    assert!(!pings(&lab.ns[0], &blue), "ping crossed without a policy");
    assert!(
        !connects(&lab.ns[0], &blue, 80),
        "TCP crossed without a policy"
    );
    assert!(
        drops(&lab, "no_route") > before,
        "dropped for want of a route"
    );

    // A policy passing TCP only: routes leak both ways, TCP connects, ICMP is denied.
    python("agent_vns.py", &[&target, "policy", "pass", "tcp"]);
    assert!(connects(&lab.ns[0], &blue, 80), "TCP 80 through the policy");
    let before = drops(&lab, "policy_deny");
    assert!(!pings(&lab.ns[0], &blue), "ICMP passed a TCP-only policy");
    assert!(
        drops(&lab, "policy_deny") > before,
        "the denied pings are counted"
    );

    // Everything passes: ping both ways.
    python("agent_vns.py", &[&target, "policy", "pass", "any"]);
    assert!(pings(&lab.ns[0], &blue), "red -> blue");
    assert!(pings(&lab.ns[1], &red), "blue -> red");

    // Policy gone: apart again.
    python("agent_vns.py", &[&target, "nopolicy"]);
    assert!(
        !pings(&lab.ns[0], &blue),
        "ping crossed after the policy was removed"
    );
    assert!(!connects(&lab.ns[0], &blue, 80));
}
