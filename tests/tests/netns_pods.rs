//! Real kernel peers: two "pods" (network namespaces) whose eth0 is one end of a veth
//! pair; the vrouter serves the other ends itself (`packet:` host interfaces). The pods'
//! own stacks ARP for each other (the vrouter answers), ping and exchange UDP through the
//! vrouter, also in datagrams larger than the MTU (fragments), over IPv4 and IPv6.

use std::path::PathBuf;

use vr_tests::{Daemon, in_ns, ok, sh, unique_prefix};
use vrouter::control::{Client, Op};
use vrouter::testbed::{self, VM1_IP, VM1_MAC, VM2_IP, VM2_MAC};

/// Two pods and everything created for them; removed on drop, also when a test fails.
struct Pods {
    ns: [String; 2],
    host_if: [String; 2],
    daemon: Option<Daemon>,
    dir: PathBuf,
}

impl Drop for Pods {
    fn drop(&mut self) {
        // The daemon goes first: it holds the pods' host interfaces.
        drop(self.daemon.take());
        for ns in &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for h in &self.host_if {
            let _ = sh(&["ip", "link", "del", h]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pods {
    /// Starts the vrouter with `cfg`; returns its control socket and a guard that prints
    /// its counters if the test fails.
    fn start(&mut self, cfg: &vrouter::config::Config) -> (PathBuf, vr_tests::DumpOnFailure) {
        self.start_lcores(cfg, 1)
    }

    /// [`Pods::start`] with `lcores` forwarding lcores.
    fn start_lcores(
        &mut self,
        cfg: &vrouter::config::Config,
        lcores: usize,
    ) -> (PathBuf, vr_tests::DumpOnFailure) {
        let path = self.dir.join("vr.toml");
        std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
        let d = Daemon::start_lcores(&self.dir, "vr", &path, (8191, 512), lcores);
        let socket = d.socket.clone();
        self.daemon = Some(d);
        (socket.clone(), vr_tests::DumpOnFailure(vec![socket]))
    }
}

fn pods() -> Pods {
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(unique_prefix("vrpods"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = Pods {
        ns: [format!("vrpa{id}"), format!("vrpb{id}")],
        host_if: [format!("vha{id}"), format!("vhb{id}")],
        daemon: None,
        dir,
    };
    for ((ns, h), (ip, mac)) in
        p.ns.iter()
            .zip(&p.host_if)
            .zip([(VM1_IP, VM1_MAC), (VM2_IP, VM2_MAC)])
    {
        ok(&["ip", "netns", "add", ns]);
        ok(&[
            "ip", "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ok(&["ip", "link", "set", h, "up"]);
        let mac = mac.to_string();
        let addr = format!("{ip}/24");
        for cmd in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", "eth0", "address", &mac],
            vec!["ip", "addr", "add", &addr, "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            // The veth would hand TCP/UDP over with a partial checksum (TX offload), which
            // af_packet delivers as it is: pods attached this way compute full checksums.
            vec!["ethtool", "-K", "eth0", "tx", "off"],
        ] {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend(cmd);
            ok(&full);
        }
    }
    p
}

/// The testbed topology with vm1 and vm2 on the pods' host interfaces (served by the
/// vrouter itself) and the fabric a sink.
fn config(p: &Pods) -> vrouter::config::Config {
    testbed::config(|name| match name {
        "vm1" => Some(format!("packet:{}", p.host_if[0])),
        "vm2" => Some(format!("packet:{}", p.host_if[1])),
        "fabric" => Some("net_null0,no-rx=1".into()),
        _ => None,
    })
}

#[test]
fn two_pods_ping_and_talk_udp_through_the_vrouter() {
    let mut p = pods();
    let cfg = config(&p);
    let (socket, _dump) = p.start(&cfg);

    // ICMP: the pod's kernel ARPs for 10.1.1.4 (answered by the vrouter), then pings.
    let o = in_ns(
        &p.ns[0],
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &VM2_IP.to_string(),
        ],
    );
    assert!(
        o.status.success(),
        "ping failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("3 received"), "{text}");
    assert!(text.contains("ttl=63"), "one routed hop: {text}");
    let neigh = String::from_utf8_lossy(
        &in_ns(&p.ns[0], &["ip", "neigh", "show", &VM2_IP.to_string()]).stdout,
    )
    .to_string();
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "the vrouter answered ARP: {neigh}"
    );

    // UDP: a real socket in pod b echoes what a socket in pod a sends.
    let server = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{VM2_IP}', 7000)); \
         print('ready'); s.settimeout(10); d,a=s.recvfrom(100); s.sendto(d.upper(), a)"
    );
    let srv = vr_tests::serve(&p.ns[1], &server, &[]);
    let client = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); \
         s.sendto(b'hello pod', ('{VM2_IP}', 7000)); print(s.recvfrom(100)[0].decode())"
    );
    let o = in_ns(&p.ns[0], &["python3", "-c", &client]);
    assert!(
        o.status.success(),
        "UDP exchange failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "HELLO POD");
    assert!(srv.finish().0.success());

    // The vrouter saw both flows.
    let mut c = Client::connect(&socket).unwrap();
    let flows = c.dump_all(|cursor| Op::DumpFlows { cursor }).unwrap();
    assert!(
        flows
            .iter()
            .any(|f| f["proto"] == 1 && f["packets"].as_u64() >= Some(3)),
        "ICMP flow"
    );
    assert!(
        flows.iter().any(|f| f["proto"] == 17 && f["dport"] == 7000),
        "UDP flow"
    );
}

#[test]
fn a_security_group_allowing_tcp_80_only_blocks_81_and_udp_for_real_sockets() {
    let mut p = pods();
    let mut cfg = config(&p);
    cfg.policies.push(vrouter::config::PolicyCfg {
        name: "sg-web".into(),
        rules: vec![vrouter::config::RuleCfg {
            proto: Some(6),
            src: Default::default(),
            dst: Default::default(),
            sport: None,
            dport: Some((80, 80)),
            action: vrouter::config::ActionCfg::Pass,
        }],
        default: vrouter::config::ActionCfg::Deny,
        network: false,
    });
    cfg.vifs
        .iter_mut()
        .find(|v| v.name == "vm2")
        .unwrap()
        .ingress = vec!["sg-web".into()];
    let (socket, _dump) = p.start(&cfg);
    // Pod b listens on TCP 80 and 81 and UDP 80.
    let server = r#"
import queue, socket, threading
ready = queue.Queue()
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8); ready.put(port)
    while True:
        c, _ = s.accept(); c.sendall(b"port %d" % port); c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 80))
for p in (80, 81):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
for p in (80, 81):
    ready.get()
print("ready")
while True:
    d, a = u.recvfrom(100); u.sendto(d, a)
"#;
    let _srv = vr_tests::serve(&p.ns[1], server, &[]);
    let probe = |kind: &str, port: u16| -> String {
        let code = match kind {
            "tcp" => format!(
                "import socket\ntry:\n  c=socket.create_connection(('{VM2_IP}',{port}),timeout=2); print(c.recv(20).decode())\nexcept socket.timeout: print('blocked')\nexcept Exception as e: print('error', e)"
            ),
            _ => format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\ntry:\n  s.sendto(b'x',('{VM2_IP}',{port})); s.recvfrom(10); print('open')\nexcept socket.timeout: print('blocked')\nexcept Exception as e: print('error', e)"
            ),
        };
        String::from_utf8_lossy(&in_ns(&p.ns[0], &["python3", "-c", &code]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(probe("tcp", 80), "port 80", "TCP 80 is allowed");
    assert_eq!(probe("tcp", 81), "blocked", "TCP 81 is not");
    assert_eq!(probe("udp", 80), "blocked", "UDP is not");
    let stats = Client::connect(&socket)
        .unwrap()
        .call(Op::Stats)
        .unwrap()
        .data
        .unwrap();
    assert!(
        stats["drops"]["policy_deny"].as_u64().unwrap_or(0) >= 2,
        "denies counted: {}",
        stats["drops"]
    );
}

#[test]
fn two_pods_ping_over_ipv6_with_neighbour_discovery_answered_by_the_vrouter() {
    let mut p = pods();
    let mut cfg = config(&p);
    let (_, b6) = with_ipv6(&p, &mut cfg);
    let (_socket, _dump) = p.start(&cfg);
    let o = in_ns(
        &p.ns[0],
        &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", b6],
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && text.contains("3 received"),
        "ping -6 failed:\n{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("ttl=63"),
        "one routed hop (iputils prints the hop limit as ttl): {text}"
    );
    let neigh =
        String::from_utf8_lossy(&in_ns(&p.ns[0], &["ip", "-6", "neigh", "show", b6]).stdout)
            .to_string();
    assert!(
        neigh.contains("00:00:5e:00:01:00") && neigh.contains("router"),
        "the vrouter answered ND as a router: {neigh}"
    );
}

/// Gives both pods their IPv6 address (and the vrouter their routes).
fn with_ipv6(p: &Pods, cfg: &mut vrouter::config::Config) -> (&'static str, &'static str) {
    let (a6, b6) = ("fd00:1::3", "fd00:1::4");
    for (ns, addr) in p.ns.iter().zip([a6, b6]) {
        let cidr = format!("{addr}/64");
        // No duplicate-address detection: the address is usable at once.
        let o = in_ns(
            ns,
            &["ip", "-6", "addr", "add", &cidr, "dev", "eth0", "nodad"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for (vif, addr, nh) in [("vm1", a6, 1), ("vm2", b6, 2)] {
        cfg.vifs.iter_mut().find(|v| v.name == vif).unwrap().ip6 = Some(addr.parse().unwrap());
        cfg.routes.push(vrouter::config::RouteCfg {
            vrf: 1,
            prefix: format!("{addr}/128"),
            nh,
            label: 0,
            attr: 0,
        });
    }
    (a6, b6)
}

/// The vrouter's counters.
fn stats(socket: &std::path::Path) -> serde_json::Value {
    vr_tests::vrctl_json(socket, &["stats"])
}

/// 3000-byte pings and 4000-byte UDP datagrams, each more than the pods' 1500-byte MTU,
/// so the pods' kernels send them as fragments, over IPv4 and IPv6, on a vrouter with two
/// forwarding lcores. Pod b's security group allows ICMP and UDP 7000 only: a datagram
/// to port 7001 is refused in every fragment, though only the first carries the port.
#[test]
fn datagrams_larger_than_the_mtu_pass_in_fragments_and_policy_decides_every_fragment() {
    use vrouter::config::{ActionCfg, PolicyCfg, RuleCfg};
    let mut p = pods();
    let mut cfg = config(&p);
    let (_, b6) = with_ipv6(&p, &mut cfg);
    let rule = |proto: u8, dport: Option<(u16, u16)>| RuleCfg {
        proto: Some(proto),
        src: Default::default(),
        dst: Default::default(),
        sport: None,
        dport,
        action: ActionCfg::Pass,
    };
    cfg.policies.push(PolicyCfg {
        name: "sg-frag".into(),
        rules: vec![rule(1, None), rule(58, None), rule(17, Some((7000, 7000)))],
        default: ActionCfg::Deny,
        network: false,
    });
    cfg.vifs
        .iter_mut()
        .find(|v| v.name == "vm2")
        .unwrap()
        .ingress = vec!["sg-frag".into()];
    let (socket, _dump) = p.start_lcores(&cfg, 2);
    let b4 = VM2_IP.to_string();

    for (family, dst) in [("-4", b4.as_str()), ("-6", b6)] {
        let o = in_ns(
            &p.ns[0],
            &[
                "ping", family, "-s", "3000", "-c", "3", "-i", "0.2", "-W", "3", dst,
            ],
        );
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && text.contains("3 received") && text.contains("3008 bytes"),
            "ping {family} -s 3000 failed:\n{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Pod b echoes what reaches UDP 7000 and 7001 (on both families).
    let server = r#"
import socket, threading
def echo(fam, addr, port):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    while True:
        d, a = s.recvfrom(65536); s.sendto(d, a)
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in (7000, 7001):
        threading.Thread(target=echo, args=(fam, addr, port), daemon=True).start()
print("ready")
threading.Event().wait()
"#;
    let _srv = vr_tests::serve(&p.ns[1], server, &[]);
    let send = |dst: &str, port: u16| -> String {
        let code = format!(
            "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{dst}' else socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.settimeout(2); d=bytes(i % 251 for i in range(4000))\n\
             try:\n  s.sendto(d, ('{dst}', {port})); r=s.recvfrom(65536)[0]; print('echo' if r == d else 'corrupt')\n\
             except socket.timeout: print('blocked')"
        );
        let o = in_ns(&p.ns[0], &["python3", "-c", &code]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    for dst in [b4.as_str(), b6] {
        assert_eq!(send(dst, 7000), "echo", "4000 bytes to {dst} 7000 and back");
    }
    let before = stats(&socket)["drops"]["policy_deny"].as_u64().unwrap_or(0);
    for dst in [b4.as_str(), b6] {
        assert_eq!(
            send(dst, 7001),
            "blocked",
            "UDP 7001 on {dst} is not allowed"
        );
    }
    // 4,008 bytes of UDP in 1,500-byte packets: three fragments each, all refused.
    vr_tests::wait_until(
        "every fragment of the refused datagrams is counted",
        std::time::Duration::from_secs(10),
        || stats(&socket)["drops"]["policy_deny"].as_u64().unwrap_or(0) >= before + 6,
    );
    let s = stats(&socket);
    assert_eq!(s["lcores"], 2, "{s}");
    assert!(s["fragments"].as_u64() >= Some(4 * 3 * 2), "{s}");
    for bad in ["fragment_overlap", "fragment_tiny", "fragment_timeout"] {
        assert_eq!(s["drops"][bad].as_u64().unwrap_or(0), 0, "{bad}: {s}");
    }
    // Two lcores, fragments, denies: every packet counted once.
    vr_tests::assert_each_packet_counted_once(&s);
}
