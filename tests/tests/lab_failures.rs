//! The control plane fails, the data plane does not: a two-node lab whose configuration
//! and routes are in a three-member etcd carries one long TCP stream of full-size
//! segments from a pod on node 1 to a pod on node 2 (VXLAN between the nodes, two
//! forwarding lcores each) while, in turn, node 2's agent is killed (SIGKILL) and stays
//! away past its routes' lease, one etcd member is killed, and the whole etcd is stopped
//! for 30 s. The stream never stalls and loses or changes no byte; after each failure a
//! pod added through the cluster's API is programmed on both nodes and reached across
//! them.

use std::time::{Duration, Instant};

use vr_tests::{Served, VrLab, wait_until};

const STREAM: &str = include_str!("../python/stream.py");

/// Prints the logs the lab's own drop leaves out when the test fails.
struct MoreLogs<'a>(&'a VrLab);

impl Drop for MoreLogs<'_> {
    fn drop(&mut self) {
        vr_tests::print_logs_on_failure(
            &self.0.dir,
            &["node2/agent.log", "etcd1.log", "etcd2.log", "etcd3.log"],
        );
    }
}

/// Bytes the server has received, and the longest gap between two reads (seconds).
fn received(rx: &mut Served) -> (u64, f64) {
    let l = rx.latest_line().expect("the stream's server reports");
    assert!(l.starts_with("got "), "the stream broke: {l}");
    let mut f = l.split_whitespace().skip(1);
    let n = f.next().and_then(|n| n.parse().ok()).expect("a count");
    let gap = f.next().and_then(|g| g.parse().ok()).expect("a gap");
    (n, gap)
}

/// Waits until another `more` bytes have arrived (30 s at most).
fn flows(rx: &mut Served, more: u64, what: &str) {
    let (from, _) = received(rx);
    wait_until(what, Duration::from_secs(30), || {
        received(rx).0 >= from + more
    });
}

fn pods(names: &[&str]) -> String {
    let mut m = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
    for n in names {
        m += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}}}\n\
             spec: {{containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}\n"
        );
    }
    m
}

#[test]
fn established_flows_outlive_a_killed_agent_a_lost_etcd_member_and_etcd_down() {
    let lab = VrLab::new("labfail");
    let _logs = MoreLogs(&lab);
    lab.ok(&[
        "up",
        "--nodes",
        "2",
        "--lcores",
        "2",
        "--etcd-members",
        "3",
        "--route-ttl",
        "3",
    ]);
    let ps = lab.ok(&["ps"]);
    for p in ["node1/agent", "node2/agent", "etcd1", "etcd2", "etcd3"] {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&format!("{p}\t")) && l.ends_with("running")),
            "{ps}"
        );
    }
    let manifest = lab.dir.join("pods.yaml");
    let apply = |names: &[&str]| {
        std::fs::write(&manifest, pods(names)).unwrap();
        lab.ok(&["apply", "-f", manifest.to_str().unwrap()])
    };
    apply(&["a", "b"]);
    let state = lab.state();
    let pod = |k: &str| state["pods"][k].clone();
    let on = |k: &str| pod(k)["node"].as_u64().unwrap();
    let (client, server) = if on("default/a") == 0 {
        ("default/a", "default/b")
    } else {
        ("default/b", "default/a")
    };
    assert_eq!((on(client), on(server)), (0, 1), "{state}");
    let ip = pod(server)["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ns = |k: &str| pod(k)["netns"].as_str().unwrap().to_string();

    // The stream, node 1 -> node 2.
    let stop = lab.dir.join("stream.stop");
    let mut rx = vr_tests::serve(&ns(server), STREAM, &["serve", &ip, "5001"]);
    let tx = vr_tests::serve(
        &ns(client),
        STREAM,
        &["send", &ip, "5001", stop.to_str().unwrap()],
    );
    flows(&mut rx, 1 << 20, "the stream flows");

    // Node 2's agent crashes and stays away past its lease: node 1 keeps its routes
    // (stale), both vrouters keep forwarding.
    lab.ok(&["kill", "node2/agent"]);
    let node1_log = lab.dir.join("node1/agent.log");
    wait_until(
        "node 1 sees node 2's agent gone",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&node1_log)
                .is_ok_and(|l| l.contains("a node's agent went away"))
        },
    );
    flows(&mut rx, 1 << 20, "the stream flows without node 2's agent");
    lab.ok(&["start", "node2/agent"]);
    flows(
        &mut rx,
        1 << 20,
        "the stream flows with node 2's agent back",
    );
    apply(&["a", "b", "c", "d"]);
    let reach = |from: &str, to: &str| {
        let o = lab.vrlab(&["probe", "--from", from, "--to", to, "--port", "80"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{from} -> {to}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let apart = |x: &str, y: &str| {
        let s = lab.state();
        let node = |k: &str| s["pods"][k]["node"].as_u64();
        assert!(node(x).is_some() && node(x) != node(y), "{x} and {y}: {s}");
    };
    apart("default/c", "default/d");
    reach("default/c", "default/d");
    reach("default/d", "default/c");

    // One etcd member of three is lost, each in turn (so whichever one an agent's
    // sessions and writes went through is lost once): nothing changes; a write lands
    // and is programmed everywhere.
    let mut all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    for m in ["etcd1", "etcd2", "etcd3"] {
        lab.ok(&["kill", m]);
        flows(&mut rx, 1 << 20, &format!("the stream flows without {m}"));
        let (x, y) = (format!("{m}-x"), format!("{m}-y"));
        all.extend([x.clone(), y.clone()]);
        apply(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let (x, y) = (format!("default/{x}"), format!("default/{y}"));
        apart(&x, &y);
        reach(&x, &y);
        reach(&y, "default/c");
        lab.ok(&["start", m]);
    }

    // etcd away for 30 s: forwarding goes on with what every node has.
    lab.ok(&["kill", "etcd1", "etcd2", "etcd3"]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        flows(&mut rx, 1 << 20, "the stream flows with etcd away");
    }
    reach("default/a", "default/b");
    lab.ok(&["start", "etcd1", "etcd2", "etcd3"]);
    all.extend(["g".into(), "h".into()]);
    apply(&all.iter().map(String::as_str).collect::<Vec<_>>());
    apart("default/g", "default/h");
    reach("default/g", "default/h");
    reach("default/h", "default/a");
    flows(&mut rx, 1 << 20, "the stream flows after etcd's return");

    // The stream ends whole: every byte sent arrived, in order, and the longest wait
    // between two reads was short (a withdrawn route or a dropped flow would stop it
    // for the length of the outage).
    std::fs::write(&stop, "").unwrap();
    let (status, out) = tx.finish();
    assert!(status.success(), "the sender: {out}");
    let sent: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the sender said {out}"));
    let (status, out) = rx.finish();
    assert!(status.success(), "the server: {out}");
    let total = out
        .lines()
        .find_map(|l| l.strip_prefix("total "))
        .unwrap_or_else(|| panic!("the server said {out}"));
    let mut f = total.split_whitespace();
    let got: u64 = f.next().unwrap().parse().unwrap();
    let gap: f64 = f.next().unwrap().parse().unwrap();
    assert_eq!(got, sent, "bytes sent and received");
    assert!(sent > 30 << 20, "{sent} bytes in the whole run");
    assert!(gap < 5.0, "the stream stalled for {gap} s");
}
