//! Pod density: host interfaces are served by the vrouter itself, so a node holds far more
//! pods than DPDK's 32 ports. 250 pods on one node and 110 per node on two, through vrlab
//! (kube-manager, the agent, real namespaces), with a sample of the probe matrix and
//! services over them; and 1,000 plug/unplug cycles through the agent on a 2-lcore vrouter
//! while a TCP stream runs beside them, leaving no vif, descriptor or memory behind.

use std::collections::BTreeSet;
use std::time::Duration;

use vr_tests::{PodLab, VrLab, python};

/// A manifest of `pods` pods (label `app: gN`, N = index mod 10) listening on TCP 80 and
/// ten Services `s0`..`s9` (8080 -> 80), one per label.
fn manifest(dir: &std::path::Path, pods: usize) -> String {
    let mut m = String::from(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: default}\n",
    );
    for i in 0..pods {
        m.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p{i}, namespace: default, labels: {{app: g{}}}}}\n  spec:\n    containers:\n    - name: server\n      image: server\n      ports: [{{containerPort: 80}}]\n",
            i % 10
        ));
    }
    for g in 0..10 {
        m.push_str(&format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: s{g}, namespace: default}}\n  spec:\n    selector: {{app: g{g}}}\n    ports: [{{port: 8080, targetPort: 80}}]\n"
        ));
    }
    let path = dir.join("dense.yaml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, m).unwrap();
    path.to_str().unwrap().to_string()
}

/// Applies `pods` pods to a lab that is up and checks what every node got: each pod an
/// address of its own, a netns with its address and default route, a vif per pod; then a
/// sample of the probe matrix (pods spread over the list, so over nodes and lcores) and
/// of the service matrix connects.
fn dense(lab: &VrLab, nodes: usize, pods: usize) {
    let file = manifest(&lab.dir.join("m"), pods);
    let out = lab.ok(&["apply", "-f", &file]);
    assert!(!out.contains("event:"), "no pod refused: {out}");
    let list = lab.ok(&["pods"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .collect();
    assert_eq!(rows.len(), pods, "{list}");
    let addrs: BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(addrs.len(), pods, "every pod its own address");
    for n in 1..=nodes {
        let on = rows.iter().filter(|r| r[3] == format!("node{n}")).count();
        assert_eq!(on, pods / nodes, "pods on node{n}");
    }
    // Every pod's namespace has its address and its default route.
    let state = lab.state();
    for (key, p) in state["pods"].as_object().expect("pods") {
        let ns = p["netns"].as_str().unwrap();
        let ip = p["ip"].as_str().unwrap();
        let a = vr_tests::in_ns(ns, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            String::from_utf8_lossy(&a.stdout).contains(ip),
            "{key}: address {ip}"
        );
        let r = vr_tests::in_ns(ns, &["ip", "route", "show", "default"]);
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("default via"),
            "{key}: default route"
        );
    }
    // A vif per pod on each node (besides the fabric and vhost0).
    for n in state["nodes"].as_array().unwrap() {
        let socket = std::path::PathBuf::from(n["socket"].as_str().unwrap());
        let vifs = vr_tests::vrctl_json(&socket, &["vif"]);
        let count = vifs.as_array().map_or(0, Vec::len);
        assert_eq!(count, pods / nodes + 2, "vifs on {}", n["name"]);
    }
    let step = pods / 12;
    let among: Vec<String> = (0..12)
        .map(|i| format!("default/p{}", i * step + i % 3))
        .collect();
    let among = among.join(",");
    let m = lab.ok(&["probe", "--matrix", "--among", &among, "--port", "80"]);
    let cells = vr_tests::matrix_cells(&m);
    assert_eq!(cells.len(), 144, "{m}");
    assert!(
        cells.values().all(|c| *c),
        "every sampled pair connects:\n{m}"
    );
    let s = lab.ok(&[
        "probe",
        "--matrix",
        "--services",
        "--among",
        &among,
        "--port",
        "8080",
    ]);
    let cells = vr_tests::matrix_cells(&s);
    assert_eq!(cells.len(), 120, "{s}");
    assert!(
        cells.values().all(|c| *c),
        "every sampled pod reaches every service:\n{s}"
    );
}

#[test]
fn two_hundred_fifty_pods_on_one_node() {
    let lab = VrLab::new("dense1");
    lab.ok(&["up", "--lcores", "2"]);
    dense(&lab, 1, 250);
    // And they all go again.
    let out = lab.ok(&[
        "delete",
        "-f",
        lab.dir.join("m/dense.yaml").to_str().unwrap(),
    ]);
    assert_eq!(lab.ok(&["pods"]).trim(), "", "{out}");
    let socket = std::path::PathBuf::from(lab.state()["nodes"][0]["socket"].as_str().unwrap());
    let vifs = vr_tests::vrctl_json(&socket, &["vif"]);
    assert_eq!(vifs.as_array().map_or(0, Vec::len), 2, "{vifs}");
}

#[test]
fn one_hundred_ten_pods_per_node_on_two_nodes() {
    let lab = VrLab::new("dense2");
    lab.ok(&["up", "--nodes", "2", "--lcores", "2"]);
    dense(&lab, 2, 220);
}

/// Open descriptors and resident memory (KiB) of a process. Connections accepted on the
/// control socket `control` are left out of the count: each `vrctl` call has one, which
/// its server thread closes after the reply, so one may still be open when this looks.
fn usage(pid: u32, control: &std::path::Path) -> (usize, u64) {
    let path = control.to_string_lossy();
    // Inodes of the connections accepted on the control socket (state 03, connected,
    // bound to its path; the listener itself is state 01).
    let accepted: std::collections::HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[5] == "03" && f[7] == path).then(|| f[6].to_string())
        })
        .collect();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                let target = std::fs::read_link(e.path()).unwrap_or_default();
                let t = target.to_string_lossy();
                !t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|ino| accepted.contains(ino))
            })
            .count()
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

#[test]
fn a_thousand_plugs_and_unplugs_beside_a_tcp_stream_leak_nothing() {
    // Two pods carrying a stream, eight veths plugged and unplugged in turn.
    let lab = PodLab::start_lcores("chn", 10, 2);
    let socket = lab.socket();
    let target = lab.target();
    let mut args = vec![target.as_str()];
    args.extend(lab.host_if[..2].iter().map(String::as_str));
    let out = python("agent_pods.py", &args);
    let ports = vr_tests::json_lines(&out);
    assert_eq!(ports.len(), 2, "{out}");
    for (i, p) in ports.iter().enumerate() {
        lab.plug(i, p);
    }
    let ip_b = vr_tests::address_of(&ports[1]["ip"]);
    let server = format!(
        "import socket, threading, time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ip_b}', 5001)); s.listen(1); print('ready'); s.settimeout(60); c,_=s.accept(); c.settimeout(30); n=0\n\
         def tell():\n    while True:\n        print('got', n); time.sleep(0.1)\n\
         threading.Thread(target=tell, daemon=True).start()\n\
         while True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\nprint('total', n)"
    );
    let mut rx = vr_tests::serve(&lab.ns[1], &server, &[]);
    let client = format!(
        "import socket, time\ns=socket.create_connection(('{ip_b}', 5001), timeout=30)\n\
         while True:\n    s.sendall(b'x'*8192); time.sleep(0.002)"
    );
    let _tx = vr_tests::Reap(
        std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns[0], "python3", "-c", &client])
            .spawn()
            .expect("stream sender"),
    );
    let got = |rx: &mut vr_tests::Served| -> u64 {
        rx.latest_line()
            .and_then(|l| l.strip_prefix("got ")?.parse().ok())
            .unwrap_or(0)
    };
    vr_tests::wait_until("the stream flows", Duration::from_secs(30), || {
        got(&mut rx) > 100_000
    });

    let pid = lab.vrouter.as_ref().unwrap().child.id();
    // One cycle first, so that what is made once (the lcores' send sockets) exists.
    let churn_ifs: Vec<&str> = lab.host_if[2..].iter().map(String::as_str).collect();
    let mut a = vec![target.as_str(), "1"];
    a.extend(&churn_ifs);
    python("churn.py", &a);
    let vifs_before = vr_tests::vrctl_json(&socket, &["vif"]);
    let (fds0, rss0) = usage(pid, &socket);
    let before = got(&mut rx);

    // This run reuses the interfaces the first one made.
    let mut a = vec![target.as_str(), "1000"];
    a.extend(&churn_ifs);
    let out = python("churn.py", &a);
    let done = vr_tests::json_lines(&out);
    assert_eq!(
        done.last().map(|d| d["cycles"].clone()),
        Some(1000.into()),
        "{out}"
    );

    let after = got(&mut rx);
    assert!(
        after > before + 1_000_000,
        "the stream kept flowing through the churn: {before} -> {after} bytes"
    );
    let vifs_after = vr_tests::vrctl_json(&socket, &["vif"]);
    assert_eq!(vifs_after, vifs_before, "the vifs are as before");
    let (fds1, rss1) = usage(pid, &socket);
    // A leak would show as more descriptors after 1,000 cycles than before; fewer is a
    // descriptor that was still closing when the first count was taken.
    assert!(
        fds1 <= fds0,
        "no descriptor left open: {fds0} before, {fds1} after"
    );
    assert!(
        rss1 < rss0 + 16 * 1024,
        "resident memory {rss0} KiB -> {rss1} KiB"
    );
    let stats = vr_tests::vrctl_json(&socket, &["stats"]);
    eprintln!(
        "churn: {} ; vrouter fds {fds0} -> {fds1}, rss {rss0} -> {rss1} KiB",
        done[0]
    );
    assert_eq!(stats["lcores"], 2, "{stats}");
}

#[test]
fn two_hundred_fifty_pods_plugged_by_the_cni() {
    let lab = VrLab::new("dense-cni");
    lab.ok(&["up", "--lcores", "2"]);
    let agent = lab.target();
    // kube-manager makes the pods' interfaces (the pods are not started by vrlab: the
    // manifest goes to kube-manager alone), the CNI plugs them as a runtime would.
    let pods = 250;
    let mut m = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
    for i in 0..pods {
        m.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: c{i}}}\nspec: {{containers: [{{name: c, image: i}}]}}\n"
        ));
    }
    let manifest = lab.dir.join("cni-pods.yaml");
    std::fs::write(&manifest, m).unwrap();
    let o = std::process::Command::new(vr_tests::workspace_bin("kube-manager"))
        .args(["--agent", &agent, "-f", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let p = vr_tests::unique_prefix("dc");
    let names = vr_tests::Netns((0..pods).map(|i| format!("{p}-{i}")).collect());
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "vrouter", "type": "vrouter-cni", "agent": agent});
    let plugin = vr_tests::workspace_bin("vrouter-cni");
    let env = |i: usize| -> Vec<(String, String)> {
        vec![
            ("CNI_CONTAINERID".into(), format!("{p}-{i}-container")),
            ("CNI_NETNS".into(), format!("/var/run/netns/{}", names.0[i])),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=c{i}"),
            ),
        ]
    };
    let mut addrs = BTreeSet::new();
    for (i, n) in names.0.iter().enumerate() {
        vr_tests::ok(&["ip", "netns", "add", n]);
        let e = env(i);
        let (ok, r) = vr_tests::cni_call(
            plugin.to_str().unwrap(),
            "ADD",
            &vr_tests::as_refs(&e),
            &conf,
        );
        assert!(ok, "pod {i}: {r}");
        addrs.insert(vr_tests::address_of(&r["ips"][0]["address"]));
    }
    assert_eq!(addrs.len(), pods, "every pod its own address");
    let socket = std::path::PathBuf::from(lab.state()["nodes"][0]["socket"].as_str().unwrap());
    let count = |s: &std::path::Path| {
        vr_tests::vrctl_json(s, &["vif"])
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(&socket), pods + 2, "a vif per pod");
    // Pods across the list reach each other through the vrouter.
    let addrs: Vec<String> = addrs.into_iter().collect();
    for (from, to) in [(0, pods - 1), (pods - 1, 0), (pods / 2, 1), (7, pods / 3)] {
        assert!(
            vr_tests::pings_within(&names.0[from], &addrs[to]),
            "pod {from} -> {}",
            addrs[to]
        );
    }
    // DEL gives every interface back.
    for i in 0..pods {
        let e = env(i);
        let (ok, r) = vr_tests::cni_call(
            plugin.to_str().unwrap(),
            "DEL",
            &vr_tests::as_refs(&e),
            &conf,
        );
        assert!(ok, "pod {i}: {r}");
    }
    assert_eq!(count(&socket), 2, "no vif left");
}
