//! The host through vhost0: the host is a network namespace whose `vhost0` (the node's
//! address, the fabric MAC) is the peer of the vrouter's host vif, and a pod network is
//! programmed through the agent. Without a policy between the pod network and the
//! ip-fabric network the two cannot reach each other; with one, the host pings the pod and
//! opens TCP connections to it (what kubelet probes do), and the pod reaches the host;
//! removing the policy separates them again.

use vr_tests::{PodLab, in_ns, ok, pings, python, tcp_acceptor, vrctl_json};

#[test]
fn host_and_pod_reach_each_other_through_vhost0_only_with_a_policy() {
    let lab = PodLab::start_with_host("aghs", 1);
    let host = lab.host_ns.clone().expect("host namespace");
    let target = lab.target();
    let out = python("agent_host.py", &[&target, "setup", &lab.host_if[0]]);
    let ports = vr_tests::json_lines(&out);
    assert_eq!(ports.len(), 1, "{out}");
    lab.plug(0, &ports[0]);
    let pod = ports[0]["ip"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("pod address")
        .to_string();
    assert!(pod.starts_with("10.46.1."), "{pod}");
    // The host sends pod traffic into vhost0 (the vrouter answers ARP for pods it routes).
    ok(&[
        "ip",
        "netns",
        "exec",
        &host,
        "ip",
        "route",
        "add",
        "10.46.1.0/24",
        "dev",
        "vhost0",
    ]);
    let node = vr_tests::LAB_NODE_IP;
    let _pod_server = tcp_acceptor(&lab.ns[0], &pod, 8080);
    let _host_server = tcp_acceptor(&host, node, 10250);

    // No policy: the pod's VRF has no route to the node, the fabric VRF none to the pod.
    let no_route = |lab: &PodLab| {
        vrctl_json(&lab.socket(), &["stats"])["drops"]["no_route"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = no_route(&lab);
    assert!(
        !pings(&lab.ns[0], node),
        "pod reached the host without a policy"
    );
    assert!(no_route(&lab) > before, "the pod's packets: no route");
    assert!(!pings(&host, &pod), "host reached the pod without a policy");

    // The policy leaks the pod routes into the fabric VRF and the node's address into the
    // pod network: both directions work, ICMP and TCP.
    python("agent_host.py", &[&target, "policy"]);
    assert!(vr_tests::pings_within(&host, &pod), "host -> pod");
    assert!(
        vr_tests::tcp_connects_within(&host, &pod, 8080),
        "host -> pod TCP 8080"
    );
    assert!(vr_tests::pings_within(&lab.ns[0], node), "pod -> host");
    assert!(
        vr_tests::tcp_connects_within(&lab.ns[0], node, 10250),
        "pod -> host TCP 10250"
    );
    let routes = vrctl_json(&lab.socket(), &["rt", "--dump", "0"]);
    let prefixes: Vec<&str> = routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["prefix"].as_str())
        .collect();
    assert!(
        prefixes.contains(&format!("{pod}/32").as_str()) && prefixes.contains(&"192.0.2.1/32"),
        "fabric VRF routes: {prefixes:?}"
    );

    // Policy removed: apart again, and the agent took its routes out of the fabric VRF.
    python("agent_host.py", &[&target, "nopolicy"]);
    assert!(
        !pings(&host, &pod),
        "host reached the pod after the policy went"
    );
    assert!(
        !pings(&lab.ns[0], node),
        "pod reached the host after the policy went"
    );
    let left = vrctl_json(&lab.socket(), &["rt", "--dump", "0"]);
    assert!(
        !left.to_string().contains(&pod),
        "pod route left in the fabric VRF: {left}"
    );
    let o = in_ns(&host, &["ip", "-s", "link", "show", "vhost0"]);
    assert!(o.status.success());
}
