//! Two nodes exchange routes through a real etcd: each agent publishes its pod's address,
//! the other programs a route to it over a tunnel nexthop with the publisher's label, and a
//! service VIP backed by a pod on each node becomes an ECMP composite of a local and a
//! remote member on both. Unplugging a pod withdraws its route from the other node.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vr_tests::{Agent, Daemon, Reap, free_port, python, unique_prefix};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        vr_tests::print_logs_on_failure(
            &self.0,
            &["a.log", "b.log", "agent-a.log", "agent-b.log", "etcd.log"],
        );
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent VRF's routes as prefix -> (nexthop, label).
fn routes(socket: &Path) -> Vec<(String, u64, u64)> {
    let vrf = vr_tests::vrctl_json(socket, &["vrf"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .find(|id| *id >= 1)
        .expect("the agent made a VRF");
    vr_tests::vrctl_json(socket, &["rt", "--dump", &vrf.to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_string(),
                r["nh"].as_u64().unwrap(),
                r["label"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn nh(socket: &Path, id: u64) -> Value {
    vr_tests::vrctl_json(socket, &["nh"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The label a node's vrouter maps to its local vif `name`.
fn label_of(socket: &Path, name: &str) -> u64 {
    let vif = vr_tests::vrctl_json(socket, &["vif"])
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()["id"]
        .clone();
    let nhs = vr_tests::vrctl_json(socket, &["nh"]);
    let nh = nhs
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "encap" && n["vif"] == vif)
        .unwrap()["id"]
        .clone();
    vr_tests::vrctl_json(socket, &["mpls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["nh"] == nh)
        .unwrap()["label"]
        .as_u64()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A one-member etcd on two free ports; tried again with new ports when another process
/// takes one between the look-up and etcd's bind.
fn etcd(dir: &std::path::Path) -> (Reap, String) {
    for _ in 0..5 {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let _ = std::fs::remove_dir_all(dir.join("etcd"));
        let mut child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        let mut exited = false;
        vr_tests::wait_until("etcd serves", std::time::Duration::from_secs(20), || {
            exited = child.try_wait().ok().flatten().is_some();
            exited || std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
        });
        if !exited {
            return (Reap(child), url);
        }
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        assert!(
            log.contains("address already in use"),
            "etcd failed:\n{log}"
        );
    }
    panic!("etcd's ports were taken five times");
}

#[test]
fn two_nodes_learn_each_others_routes_through_etcd() {
    let dir = std::env::temp_dir().join(unique_prefix("agetcd"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = Dir(dir.clone());
    let (_etcd, url) = etcd(&dir);
    let mut vr = Vec::new();
    let mut agents = Vec::new();
    for (n, ip) in [("a", "192.0.2.1"), ("b", "192.0.2.2")] {
        std::fs::write(
            dir.join(format!("{n}.toml")),
            vr_tests::agent_node_config(ip),
        )
        .unwrap();
        let v = Daemon::start(&dir, n, &dir.join(format!("{n}.toml")), 2047, 256);
        agents.push(Agent::start_with(
            &dir,
            &format!("agent-{n}"),
            &v.socket,
            &dir.join(format!("data-{n}")),
            &["--etcd", &url, "--route-ttl", "5"],
        ));
        vr.push(v);
    }
    python(
        "agent_multi.py",
        &[&agents[0].target, &agents[1].target, "build"],
    );
    let (sa, sb) = (vr[0].socket.clone(), vr[1].socket.clone());
    wait_for("node a learns pod b", || {
        routes(&sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    wait_for("node b learns pod a", || {
        routes(&sb).iter().any(|r| r.0 == "10.60.0.10/32")
    });

    // Node a: pod b over a tunnel to 192.0.2.2 with node b's label for pod b.
    let label_b = label_of(&sb, "pod-b");
    let r = routes(&sa);
    let to_b = r.iter().find(|r| r.0 == "10.60.0.11/32").unwrap();
    let t = nh(&sa, to_b.1);
    assert_eq!(t["type"], "tunnel", "{t}");
    assert_eq!(t["dst"], "192.0.2.2");
    assert_eq!(t["src"], "192.0.2.1");
    assert_eq!(
        t["dmac"], "02:fa:00:00:00:02",
        "the remote node's fabric MAC"
    );
    assert_eq!(to_b.2, label_b, "node b's label");

    // The VIP: a composite of the local pod and the tunnel to the other node, on both.
    for (s, other_ip) in [(&sa, "192.0.2.2"), (&sb, "192.0.2.1")] {
        wait_for("the VIP has two paths", || {
            let r = routes(s);
            r.iter()
                .find(|r| r.0 == "10.60.0.100/32")
                .is_some_and(|v| nh(s, v.1)["type"] == "composite")
        });
        let r = routes(s);
        let vip = r.iter().find(|r| r.0 == "10.60.0.100/32").unwrap();
        let members = nh(s, vip.1)["members"].as_array().unwrap().clone();
        let mut kinds: Vec<String> = members
            .iter()
            .map(|m| {
                let n = nh(s, m["nh"].as_u64().unwrap());
                match n["type"].as_str().unwrap() {
                    "tunnel" => format!("tunnel:{}", n["dst"].as_str().unwrap()),
                    k => k.to_string(),
                }
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec!["encap".to_string(), format!("tunnel:{other_ip}")]
        );
    }

    // Values anyone with etcd access can write: each refused and counted, and nothing
    // else stops (both nodes keep their routes).
    let written = python("etcd_inject.py", &[&url, "192.0.2.2"]);
    assert_eq!(written.trim(), "6", "{written}");
    let refused = |a: &Agent| -> u64 {
        vr_tests::http_get(&a.metrics, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("agent_refused_routes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for("both agents refuse the five bad values", || {
        agents.iter().all(|a| refused(a) >= 5)
    });
    for s in [&sa, &sb] {
        let r = routes(s);
        for p in [
            "0.0.0.0/0",
            "10.60.0.77/32",
            "10.60.0.78/32",
            "10.60.0.79/32",
            "10.60.0.80/32",
            "10.99.0.1/32",
        ] {
            assert!(!r.iter().any(|x| x.0 == p), "{p} was programmed: {r:?}");
        }
    }
    let r = routes(&sa);
    let to_b = r.iter().find(|r| r.0 == "10.60.0.11/32").unwrap();
    assert_eq!(
        nh(&sa, to_b.1)["dst"],
        "192.0.2.2",
        "pod b still through node b"
    );

    // Pod b unplugged: node a withdraws its route, and the VIP is local only.
    python(
        "agent_multi.py",
        &[&agents[0].target, &agents[1].target, "unplug-b"],
    );
    wait_for("node a withdraws pod b", || {
        !routes(&sa).iter().any(|r| r.0 == "10.60.0.11/32")
    });
    let r = routes(&sa);
    let vip = r.iter().find(|r| r.0 == "10.60.0.100/32").unwrap();
    assert_eq!(nh(&sa, vip.1)["type"], "encap");
    drop(d);
}
