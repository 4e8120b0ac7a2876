//! Kubernetes Services as native load balancers in `vrlab`, with real connections: a
//! ClusterIP service over three pods, port 80 to targetPort 8080 (TCP) and 53 to 5353
//! (UDP); connections spread over every backend and reach it on the target port; a port
//! the service does not have is blocked; sessionAffinity ClientIP keeps a client on one
//! backend; membership follows the pods' labels and the pods themselves. External IPs
//! (LoadBalancer, spec.externalIPs) from the public pool, reached by a host outside the
//! cluster.

use std::collections::BTreeMap;
use std::path::Path;

use vr_tests::VrLab;

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/services")
        .join(name)
        .display()
        .to_string()
}

/// One probe: its exit status and what it printed. It waits up to 3 s for an answer, so
/// that a connection whose first SYN is lost on a busy machine still gets its first
/// retransmission (after 1 s) in.
fn probe(lab: &VrLab, from: &str, to: &str, port: &str, protocol: &str) -> (Option<i32>, String) {
    let o = lab.vrlab(&[
        "probe",
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
        "--protocol",
        protocol,
        "--timeout-ms",
        "3000",
    ]);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

/// `n` connections from the client to the service: which backend answered, how often.
fn spread(lab: &VrLab, n: usize, port: &str, protocol: &str) -> BTreeMap<String, usize> {
    spread_to(lab, "svc/default/web", n, port, protocol)
}

fn spread_to(
    lab: &VrLab,
    to: &str,
    n: usize,
    port: &str,
    protocol: &str,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (code, out) = probe(lab, "default/client", to, port, protocol);
        assert_eq!(code, Some(0), "{out}");
        let who = out
            .split('(')
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_default()
            .to_string();
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_cluster_ip_service_balances_translates_ports_and_follows_its_pods() {
    let lab = VrLab::new("svc");
    lab.ok(&["up"]);
    lab.ok(&["apply", "-f", &manifest("web.yaml")]);
    let vip = vr_tests::address_of(&lab.state()["services"]["default/web"]);
    assert!(
        vip.starts_with("10.9"),
        "a VIP from the service subnet: {vip}"
    );

    let all = ["default/web-1", "default/web-2", "default/web-3"];
    let tcp = spread(&lab, 24, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        all,
        "every backend, only backends: {tcp:?}"
    );
    let udp = spread(&lab, 6, "53", "UDP");
    assert!(udp.keys().all(|k| all.contains(&k.as_str())), "{udp:?}");

    // ICMP errors follow their flow back through the translation: a service port whose
    // target nobody listens on gets "port unreachable" from the backend, which reaches
    // the client from the service's address, quoting what the client sent, so its
    // connected socket hears "refused" (untranslated, the client's stack would drop it
    // and the socket would time out).
    let closed = lab.dir.join("closed.yaml");
    std::fs::write(
        &closed,
        "apiVersion: v1\nkind: Service\nmetadata: {name: closed}\nspec:\n  selector: {app: web}\n  \
         ports: [{port: 54, targetPort: 5454, protocol: UDP}]\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", closed.to_str().unwrap()]);
    let state = lab.state();
    let closed_vip = vr_tests::address_of(&state["services"]["default/closed"]);
    let client_ns = state["pods"]["default/client"]["netns"]
        .as_str()
        .unwrap()
        .to_string();
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n\
         s.connect(('{closed_vip}', 54)); s.send(b'anyone?')\n\
         try:\n  s.recv(100); print('answered')\nexcept ConnectionRefusedError: print('refused')\n\
         except socket.timeout: print('timeout')"
    );
    let o = vr_tests::in_ns(&client_ns, &["python3", "-c", &code]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "refused",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // And a packet whose TTL runs out at the vrouter is answered with time exceeded.
    let web1 = vr_tests::address_of(&state["pods"]["default/web-1"]["ip"]);
    let o = vr_tests::in_ns(
        &client_ns,
        &["ping", "-c", "1", "-t", "1", "-W", "2", &web1],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Time to live exceeded"), "{text}");
    // Not a port of the service.
    let o = lab.vrlab(&[
        "probe",
        "--from",
        "default/client",
        "--to",
        "svc/default/web",
        "--port",
        "81",
    ]);
    assert_eq!(o.status.code(), Some(1));
    // The pods' own port 80 is not served: only 8080 is, through the service.
    let o = lab.vrlab(&[
        "probe",
        "--from",
        "default/client",
        "--to",
        "default/web-1",
        "--port",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(1));

    // sessionAffinity ClientIP: every connection of the client to one backend.
    let sticky = lab.dir.join("sticky.yaml");
    std::fs::write(
        &sticky,
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: web}\n  \
         sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", sticky.to_str().unwrap()]);
    let one = spread_to(&lab, "svc/default/sticky", 12, "80", "TCP");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        all.contains(&one.keys().next().unwrap().as_str()),
        "{one:?}"
    );

    // web-3 loses the label: it leaves the service, the others stay.
    let relabel = lab.dir.join("relabel.yaml");
    std::fs::write(
        &relabel,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-3, labels: {app: other}}\n\
         spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]}]}\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", relabel.to_str().unwrap()]);
    let tcp = spread(&lab, 16, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default/web-1", "default/web-2"],
        "{tcp:?}"
    );
    // web-2 goes away.
    let gone = lab.dir.join("gone.yaml");
    std::fs::write(
        &gone,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-2}\n",
    )
    .unwrap();
    lab.ok(&["delete", "-f", gone.to_str().unwrap()]);
    let tcp = spread(&lab, 8, "80", "TCP");
    assert_eq!(
        tcp.keys().map(String::as_str).collect::<Vec<_>>(),
        ["default/web-1"],
        "{tcp:?}"
    );
}

#[test]
fn external_ips_reach_the_service_from_outside_the_cluster() {
    let lab = VrLab::new("svc-ext");
    lab.ok(&["up"]);
    let out = lab.ok(&["apply", "-f", &manifest("external.yaml")]);
    assert!(
        out.contains("event: Service default/stray: ExternalIPNotInPool"),
        "{out}"
    );
    let ext = &lab.state()["externals"];
    let lb = vr_tests::address_of(&ext["default/lb"][0]);
    assert!(
        lb.starts_with("203.0.113."),
        "allocated from the pool: {lb}"
    );
    assert_eq!(
        vr_tests::address_of(&ext["default/fixed"][0]),
        "203.0.113.50"
    );
    assert!(ext.get("default/stray").is_none(), "{ext}");

    // From the outside host (routing the public subnet to node 1): TCP and UDP to the
    // LoadBalancer's address, translated to the backends' target ports; the backends see
    // the client's own address.
    let probe = |to: &str, port: &str, protocol: &str| probe(&lab, "outside", to, port, protocol);
    let mut backends = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (code, out) = probe("ext/default/lb", "80", "TCP");
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(" as 192.0.2.254:"), "{out}");
        backends.insert(
            out.split('(')
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        backends.into_iter().collect::<Vec<_>>(),
        ["default/web-1", "default/web-2"]
    );
    let (code, out) = probe("ext/default/lb", "53", "UDP");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = probe("ext/default/fixed", "8000", "TCP");
    assert_eq!(code, Some(0), "{out}");
    // Not a port of the service.
    assert_eq!(probe("ext/default/lb", "8000", "TCP").0, Some(1));

    // The Service goes: its external address with it.
    let gone = lab.dir.join("gone.yaml");
    std::fs::write(
        &gone,
        "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\n",
    )
    .unwrap();
    lab.ok(&["delete", "-f", gone.to_str().unwrap()]);
    let o = lab.vrlab(&["probe", "--from", "outside", "--to", &lb, "--port", "80"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_node_port_is_served_on_the_node_address_and_the_rest_stays_the_hosts() {
    let lab = VrLab::new("svc-np");
    lab.ok(&["up"]);
    let out = lab.ok(&["apply", "-f", &manifest("nodeport.yaml")]);
    assert!(!out.contains("NodePortNotAssigned"), "{out}");
    let node = vr_tests::address_of(&lab.state()["nodes"][0]["ip"]);
    let probe = |from: &str, port: &str, protocol: &str| probe(&lab, from, &node, port, protocol);
    // From outside the cluster and from a pod: the service's backend on its target port,
    // TCP and UDP; the backend sees the client's own address.
    let (code, out) = probe("outside", "30080", "TCP");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(default/web-1) as 192.0.2.254:"), "{out}");
    let (code, out) = probe("outside", "30053", "UDP");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = probe("default/client", "30080", "TCP");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(default/web-1)"), "{out}");
    // The assigned node port, kept when the manifest is applied again.
    let (code, out) = probe("outside", "30000", "TCP");
    assert_eq!(code, Some(0), "{out}");
    lab.ok(&["apply", "-f", &manifest("nodeport.yaml")]);
    assert_eq!(probe("outside", "30000", "TCP").0, Some(0));
    // Other ports of the node are the host's (nothing listens there).
    assert_eq!(probe("outside", "30081", "TCP").0, Some(1));
    assert_eq!(probe("outside", "81", "TCP").0, Some(1));
}

#[test]
fn pods_resolve_service_names_through_the_cluster_dns_pod() {
    let lab = VrLab::new("svc-dns");
    lab.ok(&["up"]);
    lab.ok(&["apply", "-f", &manifest("dns.yaml")]);
    let vip = vr_tests::address_of(&lab.state()["services"]["default/web"]);
    let lookup = |from: &str, name: &str| {
        let o = lab.vrlab(&["lookup", "--from", from, name]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    // The full name, and the short one through the namespace's search list; from another
    // namespace, the short one is not the same name.
    for (from, name) in [
        ("default/client", "web.default.svc.cluster.local"),
        ("default/client", "web"),
        ("other/client", "web.default"),
        ("other/client", "web.default.svc.cluster.local"),
    ] {
        let (code, out) = lookup(from, name);
        assert_eq!(code, Some(0), "{from} {name}: {out}");
        assert!(
            out.trim().ends_with(&format!("-> {vip}")),
            "{from} {name}: {out}"
        );
    }
    assert_eq!(lookup("other/client", "web").0, Some(1));
    assert_eq!(lookup("default/client", "nope").0, Some(1));
    // A Service made later resolves too (the server reads its records again); one that
    // goes stops resolving.
    let later = lab.dir.join("later.yaml");
    std::fs::write(
        &later,
        "apiVersion: v1\nkind: Service\nmetadata: {name: later}\nspec:\n  selector: {app: web}\n  \
         ports: [{port: 81, targetPort: 8080}]\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", later.to_str().unwrap()]);
    let later_vip = vr_tests::address_of(&lab.state()["services"]["default/later"]);
    let limit = std::time::Duration::from_secs(20);
    vr_tests::wait_until("the new Service to resolve", limit, || {
        let (code, out) = lookup("default/client", "later");
        code == Some(0) && out.trim().ends_with(&later_vip)
    });
    lab.ok(&["delete", "-f", later.to_str().unwrap()]);
    vr_tests::wait_until("the deleted Service to stop resolving", limit, || {
        lookup("default/client", "later").0 == Some(1)
    });
}

/// Two nodes, the backend on the second: a client outside the cluster reaches it through
/// the external IP (routed to node 1) and through the node port of either node, and so
/// does each node's host through the other's node port. Node 1
/// translates and tunnels to node 2, which returns the replies to node 1 (the client's
/// address has no route in the pod network): the client's address is kept all the way.
#[test]
fn external_ips_and_node_ports_reach_a_backend_on_another_node() {
    let lab = VrLab::new("svc-remote");
    lab.ok(&["up", "--nodes", "2"]);
    lab.ok(&["apply", "-f", &manifest("remote.yaml")]);
    let pods = lab.ok(&["pods"]);
    assert!(
        pods.lines()
            .any(|l| l.starts_with("default/web-1") && l.ends_with("node2")),
        "{pods}"
    );
    for (to, port) in [
        ("ext/default/lb", "80"),
        ("192.0.2.1", "30080"),
        ("192.0.2.2", "30080"),
    ] {
        let (code, out) = probe(&lab, "outside", to, port, "TCP");
        assert_eq!(code, Some(0), "{to}:{port}: {out}");
        assert!(
            out.contains("(default/web-1) as 192.0.2.254:"),
            "{to}:{port}: {out}"
        );
    }
    // From each node's host to the other node's port (kubelet-style): node 1's host to
    // node 2 (the backend local there), node 2's host through node 1 (translated there,
    // tunnelled back to node 2's pod, its replies returned to node 1).
    for (from, to) in [("node1", "192.0.2.2"), ("node2", "192.0.2.1")] {
        let (code, out) = probe(&lab, from, to, "30080", "TCP");
        assert_eq!(code, Some(0), "{from} -> {to}: {out}");
        assert!(out.contains("(default/web-1)"), "{out}");
    }
    // From a pod on node 1, as before: through the overlay.
    let (code, out) = probe(&lab, "default/client", "svc/default/lb", "80", "TCP");
    assert_eq!(code, Some(0), "{out}");
}

/// One refused object is an event of its own and stops nothing else: the stock
/// `default/kubernetes` Service (clusterIP on the service network's gateway) is refused
/// by the agent, and the second of two Services claiming one external IP gets an
/// ExternalIPTaken event from kube-manager; the pods, the first claimant and an
/// unrelated Service are applied and serve.
#[test]
fn a_refused_object_is_an_event_and_the_rest_of_the_cluster_applies() {
    let lab = VrLab::new("svc-conflict");
    lab.ok(&["up"]);
    let out = lab.ok(&["apply", "-f", &manifest("conflicts.yaml")]);
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("event: Refused: "))
        .collect();
    assert!(
        refused.iter().any(|l| l.contains("kubernetes")),
        "the kubernetes Service refused:\n{out}"
    );
    let taken = |out: &str| {
        out.lines().any(|l| {
            l.starts_with("event: Service default/second: ExternalIPTaken: 203.0.113.60")
                && l.contains("default/first")
        })
    };
    assert!(taken(&out), "the second claim is an event:\n{out}");
    // Each line names the refused object first; none is the first claimant's or good's.
    let subjects: Vec<&str> = refused
        .iter()
        .filter_map(|l| l.strip_prefix("event: Refused: ")?.split(": ").next())
        .collect();
    assert!(
        !subjects
            .iter()
            .any(|s| s.contains("__first") || s.contains("__good")),
        "{out}"
    );
    let state = lab.state();
    assert_eq!(
        vr_tests::address_of(&state["externals"]["default/first"][0]),
        "203.0.113.60"
    );
    assert!(
        state["externals"].get("default/second").is_none(),
        "{state}"
    );
    assert!(state["services"].get("default/good").is_some(), "{state}");
    // What was applied works.
    let (code, out) = probe(&lab, "outside", "ext/default/first", "80", "TCP");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = probe(&lab, "default/client", "svc/default/good", "8000", "TCP");
    assert_eq!(code, Some(0), "{out}");
    // Applying again keeps the first claimant and gives the second its event again.
    let out = lab.ok(&["apply", "-f", &manifest("conflicts.yaml")]);
    assert!(taken(&out), "{out}");
    assert_eq!(
        vr_tests::address_of(&lab.state()["externals"]["default/first"][0]),
        "203.0.113.60"
    );
}
