//! The agent against a real vrouter: a Python grpcio client builds a two-VN topology with
//! a network policy, a security group and a service VIP, and checks the vrouter's tables
//! through `vrctl --json`; invalid requests are refused with the right codes and change
//! nothing. Restarts: a killed agent leaves the vrouter forwarding with its tables, and a
//! restarted one finds its configuration on disk and repairs drift by diff with the same
//! ids; the vrouter restarting under a running agent is reprogrammed.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vr_tests::{Agent, Daemon, http_get, python, unique_prefix, workspace_bin};

struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = std::env::temp_dir().join(unique_prefix(tag));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("vr.toml"),
            vr_tests::agent_node_config("192.0.2.1"),
        )
        .unwrap();
        Lab { dir }
    }

    fn vrouter(&self) -> Daemon {
        Daemon::start(&self.dir, "vr", &self.dir.join("vr.toml"), 2047, 256)
    }

    fn agent(&self, d: &Daemon) -> Agent {
        Agent::start(&self.dir, "agent", &d.socket, &self.dir.join("data"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        vr_tests::print_logs_on_failure(&self.dir, &["vr.log", "agent.log"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent's objects in the vrouter (ids from the agent's bases up).
fn agent_tables(socket: &Path) -> Value {
    let keep = |v: Value, key: &str, from: u64| -> Value {
        Value::Array(
            v.as_array()
                .unwrap()
                .iter()
                .filter(|x| x[key].as_u64().unwrap() >= from)
                .cloned()
                .collect(),
        )
    };
    let vrfs = keep(vr_tests::vrctl_json(socket, &["vrf"]), "id", 1);
    let routes: Vec<Value> = vrfs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| vr_tests::vrctl_json(socket, &["rt", "--dump", &v["id"].to_string()]))
        .collect();
    serde_json::json!({
        "vifs": keep(vr_tests::vrctl_json(socket, &["vif"]), "id", 16),
        "nhs": keep(vr_tests::vrctl_json(socket, &["nh"]), "id", 64),
        "labels": keep(vr_tests::vrctl_json(socket, &["mpls"]), "label", 32),
        "vrfs": vrfs.as_array().unwrap().iter().map(|v| v["id"].clone()).collect::<Vec<_>>(),
        "routes": routes,
        "vnis": vr_tests::vrctl_json(socket, &["vxlan"]),
    })
}

fn status(a: &Agent) -> Value {
    let out = python("agent_small.py", &[&a.target, "status"]);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn python_client_builds_two_vns_with_policy_and_bad_requests_change_nothing() {
    let lab = Lab::new("agapi");
    let vr = lab.vrouter();
    let agent = lab.agent(&vr);
    let vrctl_bin = workspace_bin("vrctl").display().to_string();
    let out = python(
        "agent_api.py",
        &[&agent.target, &vrctl_bin, &vr.socket.display().to_string()],
    );
    assert!(out.contains("agent API scenario: ok"), "{out}");

    // The metrics endpoint carries the agent's and the vrouter's counters.
    let body = http_get(&agent.metrics, "/metrics");
    assert!(body.contains("agent_vrouter_connected 1"), "{body}");
    assert!(
        body.contains("agent_objects{type=\"virtual-network\"} 3"),
        "{body}"
    );
    assert!(body.contains("vrouter_up 1"), "{body}");
    assert!(body.contains("vrouter_drops_total{reason="), "{body}");
    // Every declared packet counter, as a counter, with its zero.
    for (name, _) in vrouter::pipeline::Counters::ALL {
        assert!(
            body.contains(&format!(
                "# TYPE vrouter_{name}_total counter\nvrouter_{name}_total "
            )),
            "{name}: {body}"
        );
    }
    assert!(
        body.contains("vrouter_vif_rx_total{vif=\"fabric\"}"),
        "{body}"
    );
}

#[test]
fn a_killed_agent_leaves_the_tables_and_a_restarted_one_repairs_drift_with_the_same_ids() {
    let lab = Lab::new("agrestart");
    let vr = lab.vrouter();
    let mut agent = lab.agent(&vr);
    python("agent_small.py", &[&agent.target, "build"]);
    let before = agent_tables(&vr.socket);
    let revision = status(&agent)["revision"].clone();
    assert_eq!(before["vifs"].as_array().unwrap().len(), 2, "{before}");
    assert_eq!(before["routes"][0].as_array().unwrap().len(), 2, "{before}");

    // SIGKILL: the vrouter keeps everything (headless).
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert_eq!(
        agent_tables(&vr.socket),
        before,
        "the tables outlived the agent"
    );

    // Drift while the agent is away: a route deleted, a stray nexthop in the agent's range.
    let vrf = before["vrfs"][0].to_string();
    let prefix = before["routes"][0][0]["prefix"]
        .as_str()
        .unwrap()
        .to_string();
    vr_tests::vrctl_json(&vr.socket, &["rt", "--delete", &vrf, &prefix]);
    std::fs::write(
        lab.dir.join("stray.toml"),
        "[[nexthop]]\nid = 999\ntype = \"discard\"\n",
    )
    .unwrap();
    vr_tests::vrctl_json(
        &vr.socket,
        &["apply", &lab.dir.join("stray.toml").display().to_string()],
    );
    assert_ne!(agent_tables(&vr.socket), before);

    let agent = lab.agent(&vr);
    let s = status(&agent);
    assert_eq!(
        s["revision"], revision,
        "the configuration came back from disk: {s}"
    );
    assert_eq!(
        agent_tables(&vr.socket),
        before,
        "the route is back, the stray nexthop gone, every id the same"
    );
    let ops = s["ops"].as_u64().unwrap();
    assert_eq!(
        ops, 2,
        "repaired by diff (one route added, one nexthop deleted): {s}"
    );

    // Another restart with nothing to repair sends nothing.
    drop(agent);
    let agent = lab.agent(&vr);
    let s = status(&agent);
    assert_eq!(s["ops"], 0, "{s}");
    assert_eq!(agent_tables(&vr.socket), before);

    // A restarted vrouter (empty tables) is reprogrammed by the running agent.
    drop(vr);
    let vr = lab.vrouter();
    let t = std::time::Instant::now();
    while agent_tables(&vr.socket) != before {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "not reprogrammed: {}\n{}",
            agent_tables(&vr.socket),
            agent.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // And new configuration still flows.
    python("agent_small.py", &[&agent.target, "add-vm", "vm3"]);
    assert_eq!(
        agent_tables(&vr.socket)["vifs"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn snat_port_ranges_of_the_global_configuration_reach_the_vrouter_and_the_hosts_reserved_list() {
    let lab = Lab::new("agsnat");
    let vr = lab.vrouter();
    let agent = lab.agent(&vr);
    let snat = || vr_tests::vrctl_json(&vr.socket, &["snat"]);
    let reserved = lab.dir.join("agent.reserved_ports");
    // Before any pool is configured: the vrouter's defaults, reserved on the host.
    python("agent_small.py", &[&agent.target, "build"]);
    assert_eq!(
        snat(),
        serde_json::json!({"tcp": [56000, 57023], "udp": [57024, 58047]})
    );
    vr_tests::wait_until(
        "the default SNAT ranges reserved",
        std::time::Duration::from_secs(20),
        || std::fs::read_to_string(&reserved).unwrap() == "56000-58047\n",
    );
    // The operator's pools (bad ones refused at the API first).
    python(
        "agent_small.py",
        &[
            &agent.target,
            "snat-ports",
            "40000",
            "40999",
            "41000",
            "41999",
        ],
    );
    assert_eq!(
        snat(),
        serde_json::json!({"tcp": [40000, 40999], "udp": [41000, 41999]})
    );
    assert_eq!(
        std::fs::read_to_string(&reserved).unwrap(),
        "40000-41999\n",
        "the old ranges gave way to the new"
    );
    // The vrouter refuses privileged ranges on its own too.
    let out = std::process::Command::new(workspace_bin("vrctl"))
        .arg("--socket")
        .arg(&vr.socket)
        .args(["snat", "--tcp", "1-100", "--udp", "41000-41999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("global.snat_ports.tcp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snat()["tcp"], serde_json::json!([40000, 40999]));
}
