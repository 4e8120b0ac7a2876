//! AddPort as an attack: devices naming files, host NICs, the loopback, options or drivers
//! off the allow-list are refused with INVALID_ARGUMENT, the vrouter (root) creates no file
//! and takes no interface, the refusals are counted, and the agent goes on serving: the
//! same interface then plugs on its veth and its pod reaches the vrouter.

use vr_tests::{PodLab, in_ns, json_lines, pings, python, vrctl_json};

#[test]
fn hostile_devices_are_refused_and_nothing_is_written_or_taken() {
    let lab = PodLab::start("agdv", 1);
    let target = lab.target();
    let scratch = lab.dir.display().to_string();
    let out = python("agent_devices.py", &[&target, &scratch, &lab.host_if[0]]);
    let lines = json_lines(&out);
    let (tries, port) = lines.split_at(lines.len() - 1);
    assert_eq!(tries.len(), 15, "{out}");
    for t in tries {
        assert_eq!(t["code"], "INVALID_ARGUMENT", "{t}");
        assert!(
            t["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("device: ")),
            "the refusal names the field: {t}"
        );
    }
    for f in ["pwned.pcap", "x.pcap", "vh.sock"] {
        assert!(!lab.dir.join(f).exists(), "{f} was created");
    }
    // The vrouter has only its fabric vif and the pod's, on the pod's veth.
    let vifs = vrctl_json(&lab.socket(), &["vif"]);
    let devices: Vec<&str> = vifs
        .as_array()
        .expect("vifs")
        .iter()
        .filter_map(|v| v["device"].as_str())
        .collect();
    assert_eq!(
        devices,
        [
            "net_null0,no-rx=1".to_string(),
            format!("packet:{}", lab.host_if[0])
        ],
        "{vifs}"
    );
    let metrics = vr_tests::http_get(&lab.agent.as_ref().unwrap().metrics, "/metrics");
    assert!(
        metrics.contains("agent_refused_devices_total 15"),
        "refusals counted: {metrics}"
    );
    // The agent still serves: the pod is plugged, and the vrouter answers its ARP for the
    // gateway on that port.
    lab.plug(0, &port[0]);
    let gw = port[0]["gateway"].as_str().expect("gateway").to_string();
    let _ = pings(&lab.ns[0], &gw);
    let neigh = in_ns(&lab.ns[0], &["ip", "neigh", "show", &gw]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "the vrouter answered ARP on the plugged port: {neigh}"
    );
}
