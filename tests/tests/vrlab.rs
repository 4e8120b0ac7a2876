//! `vrlab` end to end: Kubernetes manifests through kube-manager into a one-node lab,
//! pods as network namespaces, and real connections between them. The seed's isolation
//! lists for pods and for services, both variants (`iso`/`iso2` isolate pods and
//! services, `open` only pods), custom networks on a pod and on a namespace (missing first: an event, not a
//! crash), a namespace turning isolation off, and deletion.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use vr_tests::VrLab as Lab;

fn manifests(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/isolation")
        .join(name)
        .display()
        .to_string()
}

/// Checks every cell of `m` against `expect(from, to)`, reporting all differences.
fn check(m: &BTreeMap<(String, String), bool>, what: &str, expect: impl Fn(&str, &str) -> bool) {
    let wrong: Vec<String> = m
        .iter()
        .filter(|((f, t), c)| expect(f, t) != **c)
        .map(|((f, t), c)| format!("{f} -> {t}: {}", if *c { "connects" } else { "blocked" }))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: unexpected:\n{}",
        wrong.join("\n")
    );
}

fn ns(pod: &str) -> &str {
    pod.split('/').next().unwrap_or_default()
}

/// The seed's lists for pods: same-namespace pods reach each other; nobody from another
/// namespace reaches an isolated namespace's pods; isolated pods reach non-isolated ones
/// (and not another isolated namespace's); the custom network is apart from the rest.
fn seed_pod_rules(from: &str, to: &str) -> bool {
    let (f, t) = (ns(from), ns(to));
    let isolated = |n: &str| matches!(n, "iso" | "iso2" | "open");
    let custom = |p: &str| ns(p) == "blue" || p == "default/c";
    if custom(from) || custom(to) {
        return custom(from) && custom(to);
    }
    if f == t {
        return true;
    }
    !isolated(t)
}

/// The seed's lists for services: an isolated namespace's services are reached only from
/// its own pods; everyone else's (`default`'s, and `open`'s, whose service isolation is
/// off) from every pod of the cluster, isolated ones included; the custom network
/// reaches none.
fn seed_service_rules(from: &str, service: &str) -> bool {
    let custom = |p: &str| ns(p) == "blue" || p == "default/c";
    let svc_ns = service.split('/').nth(1).unwrap_or_default();
    if custom(from) {
        return false;
    }
    match svc_ns {
        "iso" | "iso2" => ns(from) == svc_ns,
        _ => true,
    }
}

#[test]
fn isolation_lists_and_custom_networks_through_real_connections() {
    isolation_lists(1);
}

/// The same lists with the seven pods spread over three nodes (most pairs cross the
/// fabric): each receiving vrouter decides with what the sending node published for the
/// source, so isolation holds across nodes exactly as on one.
#[test]
fn isolation_lists_hold_on_three_nodes() {
    isolation_lists(3);
}

fn isolation_lists(nodes: u32) {
    let lab = Lab::new("vrlab");
    // Namespace blue puts its pods in a network of the default namespace's project,
    // which the operator shares (a namespace may name its own project's networks only).
    let conf = std::env::temp_dir().join(vr_tests::unique_prefix("vrlab-kube.conf"));
    std::fs::write(
        &conf,
        "[KUBERNETES]\nshared_networks = ['default-domain:k8s-default:blue']\n",
    )
    .unwrap();
    lab.ok(&[
        "up",
        "--nodes",
        &nodes.to_string(),
        "--config",
        conf.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&conf);
    lab.ok(&["apply", "-f", &manifests("namespaces.yaml")]);
    let out = lab.ok(&["apply", "-f", &manifests("pods.yaml")]);
    // The custom network does not exist yet: an event per pod, the rest goes on.
    assert!(
        out.contains("event: Pod blue/b: NetworkNotFound")
            && out.contains("event: Pod default/c: NetworkNotFound"),
        "{out}"
    );
    let pods = lab.ok(&["pods"]);
    assert_eq!(pods.lines().count(), 5, "{pods}");

    // The operator creates the network, once, through the first node's API (the nodes
    // share one configuration); applying again places the two pods in it.
    let state = lab.state();
    let target = state["nodes"][0]["grpc"].as_str().unwrap();
    let o = Command::new("python3")
        .arg("lab_network.py")
        .args([
            target,
            "default-domain:k8s-default:blue",
            "default-domain:k8s-default:k8s-pod-ipam",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = lab.ok(&["apply", "-f", &manifests("pods.yaml")]);
    assert!(!out.contains("NetworkNotFound"), "{out}");
    let pods = lab.ok(&["pods"]);
    assert_eq!(pods.lines().count(), 7, "{pods}");
    assert!(
        pods.lines()
            .filter(|l| l.contains("default-domain:k8s-default:blue"))
            .count()
            == 2,
        "{pods}"
    );

    let placed: std::collections::BTreeSet<u64> = lab.state()["pods"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["node"].as_u64().unwrap())
        .collect();
    assert_eq!(placed.len(), nodes as usize, "pods on every node");
    let tcp = lab.matrix("80", "TCP");
    assert_eq!(tcp.len(), 49);
    check(&tcp, "TCP 80", seed_pod_rules);
    let udp = lab.matrix("53", "UDP");
    check(&udp, "UDP 53", |f, t| {
        seed_pod_rules(f, t) && t != "default/c"
    });

    // Services, through their port translation (8080 -> 80).
    lab.ok(&["apply", "-f", &manifests("services.yaml")]);
    // A pod behind a service reaches it too (hairpin: translated both ways).
    let svc = lab.service_matrix("8080", "TCP");
    assert_eq!(svc.len(), 7 * 4);
    check(&svc, "services 8080", seed_service_rules);

    // The node (kubelet probes) reaches every pod of kube-manager's networks, isolated
    // ones included, through the policy between them and the ip-fabric network; the
    // custom network's pods are the operator's.
    for p in ["default/a", "iso/x", "iso/y", "iso2/z", "open/w"] {
        let o = lab.vrlab(&["probe", "--from", "node1", "--to", p, "--port", "80"]);
        assert_eq!(o.status.code(), Some(0), "node1 -> {p}: {o:?}");
    }
    let o = lab.vrlab(&["probe", "--from", "node1", "--to", "blue/b", "--port", "80"]);
    assert_eq!(o.status.code(), Some(1), "node1 -> blue/b: {o:?}");

    // Single probes exit 0 / 1.
    let o = lab.vrlab(&["probe", "--from", "iso/x", "--to", "iso/y", "--port", "80"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("connected (iso/y)"));
    let o = lab.vrlab(&[
        "probe",
        "--from",
        "default/a",
        "--to",
        "iso/x",
        "--port",
        "80",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // `iso` stops being isolated: its pods join the cluster network and everyone
    // reaches them.
    let flip = lab.dir.join("flip.yaml");
    std::fs::write(
        &flip,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: iso\n  annotations: {opencontrail.org/isolation: \"false\"}\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", flip.to_str().unwrap()]);
    let tcp = lab.matrix("80", "TCP");
    check(&tcp, "TCP 80 after iso is open", |f, t| {
        // The same lists with iso's pods counted as default's.
        let as_default = |p: &str| p.replacen("iso/", "default/", 1);
        seed_pod_rules(&as_default(f), &as_default(t))
    });

    // Deleting the pods removes their namespaces and interfaces.
    lab.ok(&["delete", "-f", &manifests("pods.yaml")]);
    assert_eq!(lab.ok(&["pods"]).trim(), "");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("-iso-x"));
}
