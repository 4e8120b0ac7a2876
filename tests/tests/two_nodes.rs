//! Two vrouter nodes over a fabric: each node is a vrouter process whose fabric port is a
//! DPDK tap, the two taps joined by a Linux bridge, and whose pod port is a tap moved into
//! the pod's network namespace as its eth0. The jumbo variant (a 9,000-byte fabric, which
//! DPDK's tap cannot carry) runs every link as a veth served by the vrouter's own
//! host-interface rings instead. A pod pings the other node's pod across the
//! tunnel, once per encapsulation; the fabric traffic is captured by the vrouter and
//! decoded by tshark, which must see the right labels / VNIs. 8 MiB of TCP cross between
//! full-MTU pods with each encapsulation (the vrouters clamp the SYNs' MSS), and a ping
//! with DF too big for the tunnel gets "fragmentation needed" with the MTU that fits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vr_tests::{Daemon, ok, sh, unique_prefix, workspace_bin};
use vrouter::pcap;

/// A pod: address, gateway, MAC.
type Pod = (&'static str, &'static str, &'static str);
const POD_A: Pod = ("10.1.1.3", "10.1.1.1", "02:00:00:00:01:03");
const POD_B: Pod = ("10.1.2.5", "10.1.2.1", "02:00:00:00:02:05");

/// One side of the lab: fabric address and MAC, its pod, the pod's label / VNI, and the
/// other side's pod subnet and label.
struct Node {
    name: &'static str,
    ip: &'static str,
    mac: &'static str,
    pod: Pod,
    label: u32,
    remote_net: &'static str,
    remote_label: u32,
    /// The pod's IPv6 address and the other side's IPv6 pod network.
    pod6: &'static str,
    remote_net6: &'static str,
}

const NODES: [Node; 2] = [
    Node {
        name: "a",
        ip: "192.0.2.1",
        mac: "02:fa:00:00:00:01",
        pod: POD_A,
        label: 17,
        remote_net: "10.1.2.0/24",
        remote_label: 20,
        pod6: "fd00:1::3",
        remote_net6: "fd00:2::/64",
    },
    Node {
        name: "b",
        ip: "192.0.2.2",
        mac: "02:fa:00:00:00:02",
        pod: POD_B,
        label: 20,
        remote_net: "10.1.1.0/24",
        remote_label: 17,
        pod6: "fd00:2::5",
        remote_net6: "fd00:1::/64",
    },
];

/// Everything the test creates; removed on drop, also when the test fails.
struct Lab {
    id: u32,
    dir: PathBuf,
    ns: Vec<String>,
    bridge: String,
    daemons: Vec<Daemon>,
    /// The MTU of the fabric and of the pods' links.
    mtu: u16,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
        for ns in &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new() -> Lab {
        Lab::with_mtu(1500)
    }

    /// A lab whose fabric and pod links have `mtu`; above 1500 they are veths (DPDK's tap
    /// carries no jumbo frame).
    fn with_mtu(mtu: u16) -> Lab {
        let id = std::process::id() % 100_000;
        let dir = std::env::temp_dir().join(unique_prefix("vr2n"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bridge = format!("vrbr{id}");
        let mut lab = Lab {
            id,
            dir,
            ns: vec![],
            bridge: bridge.clone(),
            daemons: vec![],
            mtu,
        };
        ok(&["ip", "link", "add", &bridge, "type", "bridge"]);
        ok(&["ip", "link", "set", &bridge, "up"]);
        for n in &NODES {
            let ns = format!("vr2{}{id}", n.name);
            ok(&["ip", "netns", "add", &ns]);
            ok(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            lab.ns.push(ns);
        }
        lab
    }

    /// Whether the links are veths served by the vrouter (else DPDK taps).
    fn veths(&self) -> bool {
        self.mtu > 1500
    }

    fn config(&self, encap: &str, n: &Node, peer: &Node) -> String {
        let id = self.id;
        let (node, mtu) = (n.name, self.mtu);
        let (fabric_dev, pod_dev) = if self.veths() {
            (
                format!("packet:tf{node}{id}"),
                format!("packet:tp{node}{id}"),
            )
        } else {
            (
                format!("net_tap0,iface=tf{node}{id}"),
                format!("net_tap1,iface=tp{node}{id}"),
            )
        };
        format!(
            r#"
[global]
encap_priority = ["{encap}"]
fabric_vif = 0

[[vrf]]
id = 0
[[vrf]]
id = 1

[[vif]]
id = 0
name = "fabric"
kind = "physical"
device = "{fabric_dev}"
mac = "{mac}"
vrf = 0
ip4 = "{ip}"
mtu = {mtu}

[[vif]]
id = 2
name = "pod"
kind = "virtual"
device = "{pod_dev}"
mac = "00:00:5e:00:01:00"
vrf = 1
ip4 = "{pod_ip}"
ip6 = "{pod6}"
mtu = {mtu}

[[nexthop]]
id = 1
type = "encap"
vif = 2
dmac = "{pod_mac}"
smac = "00:00:5e:00:01:00"

[[nexthop]]
id = 3
type = "tunnel"
vif = 0
src = "{ip}"
dst = "{peer_ip}"
smac = "{mac}"
dmac = "{peer_mac}"

[[route]]
vrf = 1
prefix = "{pod_ip}/32"
nh = 1

[[route]]
vrf = 1
prefix = "{pod6}/128"
nh = 1

[[route]]
vrf = 1
prefix = "{remote_net}"
nh = 3
label = {remote_label}

[[route]]
vrf = 1
prefix = "{remote_net6}"
nh = 3
label = {remote_label}

[[label]]
label = {label}
nh = 1

[[vni]]
vni = {label}
vrf = 1
"#,
            mac = n.mac,
            ip = n.ip,
            pod_ip = n.pod.0,
            pod_mac = n.pod.2,
            peer_ip = peer.ip,
            peer_mac = peer.mac,
            remote_net = n.remote_net,
            remote_label = n.remote_label,
            label = n.label,
            pod6 = n.pod6,
            remote_net6 = n.remote_net6,
        )
    }

    /// Starts both nodes with `encap`, plugs their taps in; returns the control sockets.
    fn start(&mut self, encap: &str) -> Vec<PathBuf> {
        let id = self.id;
        let mtu = self.mtu.to_string();
        if self.veths() {
            // Every link before the vrouters open their rings on it: the fabric's vrouter
            // end with its other end on the bridge, the pod's with its other end as the
            // pod's eth0. Both ends at the MTU, no offload (whole frames on the rings).
            for (n, ns) in NODES.iter().zip(self.ns.clone()) {
                let (fabric, wire) = (format!("tf{}{id}", n.name), format!("tw{}{id}", n.name));
                let pod = format!("tp{}{id}", n.name);
                let _ = sh(&["ip", "link", "del", &fabric]);
                let _ = sh(&["ip", "link", "del", &pod]);
                let _ = sh(&["ip", "netns", "exec", &ns, "ip", "link", "del", "eth0"]);
                ok(&[
                    "ip", "link", "add", &fabric, "mtu", &mtu, "type", "veth", "peer", "name",
                    &wire, "mtu", &mtu,
                ]);
                ok(&[
                    "ip", "link", "add", &pod, "mtu", &mtu, "type", "veth", "peer", "name", "eth0",
                    "mtu", &mtu, "netns", &ns,
                ]);
                for dev in [&fabric, &wire, &pod] {
                    let _ =
                        std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
                    ok(&[
                        "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
                    ]);
                    ok(&["ip", "link", "set", dev, "up"]);
                }
                ok(&[
                    "ip", "netns", "exec", &ns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off",
                    "gso", "off", "gro", "off",
                ]);
                ok(&["ip", "link", "set", &self.bridge, "mtu", &mtu]);
                ok(&["ip", "link", "set", &wire, "master", &self.bridge]);
            }
        }
        let mut sockets = Vec::new();
        for (i, n) in NODES.iter().enumerate() {
            let cfg = self.dir.join(format!("{}-{encap}.toml", n.name));
            std::fs::write(&cfg, self.config(encap, n, &NODES[1 - i])).unwrap();
            // Room for a pool of jumbo buffers beside the tables.
            let mem = if self.veths() { 512 } else { 256 };
            let d = Daemon::start(&self.dir, n.name, &cfg, 4095, mem);
            sockets.push(d.socket.clone());
            self.daemons.push(d);
        }
        for (n, ns) in NODES.iter().zip(self.ns.clone()) {
            if !self.veths() {
                // The fabric taps join the bridge; each pod tap becomes its pod's eth0.
                let fabric = format!("tf{}{id}", n.name);
                ok(&["ip", "link", "set", &fabric, "master", &self.bridge]);
                ok(&["ip", "link", "set", &fabric, "up"]);
                let tap = format!("tp{}{id}", n.name);
                ok(&["ip", "link", "set", &tap, "netns", &ns]);
                let mut full = vec!["ip", "netns", "exec", &ns];
                full.extend(["ip", "link", "set", &tap, "name", "eth0"]);
                ok(&full);
            }
            let addr = format!("{}/24", n.pod.0);
            let addr6 = format!("{}/64", n.pod6);
            for cmd in [
                vec!["ip", "link", "set", "eth0", "address", n.pod.2],
                vec!["ip", "addr", "add", &addr, "dev", "eth0"],
                vec!["ip", "-6", "addr", "add", &addr6, "dev", "eth0", "nodad"],
                vec!["ip", "link", "set", "eth0", "up"],
                vec!["ip", "route", "add", "default", "via", n.pod.1],
                // The other pod network is on the link: the vrouter answers ND for it.
                vec!["ip", "-6", "route", "add", n.remote_net6, "dev", "eth0"],
            ] {
                let mut full = vec!["ip", "netns", "exec", &ns];
                full.extend(cmd);
                ok(&full);
            }
        }
        sockets
    }

    fn stop(&mut self) {
        self.daemons.clear();
        if self.veths() {
            for n in &NODES {
                let _ = sh(&["ip", "link", "del", &format!("tf{}{}", n.name, self.id)]);
                let _ = sh(&["ip", "link", "del", &format!("tp{}{}", n.name, self.id)]);
            }
        }
    }
}

fn capture(
    socket: &Path,
    file: &Path,
    count: u32,
) -> std::thread::JoinHandle<std::process::Output> {
    let (s, f) = (socket.to_owned(), file.to_owned());
    std::thread::spawn(move || {
        Command::new(workspace_bin("vrctl"))
            .arg("--socket")
            .arg(&s)
            .args([
                "vif",
                "--capture",
                "0",
                "--count",
                &count.to_string(),
                "--timeout-s",
                "3",
                "--file",
            ])
            .arg(&f)
            .output()
            .unwrap()
    })
}

/// Waits until the vrouter behind `socket` says a capture is armed on `vif`.
fn wait_capturing(socket: &Path, vif: u64) {
    vr_tests::wait_until("the capture to start", Duration::from_secs(20), || {
        vrouter::control::Client::connect(socket)
            .and_then(|mut c| c.call(vrouter::control::Op::Hello))
            .is_ok_and(|r| r.data.is_some_and(|d| d["capturing"].as_u64() == Some(vif)))
    });
}

fn tshark(file: &Path, fields: &[&str]) -> String {
    let mut args = vec![
        "-r".to_string(),
        file.display().to_string(),
        "-d".into(),
        "udp.port==6635,mpls".into(),
    ];
    args.extend(["-T", "fields"].map(String::from));
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let o = Command::new("tshark").args(&args).output().expect("tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pods_on_two_nodes_ping_over_mpls_udp_mpls_gre_and_vxlan() {
    let mut lab = Lab::new();
    for (encap, field) in [
        ("mpls-udp", "mpls.label"),
        ("mpls-gre", "mpls.label"),
        ("vxlan", "vxlan.vni"),
    ] {
        let sockets = lab.start(encap);
        let _dump = vr_tests::DumpOnFailure(sockets.clone());
        let cap = lab.dir.join(format!("fabric-{encap}.pcap"));
        // The kernel also sends its own IPv6 housekeeping (router solicitations, MLD) from
        // the bridged taps: capture generously for a bounded time and count only tunnels.
        let capturing = capture(&sockets[0], &cap, 64);
        wait_capturing(&sockets[0], 0);
        let o = sh(&[
            "ip", "netns", "exec", &lab.ns[0], "ping", "-c", "3", "-i", "0.2", "-W", "2", POD_B.0,
        ]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && text.contains("3 received"),
            "{encap}: ping failed:\n{text}"
        );
        assert!(text.contains("ttl=62"), "{encap}: two vrouter hops: {text}");
        let c = capturing.join().unwrap();
        assert!(
            c.status.success(),
            "{encap}: capture: {}",
            String::from_utf8_lossy(&c.stderr)
        );
        assert!(pcap::read(&cap).unwrap().len() >= 6);
        // tshark's own decoders: both directions, each with the receiving node's label.
        let decoded = tshark(&cap, &["ip.src", "ip.dst", field]);
        assert!(
            decoded.contains("192.0.2.1,10.1.1.3\t192.0.2.2,10.1.2.5\t20"),
            "{encap}: A->B:\n{decoded}"
        );
        assert!(
            decoded.contains("192.0.2.2,10.1.2.5\t192.0.2.1,10.1.1.3\t17"),
            "{encap}: B->A:\n{decoded}"
        );
        let tunnels = decoded
            .lines()
            .filter(|l| l.starts_with("192.0.2."))
            .count();
        assert_eq!(
            tunnels, 6,
            "{encap}: three requests and three replies:\n{decoded}"
        );
        lab.stop();
    }
}

/// 8 MiB over TCP from pod a (node a) to pod b (node b), per encapsulation: the pods have
/// the default 1500-byte MTU, as large as the fabric's, so a full-size segment would not
/// fit once encapsulated; each vrouter lowers the MSS of the SYN it tunnels, and every byte
/// arrives.
#[test]
fn full_size_tcp_between_pods_on_two_nodes_completes_with_every_encapsulation() {
    full_size_tcp(Lab::new());
}

/// The same on a jumbo fabric: fabric and pods at 9,000 bytes, segments of almost 9,000
/// bytes clamped to what each tunnel leaves of it, and path MTU discovery finding it.
#[test]
fn full_size_tcp_between_pods_on_a_9000_byte_fabric_completes_with_every_encapsulation() {
    full_size_tcp(Lab::with_mtu(9000));
}

fn full_size_tcp(mut lab: Lab) {
    const BYTES: usize = 8 << 20;
    let mtu = usize::from(lab.mtu);
    // What each encapsulation leaves of the fabric's MTU for the inner IP packet: outer
    // IPv4 and UDP + MPLS, GRE + MPLS, or UDP + VXLAN + inner Ethernet.
    for (encap, room) in [
        ("mpls-udp", mtu - 32),
        ("mpls-gre", mtu - 28),
        ("vxlan", mtu - 50),
    ] {
        let sockets = lab.start(encap);
        let _dump = vr_tests::DumpOnFailure(sockets.clone());
        let server = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', 5201)); s.listen(1); print('ready'); s.settimeout(60)\n\
             c,_=s.accept(); c.settimeout(30); n=0\nwhile True:\n    d=c.recv(1<<16)\n    if not d: break\n    n+=len(d)\n\
             print(n)",
            POD_B.0
        );
        let rx = vr_tests::serve(&lab.ns[1], &server, &[]);
        let client = format!(
            "import socket\ns=socket.create_connection(('{}', 5201), timeout=30)\n\
             s.sendall(b'x' * {BYTES}); s.shutdown(socket.SHUT_WR); s.recv(1); s.close(); print('sent')",
            POD_B.0
        );
        let o = vr_tests::in_ns(&lab.ns[0], &["python3", "-c", &client]);
        assert!(
            o.status.success(),
            "{encap}: the sender failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (status, out) = rx.finish();
        assert!(status.success(), "{encap}: the receiver failed");
        assert_eq!(out.trim(), BYTES.to_string(), "{encap}: bytes received");
        for s in &sockets {
            let stats = vr_tests::vrctl_json(s, &["stats"]);
            assert!(
                stats["mss_clamped"].as_u64() >= Some(1),
                "{encap}: each side's SYN was clamped: {stats}"
            );
            assert_eq!(
                stats["drops"]["too_big"].as_u64().unwrap_or(0),
                0,
                "{encap}: nothing too big for the fabric"
            );
            vr_tests::assert_each_packet_counted_once(&stats);
        }
        // Segments as large as the tunnel leaves: node b took the 8 MiB in about
        // BYTES / MSS packets from the fabric (a jumbo fabric carrying 1500-byte segments
        // would need six times as many).
        let stats = vr_tests::vrctl_json(&sockets[1], &["stats"]);
        let frames = stats["vifs"]["fabric"]["rx"].as_u64().unwrap_or(u64::MAX);
        let most = (BYTES / (room - 100)) as u64 * 6 / 5 + 200;
        assert!(
            frames <= most,
            "{encap}: {frames} frames from the fabric for {BYTES} bytes at MTU {mtu} (at most {most})"
        );
        // Path MTU discovery (after the TCP: the kernel would otherwise size its SYN by
        // the MTU it learns here): a full-size ping with DF gets "fragmentation needed" with
        // that MTU from the vrouter; one of that size passes.
        let ping = |size: usize| {
            let o = vr_tests::in_ns(
                &lab.ns[0],
                &[
                    "ping",
                    "-M",
                    "do",
                    "-c",
                    "2",
                    "-i",
                    "0.2",
                    "-W",
                    "2",
                    "-s",
                    &size.to_string(),
                    POD_B.0,
                ],
            );
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        let out = ping(mtu - 28);
        assert!(
            out.contains(&format!("mtu = {room}")) || out.contains(&format!("mtu={room}")),
            "{encap}: fragmentation needed with mtu {room}:\n{out}"
        );
        let out = ping(room - 28);
        assert!(
            out.contains(" 0% packet loss"),
            "{encap}: a ping that fits:\n{out}"
        );
        lab.stop();
    }
}

/// Datagrams larger than the pods' MTU cross nodes in fragments, per encapsulation: a
/// 3000-byte ping and a 4000-byte UDP datagram (echoed back) over IPv4, whose 1500-byte
/// fragments the sending vrouter cuts again to fit the tunnel (DF is clear) and the
/// receiving vrouter forwards by their first fragment's flow; and a 3000-byte ping over
/// IPv6, whose first fragments are too big for the tunnel: the vrouter answers "packet
/// too big" with the MTU that fits, the pod's kernel sizes its fragments by it, and the
/// next pings pass.
#[test]
fn datagrams_larger_than_the_mtu_cross_nodes_in_fragments_with_every_encapsulation() {
    let mut lab = Lab::new();
    for encap in ["mpls-udp", "mpls-gre", "vxlan"] {
        let sockets = lab.start(encap);
        let _dump = vr_tests::DumpOnFailure(sockets.clone());
        let o = vr_tests::in_ns(
            &lab.ns[0],
            &[
                "ping", "-s", "3000", "-c", "3", "-i", "0.2", "-W", "3", POD_B.0,
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && text.contains("3 received") && text.contains("3008 bytes"),
            "{encap}: ping -s 3000:\n{text}"
        );
        let server = format!(
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{}', 7000))\n\
             print('ready'); s.settimeout(20); d,a=s.recvfrom(65536); s.sendto(d, a); print(len(d))",
            POD_B.0
        );
        let srv = vr_tests::serve(&lab.ns[1], &server, &[]);
        let client = format!(
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)\n\
             d=bytes(i % 251 for i in range(4000)); s.sendto(d, ('{}', 7000))\n\
             print('echo' if s.recvfrom(65536)[0] == d else 'corrupt')",
            POD_B.0
        );
        let o = vr_tests::in_ns(&lab.ns[0], &["python3", "-c", &client]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "echo",
            "{encap}: 4000 bytes of UDP there and back: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (status, out) = srv.finish();
        assert!(status.success());
        assert_eq!(out.trim(), "4000", "{encap}");

        let o = vr_tests::in_ns(
            &lab.ns[0],
            &[
                "ping",
                "-6",
                "-s",
                "3000",
                "-c",
                "6",
                "-i",
                "0.3",
                "-W",
                "2",
                NODES[1].pod6,
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let received: u32 = text
            .split(", ")
            .find_map(|p| p.strip_suffix(" received"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(received >= 3, "{encap}: ping -6 -s 3000:\n{text}");
        for (s, n) in sockets.iter().zip(&NODES) {
            let stats = vr_tests::vrctl_json(s, &["stats"]);
            assert!(
                stats["fragmented"].as_u64() >= Some(1),
                "{encap}: node {} cut what did not fit: {stats}",
                n.name
            );
            assert!(
                stats["fragments"].as_u64() >= Some(3),
                "{encap}: node {} forwarded fragments by their flow: {stats}",
                n.name
            );
            assert!(
                stats["icmp_errors"].as_u64() >= Some(1),
                "{encap}: node {} sent packet too big: {stats}",
                n.name
            );
        }
        lab.stop();
    }
}
