//! ip-fabric SNAT in `vrlab`, with real connections to a host outside the overlay (on
//! the fabric, no route to any pod): a pod of a network with SNAT reaches it with the
//! node's address and a port of the reserved ranges (TCP 56000-57023, UDP 57024-58047);
//! a pod of a network without is not let out; the namespace annotation turns it on and
//! off at any time, the default namespace deciding for the cluster's pod network.

use std::path::Path;

use vr_tests::VrLab;

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/snat")
        .join(name)
        .display()
        .to_string()
}

/// A probe to the outside host: the source address and port it saw, or none if blocked.
fn to_outside(lab: &VrLab, from: &str, port: &str, protocol: &str) -> Option<(String, u16)> {
    let o = lab.vrlab(&[
        "probe",
        "--from",
        from,
        "--to",
        "outside",
        "--port",
        port,
        "--protocol",
        protocol,
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    if o.status.code() != Some(0) {
        assert_eq!(o.status.code(), Some(1), "{out}");
        return None;
    }
    // "... connected (outside) as ADDR:PORT"
    let seen = out.trim().rsplit(' ').next().unwrap_or_default();
    let (addr, port) = seen.rsplit_once(':').expect(&out);
    Some((addr.to_string(), port.parse().expect(&out)))
}

fn set_snat(lab: &VrLab, ns: &str, extra: &str, on: bool) {
    let f = lab.dir.join(format!("{ns}.yaml"));
    std::fs::write(
        &f,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  annotations:\n    \
             opencontrail.org/ip_fabric_snat: \"{on}\"\n{extra}"
        ),
    )
    .unwrap();
    lab.ok(&["apply", "-f", f.to_str().unwrap()]);
}

#[test]
fn pods_reach_outside_through_the_node_address_where_snat_is_on() {
    let lab = VrLab::new("k8s-snat");
    lab.ok(&["up"]);
    lab.ok(&["apply", "-f", &manifest("cluster.yaml")]);
    let node = vr_tests::address_of(&lab.state()["nodes"][0]["ip"]);

    // default/a: SNAT through the node, TCP and UDP from their own ranges; a second
    // connection gets another port.
    let (addr, p1) = to_outside(&lab, "default/a", "80", "TCP").expect("default/a -> outside");
    assert_eq!(addr, node);
    assert!((56000..=57023).contains(&p1), "TCP port {p1}");
    let (_, p2) = to_outside(&lab, "default/a", "80", "TCP").expect("again");
    assert_ne!(p1, p2, "each connection its own port");
    let (addr, p) = to_outside(&lab, "default/a", "53", "UDP").expect("UDP");
    assert_eq!(addr, node);
    assert!((57024..=58047).contains(&p), "UDP port {p}");
    // iso's network has no SNAT: not let out.
    assert_eq!(to_outside(&lab, "iso/x", "80", "TCP"), None);
    // The pods still reach each other directly (iso -> default), not through the node.
    let o = lab.ok(&["probe", "--from", "iso/x", "--to", "default/a"]);
    assert!(!o.contains(&format!("as {node}:")), "{o}");

    // Turned on for iso, off for the cluster's pod network.
    set_snat(
        &lab,
        "iso",
        "    opencontrail.org/isolation: \"true\"\n",
        true,
    );
    set_snat(&lab, "default", "", false);
    let (addr, _) = to_outside(&lab, "iso/x", "80", "TCP").expect("iso/x -> outside");
    assert_eq!(addr, node);
    assert_eq!(to_outside(&lab, "default/a", "80", "TCP"), None);
}

/// ip-fabric forwarding over two nodes: the cluster's pod network takes its addresses from
/// the ip-fabric subnets and crosses the fabric as it is (no tunnel: the vrouters count no
/// encapsulation for it), while an isolated namespace's network stays in the overlay
/// (tunnels); SNAT is ignored for a forwarded network; forwarding stays on once on.
#[test]
fn a_forwarded_pod_network_crosses_the_fabric_without_encapsulation() {
    let lab = VrLab::new("k8s-fwd");
    lab.ok(&["up", "--nodes", "2"]);
    lab.ok(&["apply", "-f", &manifest("forwarding.yaml")]);
    let state = lab.state();
    let pod = |k: &str| state["pods"][k].clone();
    for k in ["default/a", "default/b"] {
        let ip = vr_tests::address_of(&pod(k)["ip"]);
        assert!(
            ip.starts_with("10.6"),
            "{k}: from the ip-fabric subnet: {ip}"
        );
    }
    assert_ne!(pod("default/a")["node"], pod("default/b")["node"], "spread");
    let encaps = || -> Vec<(u64, u64)> {
        ["node1", "node2"]
            .iter()
            .map(|n| {
                let s = vr_tests::vrctl_json(&lab.dir.join(n).join("vrouter.sock"), &["stats"]);
                (s["encap"].as_u64().unwrap(), s["decap"].as_u64().unwrap())
            })
            .collect()
    };
    let before = encaps();
    for (f, t) in [("default/a", "default/b"), ("default/b", "default/a")] {
        let o = lab.ok(&["probe", "--from", f, "--to", t]);
        // The server saw the client's own address: no NAT on the way.
        let ip = vr_tests::address_of(&pod(f)["ip"]);
        assert!(o.contains(&format!("as {ip}:")), "{o}");
    }
    assert_eq!(encaps(), before, "no tunnel for the forwarded network");
    // SNAT is ignored: the forwarded network has no way out through the node's address.
    assert_eq!(to_outside(&lab, "default/a", "80", "TCP"), None);
    // The isolated namespace's pods are in the overlay: tunnels.
    let (x, y) = (pod("iso/x"), pod("iso/y"));
    assert_ne!(x["node"], y["node"]);
    lab.ok(&["probe", "--from", "iso/x", "--to", "iso/y"]);
    let after = encaps();
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(a, b)| a.0 > b.0 && a.1 > b.1),
        "{before:?} -> {after:?}"
    );
    // Forwarding cannot be turned off: without the annotation the network stays in the
    // underlay, and so do its pods' addresses.
    set_snat(&lab, "default", "", true);
    let again = lab.state();
    assert_eq!(again["pods"]["default/a"]["ip"], pod("default/a")["ip"]);
    let before = encaps();
    lab.ok(&["probe", "--from", "default/a", "--to", "default/b"]);
    assert_eq!(encaps()[..], before[..], "still no tunnel");
}
