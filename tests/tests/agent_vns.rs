//! Two virtual networks programmed through the agent, with real traffic between a pod in
//! each: nothing passes without a network policy; a policy passing TCP lets TCP through
//! and still stops ICMP (counted as policy drops); one passing everything lets ping
//! through; removing it cuts the networks apart again.

use vr_tests::{PodLab, pings, python, tcp_acceptor, tcp_connects as connects, vrctl_json};

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
    let ip = |i: usize| vr_tests::address_of(&ports[i]["ip"]);
    let (red, blue) = (ip(0), ip(1));
    assert!(red.starts_with("10.45.1.") && blue.starts_with("10.45.2."));
    let _server = tcp_acceptor(&lab.ns[1], &blue, 80);

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
    assert!(vr_tests::pings_within(&lab.ns[0], &blue), "red -> blue");
    assert!(vr_tests::pings_within(&lab.ns[1], &red), "blue -> red");

    // Policy gone: apart again.
    python("agent_vns.py", &[&target, "nopolicy"]);
    assert!(
        !pings(&lab.ns[0], &blue),
        "ping crossed after the policy was removed"
    );
    assert!(!connects(&lab.ns[0], &blue, 80));
}
