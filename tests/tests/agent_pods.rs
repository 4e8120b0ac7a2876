//! The agent programs real pods: two network namespaces plugged as host interfaces it
//! adds to the vrouter. A TCP stream between them keeps flowing while the agent is killed
//! with SIGKILL and started again: the vrouter forwards headless, and the restarted agent's
//! reconcile changes nothing under the established flow.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vr_tests::{Agent, PodLab, in_ns, python};

#[test]
fn a_tcp_stream_survives_the_agent_being_killed_and_restarted() {
    let mut lab = PodLab::start("agp", 2);
    let socket = lab.socket();
    let data = lab.data();
    let target = lab.target();
    let mut args = vec![target.as_str()];
    args.extend(lab.host_if.iter().map(String::as_str));
    let out = python("agent_pods.py", &args);
    let ports = vr_tests::json_lines(&out);
    assert_eq!(ports.len(), 2, "{out}");
    // Each pod gets the MAC and address the agent gave its interface.
    for (i, p) in ports.iter().enumerate() {
        lab.plug(i, p);
    }
    let ip_b = vr_tests::address_of(&ports[1]["ip"]);
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

    // A receiver in pod b counts bytes and says how many it has every 100 ms; a sender in
    // pod a streams for 6 s.
    let server = format!(
        "import socket, threading, time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip_b}', 5001)); s.listen(1); print('ready'); s.settimeout(30); c,_=s.accept(); c.settimeout(10); n=0\n\
         done=False\ndef tell():\n    while not done:\n        print('got', n); time.sleep(0.1)\n\
         threading.Thread(target=tell, daemon=True).start()\n\
         while True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\ndone=True\nprint('total', n)"
    );
    let mut rx = vr_tests::serve(&lab.ns[1], &server, &[]);
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
    // What the receiver has so far, by its latest report.
    let mut received = || -> u64 {
        let l = rx.latest_line().expect("the receiver reports");
        l.strip_prefix("got ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {l:?}"))
    };
    let waited = Instant::now();
    while received() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the stream never started"
        );
    }

    // Kill the agent mid-stream: bytes keep arriving while it is dead (the vrouter
    // forwards headless); then start it again.
    let mut a = lab.agent.take().unwrap();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let at_kill = received();
    let waited = Instant::now();
    while received() < at_kill + 200_000 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "the stream stalled once the agent was killed (at {at_kill} bytes)"
        );
    }
    let a = Agent::start(&lab.dir, "agent", &socket, &data);
    lab.agent = Some(a);
    let restarted = received();

    let tx = tx.wait_with_output().unwrap();
    assert!(
        tx.status.success(),
        "the sender failed: {}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let sent: u64 = String::from_utf8_lossy(&tx.stdout).trim().parse().unwrap();
    let (_, rest) = rx.finish();
    let got: u64 = rest
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        got > restarted,
        "bytes arrived after the agent's restart ({restarted} then {got})"
    );
    assert!(sent > 1_000_000, "the stream ran: {sent} bytes");
    assert_eq!(got, sent, "every byte arrived across the agent's restart");
    assert_eq!(
        (
            vr_tests::vrctl_json(&socket, &["vif"]),
            vr_tests::vrctl_json(&socket, &["nh"])
        ),
        before,
        "the restarted agent changed nothing under the flow"
    );
}
