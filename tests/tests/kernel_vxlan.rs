//! Interop with the Linux kernel's VXLAN: a network namespace holds a kernel `vxlan`
//! device (VNI 5001, UDP 4789) whose underlay reaches the vrouter's fabric port over a
//! veth. The kernel resolves the pod's address by ARP inside VXLAN (the vrouter answers
//! through the tunnel) and pings the pod; the pod pings the kernel side back, which the
//! kernel only accepts when the vrouter's inner frames carry its device's MAC.

use std::path::PathBuf;

use vr_tests::{Daemon, in_ns, ok, sh, unique_prefix};

const FABRIC_MAC: &str = "02:fa:00:00:00:01";
const VTEP_MAC: &str = "02:fa:00:00:00:09";
const VX_MAC: &str = "02:00:00:00:00:50";
const POD_MAC: &str = "02:00:00:00:01:03";

struct Lab {
    daemon: Option<Daemon>,
    ns: Vec<String>,
    links: Vec<String>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.daemon.take());
        for ns in &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for l in &self.links {
            let _ = sh(&["ip", "link", "del", l]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(fabric_if: &str, pod_if: &str) -> String {
    format!(
        r#"
[global]
encap_priority = ["vxlan"]
fabric_vif = 0

[[vrf]]
id = 0
[[vrf]]
id = 1

[[vif]]
id = 0
name = "fabric"
kind = "physical"
device = "net_af_packet0,iface={fabric_if}"
mac = "{FABRIC_MAC}"
vrf = 0
ip4 = "192.0.2.1"

[[vif]]
id = 2
name = "pod"
kind = "virtual"
device = "packet:{pod_if}"
mac = "00:00:5e:00:01:00"
vrf = 1
ip4 = "10.1.1.3"

[[nexthop]]
id = 1
type = "encap"
vif = 2
dmac = "{POD_MAC}"
smac = "00:00:5e:00:01:00"

# The kernel VTEP: VXLAN only, frames for its vxlan device's MAC.
[[nexthop]]
id = 3
type = "tunnel"
vif = 0
src = "192.0.2.1"
dst = "192.0.2.9"
smac = "{FABRIC_MAC}"
dmac = "{VTEP_MAC}"
encaps = ["vxlan"]
inner_dmac = "{VX_MAC}"

[[route]]
vrf = 1
prefix = "10.1.1.3/32"
nh = 1

[[route]]
vrf = 1
prefix = "10.1.1.50/32"
nh = 3
label = 5001

[[vni]]
vni = 5001
vrf = 1
"#
    )
}

#[test]
fn a_kernel_vxlan_device_and_a_pod_ping_each_other_through_the_vrouter() {
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(unique_prefix("vrkvx"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (kns, pns) = (format!("vrkv{id}"), format!("vrkp{id}"));
    let (fabric_if, pod_if) = (format!("vkf{id}"), format!("vkp{id}"));
    let mut lab = Lab {
        daemon: None,
        ns: vec![kns.clone(), pns.clone()],
        links: vec![fabric_if.clone(), pod_if.clone()],
        dir,
    };
    for (ns, host) in [(&kns, &fabric_if), (&pns, &pod_if)] {
        ok(&["ip", "netns", "add", ns]);
        ok(&[
            "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ok(&["ip", "link", "set", host, "up"]);
        for cmd in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ethtool", "-K", "eth0", "tx", "off"],
        ] {
            let mut c = vec!["ip", "netns", "exec", ns.as_str()];
            c.extend(cmd);
            ok(&c);
        }
    }
    // The kernel side: an underlay address, the vrouter's fabric address known statically
    // (no vhost0 here to answer ARP for it), and the VXLAN device in the overlay.
    for cmd in [
        vec!["ip", "link", "set", "eth0", "address", VTEP_MAC],
        vec!["ip", "addr", "add", "192.0.2.9/24", "dev", "eth0"],
        vec!["ip", "link", "set", "eth0", "up"],
        vec![
            "ip",
            "neigh",
            "add",
            "192.0.2.1",
            "lladdr",
            FABRIC_MAC,
            "dev",
            "eth0",
        ],
        vec![
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "5001",
            "remote",
            "192.0.2.1",
            "local",
            "192.0.2.9",
            "dstport",
            "4789",
            "dev",
            "eth0",
        ],
        vec!["ip", "link", "set", "vx0", "address", VX_MAC],
        vec!["ip", "addr", "add", "10.1.1.50/24", "dev", "vx0"],
        vec!["ip", "link", "set", "vx0", "up"],
    ] {
        let mut c = vec!["ip", "netns", "exec", kns.as_str()];
        c.extend(cmd);
        ok(&c);
    }
    for cmd in [
        vec!["ip", "link", "set", "eth0", "address", POD_MAC],
        vec!["ip", "addr", "add", "10.1.1.3/24", "dev", "eth0"],
        vec!["ip", "link", "set", "eth0", "up"],
    ] {
        let mut c = vec!["ip", "netns", "exec", pns.as_str()];
        c.extend(cmd);
        ok(&c);
    }
    let cfg = lab.dir.join("vr.toml");
    std::fs::write(&cfg, config(&fabric_if, &pod_if)).unwrap();
    let d = Daemon::start(&lab.dir, "vr", &cfg, 8191, 512);
    let _dump = vr_tests::DumpOnFailure(vec![d.socket.clone()]);
    lab.daemon = Some(d);

    // Kernel VXLAN -> pod: ARP inside VXLAN answered by the vrouter, then ICMP.
    let o = in_ns(
        &kns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.1.3"],
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && text.contains("3 received"),
        "kernel -> pod:\n{text}"
    );
    let neigh = String::from_utf8_lossy(
        &in_ns(&kns, &["ip", "neigh", "show", "10.1.1.3", "dev", "vx0"]).stdout,
    )
    .into_owned();
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "the kernel learned the vrouter MAC over VXLAN: {neigh}"
    );
    // Pod -> kernel VXLAN: the vrouter encapsulates towards the kernel VTEP.
    let o = in_ns(
        &pns,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.1.50"],
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && text.contains("3 received"),
        "pod -> kernel:\n{text}"
    );
}
