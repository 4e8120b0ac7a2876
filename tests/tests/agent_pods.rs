//! The agent programs real pods: two network namespaces plugged through af_packet ports it
//! adds to the vrouter. A TCP stream between them keeps flowing while the agent is killed
//! with SIGKILL and started again: the vrouter forwards headless, and the restarted agent's
//! reconcile changes nothing under the established flow.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vr_tests::{Agent, Daemon, in_ns, ok, python, sh, unique_prefix, workspace_bin};

struct Lab {
    ns: Vec<String>,
    host_if: Vec<String>,
    dir: PathBuf,
    agent: Option<Agent>,
    vrouter: Option<Daemon>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in ["vr.log", "agent.log"] {
                eprintln!(
                    "--- {f}:\n{}",
                    std::fs::read_to_string(self.dir.join(f)).unwrap_or_default()
                );
            }
            if let Some(v) = &self.vrouter {
                let out = Command::new(workspace_bin("vrctl"))
                    .arg("--socket")
                    .arg(&v.socket)
                    .arg("dropstats")
                    .output();
                if let Ok(o) = out {
                    eprintln!("--- dropstats:\n{}", String::from_utf8_lossy(&o.stdout));
                }
            }
        }
        drop(self.agent.take());
        drop(self.vrouter.take());
        for ns in &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        for h in &self.host_if {
            let _ = sh(&["ip", "link", "del", h]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_tcp_stream_survives_the_agent_being_killed_and_restarted() {
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(unique_prefix("agpods"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        ns: vec![format!("agpa{id}"), format!("agpb{id}")],
        host_if: vec![format!("aha{id}"), format!("ahb{id}")],
        dir,
        agent: None,
        vrouter: None,
    };
    for (ns, h) in lab.ns.iter().zip(&lab.host_if) {
        ok(&["ip", "netns", "add", ns]);
        ok(&[
            "ip", "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ok(&["ip", "link", "set", h, "up"]);
    }
    std::fs::write(
        lab.dir.join("vr.toml"),
        vr_tests::agent_node_config("192.0.2.1"),
    )
    .unwrap();
    let vr = Daemon::start(&lab.dir, "vr", &lab.dir.join("vr.toml"), 8191, 512);
    let socket = vr.socket.clone();
    lab.vrouter = Some(vr);
    let data = lab.dir.join("data");
    let agent = Agent::start(&lab.dir, "agent", &socket, &data);
    let mut args = vec![agent.target.as_str()];
    args.extend(lab.host_if.iter().map(String::as_str));
    let out = python("agent_pods.py", &args);
    lab.agent = Some(agent);
    let ports: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{out}");
    // Each pod gets the MAC and address the agent gave its interface.
    for (ns, p) in lab.ns.iter().zip(&ports) {
        for cmd in [
            vec!["ip", "link", "set", "lo", "up"],
            vec![
                "ip",
                "link",
                "set",
                "eth0",
                "address",
                p["mac"].as_str().unwrap(),
            ],
            vec![
                "ip",
                "addr",
                "add",
                p["ip"].as_str().unwrap(),
                "dev",
                "eth0",
            ],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ethtool", "-K", "eth0", "tx", "off"],
        ] {
            let mut full = vec!["ip", "netns", "exec", ns.as_str()];
            full.extend(cmd);
            ok(&full);
        }
    }
    let ip_b = ports[1]["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let o = in_ns(
        &lab.ns[0],
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip_b],
    );
    assert!(
        o.status.success(),
        "ping through the agent-programmed vrouter: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let before = (
        vr_tests::vrctl_json(&socket, &["vif"]),
        vr_tests::vrctl_json(&socket, &["nh"]),
    );

    // A receiver in pod b counts bytes; a sender in pod a streams for 6 s.
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip_b}', 5001)); s.listen(1); s.settimeout(30); c,_=s.accept(); c.settimeout(10); n=0\n\
         while True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nprint(n)"
    );
    let rx = Command::new("ip")
        .args(["netns", "exec", &lab.ns[1], "python3", "-c", &server])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let client = format!(
        "import socket, time\ns=socket.create_connection(('{ip_b}', 5001), timeout=10); n=0\n\
         end=time.time()+6\nwhile time.time()<end:\n    s.sendall(b'x'*4096); n+=4096; time.sleep(0.002)\n\
         s.close(); print(n)"
    );
    let tx = Command::new("ip")
        .args(["netns", "exec", &lab.ns[0], "python3", "-c", &client])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Kill the agent mid-stream, leave it dead for 2 s, start it again.
    std::thread::sleep(Duration::from_secs(1));
    let mut a = lab.agent.take().unwrap();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let a = Agent::start(&lab.dir, "agent", &socket, &data);
    let t = Instant::now();
    lab.agent = Some(a);

    let tx = tx.wait_with_output().unwrap();
    let rx = rx.wait_with_output().unwrap();
    assert!(
        tx.status.success(),
        "the sender failed: {}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let sent: u64 = String::from_utf8_lossy(&tx.stdout).trim().parse().unwrap();
    let got: u64 = String::from_utf8_lossy(&rx.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sent > 1_000_000, "the stream ran: {sent} bytes");
    assert_eq!(got, sent, "every byte arrived across the agent's restart");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(
        (
            vr_tests::vrctl_json(&socket, &["vif"]),
            vr_tests::vrctl_json(&socket, &["nh"])
        ),
        before,
        "the restarted agent changed nothing under the flow"
    );
}
