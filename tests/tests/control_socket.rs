//! The daemon's control socket with traffic running: `vrctl` dumps and changes the tables
//! (a route change moves live traffic from the tunnel to a local VM), bad requests are
//! refused without harm, malformed frames do not stop forwarding, SIGTERM ends cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vr_tests::{Daemon, unique_prefix, workspace_bin};
use vrouter::control::Client;
use vrouter::pcap;
use vrouter::testbed::{self, vm1_udp};

/// A running vrouter and its scratch directory (removed when dropped).
struct Lab {
    daemon: Daemon,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start() -> Lab {
    let dir = std::env::temp_dir().join(unique_prefix("vrctl"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let frames: Vec<Vec<u8>> = (0..64u16)
        .map(|i| {
            vm1_udp(
                std::net::Ipv4Addr::new(10, 1, 2, 1 + (i % 8) as u8),
                2000 + i,
                9001,
                &[0x5a; 18],
            )
        })
        .collect();
    pcap::write(dir.join("vm1.pcap"), &frames).unwrap();
    let d = dir.display().to_string();
    let cfg = testbed::config(|name| match name {
        "vm1" => Some(format!("net_pcap0,rx_pcap={d}/vm1.pcap,infinite_rx=1")),
        "fabric" => Some("net_null0,no-rx=1".into()),
        "vm2" => Some("net_null1,no-rx=1".into()),
        _ => None,
    });
    std::fs::write(dir.join("vr.toml"), toml::to_string(&cfg).unwrap()).unwrap();
    let daemon = Daemon::start(&dir, "vr", &dir.join("vr.toml"), 8191, 512);
    Lab { daemon, dir }
}

fn vrctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("vrctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn json(socket: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = vrctl(socket, &a);
    assert!(
        o.status.success(),
        "vrctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn tx(socket: &Path, vif: &str) -> u64 {
    json(socket, &["stats"])["vifs"][vif]["tx"]
        .as_u64()
        .unwrap()
}

/// Waits until `f` holds, for at most 10 s.
fn until(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn vrctl_reprograms_a_running_vrouter_and_bad_requests_do_no_harm() {
    let mut d = start();
    let s = d.daemon.socket.clone();
    until(|| tx(&s, "fabric") > 1000, "traffic to the fabric");

    let routes = json(&s, &["rt", "--dump", "1"]);
    let remote = routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "10.1.2.0/24")
        .unwrap()
        .clone();
    assert_eq!(
        (remote["nh"].as_u64(), remote["label"].as_u64()),
        (Some(3), Some(20))
    );
    let text = String::from_utf8(vrctl(&s, &["vif"]).stdout).unwrap();
    assert!(text.contains("vm1") && text.contains("net_pcap0"), "{text}");

    // Move node B's subnet to vm2: established flows follow the route at once.
    let o = vrctl(&s, &["rt", "--add", "1", "10.1.2.0/24", "--nh", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vm2_before = tx(&s, "vm2");
    until(
        || tx(&s, "vm2") > vm2_before + 1000,
        "traffic moving to vm2",
    );
    // Counters are published by the lcore from time to time: once vm2's has moved on by
    // another 1000 packets, the fabric's was published again too, and must not have moved.
    let fabric = tx(&s, "fabric");
    let vm2_now = tx(&s, "vm2");
    until(|| tx(&s, "vm2") > vm2_now + 1000, "more traffic to vm2");
    assert_eq!(
        tx(&s, "fabric"),
        fabric,
        "nothing goes to the tunnel any more"
    );

    // A bounded capture of vm2's traffic, written as pcap by the vrouter.
    let cap = d.dir.join("vm2.pcap");
    let o = vrctl(
        &s,
        &[
            "vif",
            "--capture",
            "3",
            "--file",
            cap.to_str().unwrap(),
            "--count",
            "25",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let frames = pcap::read(&cap).unwrap();
    assert_eq!(frames.len(), 25);
    assert!(
        frames.iter().all(|f| f[..6] == testbed::VM2_MAC.0),
        "all sent to vm2"
    );
    let o = vrctl(
        &s,
        &["vif", "--capture", "1", "--file", cap.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "vhost0 has no port here");
    let o = vrctl(
        &s,
        &[
            "vif",
            "--capture",
            "3",
            "--file",
            cap.to_str().unwrap(),
            "--count",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(1));

    // Refused requests say why and change nothing.
    let o = vrctl(&s, &["nh", "--delete", "999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not-found"));
    let o = vrctl(&s, &["rt", "--add", "1", "10.9.0.0/16", "--nh", "77"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        json(&s, &["rt", "--dump", "1"])["items"]
            .as_array()
            .unwrap()
            .len(),
        routes["items"].as_array().unwrap().len()
    );

    // Malformed frames: an error reply; an oversized one closes that connection only.
    let mut c = Client::connect(&s).unwrap();
    let r: Value = serde_json::from_slice(&c.raw(b"{not json").unwrap().unwrap()).unwrap();
    assert_eq!(r["error"]["code"], "bad-request");
    {
        use std::io::{Read, Write};
        let mut raw = std::os::unix::net::UnixStream::connect(&s).unwrap();
        raw.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut buf = Vec::new();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = raw.read_to_end(&mut buf);
        assert!(String::from_utf8_lossy(&buf).contains("too-large"));
    }
    let before = tx(&s, "vm2");
    until(
        || tx(&s, "vm2") > before + 1000,
        "forwarding after bad requests",
    );

    // Flows carry the new nexthop; drops are listed.
    let flows = json(&s, &["flow", "-l"]);
    let items = flows["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|f| f["forward"] == true && f["nh"] == 2 && f["packets"].as_u64() > Some(10))
    );
    assert!(vrctl(&s, &["dropstats"]).status.success());

    // SIGTERM: a clean exit that removes the socket.
    let pid = d.daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    let status = loop {
        if let Some(st) = d.daemon.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!s.exists(), "the socket was removed");
    let o = vrctl(&s, &["hello"]);
    assert_eq!(o.status.code(), Some(2), "unreachable is exit 2");
}

#[test]
fn interfaces_are_plugged_in_and_removed_while_traffic_runs() {
    let d = start();
    let s = d.daemon.socket.clone();
    until(|| tx(&s, "fabric") > 1000, "traffic to the fabric");

    // A new VM interface with its own (hot-plugged) device, a nexthop and a route to it.
    let frag = d.dir.join("vm3.toml");
    std::fs::write(
        &frag,
        r#"
[[vif]]
id = 4
name = "vm3"
kind = "virtual"
device = "net_null2,no-rx=1"
mac = "00:00:5e:00:01:00"
vrf = 1
ip4 = "10.1.2.9"

[[nexthop]]
id = 7
type = "encap"
vif = 4
dmac = "02:00:00:00:01:09"
smac = "00:00:5e:00:01:00"

[[route]]
vrf = 1
prefix = "10.1.2.0/24"
nh = 7
"#,
    )
    .unwrap();
    let o = vrctl(&s, &["apply", frag.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    until(
        || {
            json(&s, &["stats"])["vifs"]["vm3"]["tx"]
                .as_u64()
                .unwrap_or(0)
                > 1000
        },
        "traffic on the new vif",
    );
    let vifs = json(&s, &["vif"]);
    assert!(
        vifs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "vm3" && v["device"] == "net_null2,no-rx=1")
    );

    // Take it away again: route back to the tunnel, then the nexthop, then the vif.
    let o = vrctl(&s, &["vif", "--delete", "4"]);
    assert_eq!(o.status.code(), Some(1), "refused while a nexthop uses it");
    assert!(String::from_utf8_lossy(&o.stderr).contains("in-use"));
    for args in [
        &[
            "rt",
            "--add",
            "1",
            "10.1.2.0/24",
            "--nh",
            "3",
            "--label",
            "20",
        ][..],
        &["nh", "--delete", "7"],
        &["vif", "--delete", "4"],
    ] {
        let o = vrctl(&s, args);
        assert!(
            o.status.success(),
            "vrctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let stats = json(&s, &["stats"]);
    assert!(stats["vifs"].get("vm3").is_none(), "vm3 is gone: {stats}");
    let f = tx(&s, "fabric");
    until(|| tx(&s, "fabric") > f + 1000, "traffic back on the tunnel");

    // A device that does not exist: refused, and the vif does not stay in the tables.
    let bad = d.dir.join("bad.toml");
    std::fs::write(&bad, "[[vif]]\nid = 5\nname = \"ghost\"\nkind = \"virtual\"\ndevice = \"net_nosuchdriver0\"\nmac = \"02:00:00:00:00:05\"\nvrf = 1\n").unwrap();
    let o = vrctl(&s, &["apply", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let vifs = json(&s, &["vif"]);
    assert!(
        !vifs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == 5)
    );
    // A new vif on the device another vif uses (the fabric's): refused, the fabric keeps
    // forwarding on its queues.
    let steal = d.dir.join("steal.toml");
    std::fs::write(&steal, "[[vif]]\nid = 6\nname = \"thief\"\nkind = \"virtual\"\ndevice = \"net_null0,no-rx=1\"\nmac = \"02:00:00:00:00:06\"\nvrf = 1\n").unwrap();
    let o = vrctl(&s, &["apply", steal.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already serves vif"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let f = tx(&s, "fabric");
    until(
        || tx(&s, "fabric") > f + 1000,
        "the fabric still forwarding",
    );
    // The same device name can be plugged in again after removal.
    let o = vrctl(&s, &["apply", frag.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    until(
        || {
            json(&s, &["stats"])["vifs"]["vm3"]["tx"]
                .as_u64()
                .unwrap_or(0)
                > 1000
        },
        "vm3 again",
    );
}
