//! A service VIP balanced over three backend pods, with real TCP from a client pod: each
//! backend carries the VIP on its interface (as Contrail links the service IP to every
//! backend's VMI) and the vrouter picks a backend per connection (ECMP at the source).
//! Connections spread over all three; once a backend leaves the composite, new connections
//! avoid it, while established ones - also those to the removed backend - keep working.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use vr_tests::{Daemon, ok, sh, unique_prefix, workspace_bin};

const VIP: &str = "10.1.1.100";
/// (name, address, MAC) of the client and the backends.
const PODS: [(&str, &str, &str); 4] = [
    ("client", "10.1.1.3", "02:00:00:00:01:03"),
    ("web1", "10.1.1.11", "02:00:00:00:01:11"),
    ("web2", "10.1.1.12", "02:00:00:00:01:12"),
    ("web3", "10.1.1.13", "02:00:00:00:01:13"),
];

struct Lab {
    daemon: Option<Daemon>,
    dir: PathBuf,
    ns: Vec<String>,
    host_if: Vec<String>,
    procs: Vec<Child>,
    servers: Vec<vr_tests::Reap>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        for mut p in self.procs.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
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

fn config(host_if: &[String]) -> String {
    let gw = "00:00:5e:00:01:00";
    let mut c = String::from("[global]\nfabric_vif = 0\n\n[[vrf]]\nid = 0\n[[vrf]]\nid = 1\n\n");
    c += "[[vif]]\nid = 0\nname = \"fabric\"\nkind = \"physical\"\ndevice = \"net_null0,no-rx=1\"\nmac = \"02:fa:00:00:00:01\"\nvrf = 0\nip4 = \"192.0.2.1\"\n\n";
    for (i, ((name, ip, mac), h)) in PODS.iter().zip(host_if).enumerate() {
        let (vif, nh) = (2 + i, 1 + i);
        // A backend answers from the VIP it carries: an allowed address pair of its vif
        // (the vrouter drops what a VM sends from another address).
        let pair = if i > 0 {
            format!("[[vif.allowed]]\nprefix = \"{VIP}/32\"\n\n")
        } else {
            String::new()
        };
        c += &format!(
            "[[vif]]\nid = {vif}\nname = \"{name}\"\nkind = \"virtual\"\ndevice = \"packet:{h}\"\nmac = \"{gw}\"\nvrf = 1\nip4 = \"{ip}\"\nvm_mac = \"{mac}\"\n\n{pair}\
             [[nexthop]]\nid = {nh}\ntype = \"encap\"\nvif = {vif}\ndmac = \"{mac}\"\nsmac = \"{gw}\"\n\n\
             [[route]]\nvrf = 1\nprefix = \"{ip}/32\"\nnh = {nh}\n\n"
        );
    }
    c += "[[nexthop]]\nid = 10\ntype = \"composite\"\nmembers = [{ nh = 2 }, { nh = 3 }, { nh = 4 }]\n\n";
    c += &format!("[[route]]\nvrf = 1\nprefix = \"{VIP}/32\"\nnh = 10\n");
    c
}

/// Backend: answers each line on each connection with "<name>:<line>", forever.
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(128)
print("ready")
def serve(c):
    f = c.makefile("rwb", buffering=0)
    for line in f:
        f.write(name.encode() + b":" + line)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Client: on each command line "open N" opens N connections to the VIP and prints the
/// backend of each; "ping" sends on every open connection and prints who answers.
const CLIENT: &str = r#"
import socket, sys
conns = []
def ask(c, msg):
    c.sendall(msg + b"\n")
    return c.makefile("rb").readline().decode().split(":")[0]
for cmd in sys.stdin:
    cmd = cmd.split()
    if cmd[0] == "open":
        new = []
        for _ in range(int(cmd[1])):
            c = socket.create_connection((sys.argv[1], 80), timeout=5)
            conns.append(c); new.append(ask(c, b"hello"))
        print(" ".join(new), flush=True)
    elif cmd[0] == "ping":
        print(" ".join(ask(c, b"again") for c in conns), flush=True)
"#;

struct Talk {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Talk {
    fn say(&mut self, cmd: &str) -> Vec<String> {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the client pod died after {cmd:?}");
        line.split_whitespace().map(String::from).collect()
    }
}

fn count(v: &[String], name: &str) -> usize {
    v.iter().filter(|x| *x == name).count()
}

#[test]
fn vip_spreads_connections_and_a_removed_backend_keeps_its_established_ones() {
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(unique_prefix("vrvip"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        daemon: None,
        dir,
        ns: vec![],
        host_if: vec![],
        procs: vec![],
        servers: vec![],
    };
    for (i, (name, ip, mac)) in PODS.iter().enumerate() {
        let ns = format!("vrv{i}{id}");
        let h = format!("vhv{i}{id}");
        ok(&["ip", "netns", "add", &ns]);
        lab.ns.push(ns.clone());
        ok(&[
            "ip", "link", "add", &h, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        lab.host_if.push(h.clone());
        ok(&["ip", "link", "set", &h, "up"]);
        let addr = format!("{ip}/24");
        let mut cmds = vec![
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", "eth0", "address", mac],
            vec!["ip", "addr", "add", &addr, "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ethtool", "-K", "eth0", "tx", "off"],
        ];
        let vip = format!("{VIP}/32");
        if *name != "client" {
            // The service IP on every backend's interface.
            cmds.push(vec!["ip", "addr", "add", &vip, "dev", "eth0"]);
        }
        for cmd in cmds {
            let mut full = vec!["ip", "netns", "exec", &ns];
            full.extend(cmd);
            ok(&full);
        }
    }
    std::fs::write(lab.dir.join("vr.toml"), config(&lab.host_if)).unwrap();
    let daemon = Daemon::start(&lab.dir, "vr", &lab.dir.join("vr.toml"), 8191, 512);
    let socket = daemon.socket.clone();
    lab.daemon = Some(daemon);
    let _dump = vr_tests::DumpOnFailure(vec![socket.clone()]);
    for (i, (name, _, _)) in PODS.iter().enumerate().skip(1) {
        let server = vr_tests::serve(&lab.ns[i], SERVER, &[name]).reap();
        lab.servers.push(server);
    }
    let mut client = Command::new("ip")
        .args([
            "netns", "exec", &lab.ns[0], "python3", "-u", "-c", CLIENT, VIP,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut talk = Talk {
        stdin: client.stdin.take().unwrap(),
        stdout: BufReader::new(client.stdout.take().unwrap()),
    };
    lab.procs.push(client);

    // 30 connections: every backend gets some.
    let first = talk.say("open 30");
    assert_eq!(first.len(), 30);
    for b in ["web1", "web2", "web3"] {
        assert!(
            count(&first, b) >= 1,
            "{b} got {} of {first:?}",
            count(&first, b)
        );
    }

    // web2 leaves the service: the composite now lists web1 and web3 only.
    let frag = lab.dir.join("without-web2.toml");
    std::fs::write(
        &frag,
        "[[nexthop]]\nid = 10\ntype = \"composite\"\nmembers = [{ nh = 2 }, { nh = 4 }]\n",
    )
    .unwrap();
    let o = Command::new(workspace_bin("vrctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("apply")
        .arg(&frag)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Established connections keep their backend, web2's included.
    let again = talk.say("ping");
    assert_eq!(
        again, first,
        "every established connection answered by its backend"
    );
    // New connections avoid web2.
    let new = talk.say("open 30");
    assert_eq!(new.len(), 30);
    assert_eq!(
        count(&new, "web2"),
        0,
        "new connections avoid the removed backend: {new:?}"
    );
    assert!(
        count(&new, "web1") >= 1 && count(&new, "web3") >= 1,
        "{new:?}"
    );
    // And the established ones, web2's too, still answer after all that.
    let all = talk.say("ping");
    assert_eq!(&all[..30], &first[..]);
}
