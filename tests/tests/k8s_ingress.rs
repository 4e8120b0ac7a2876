//! Kubernetes Ingresses through real HAProxy in `vrlab`: each node's `haproxy-manager`
//! runs the instances bound to it (active and standby) in network namespaces plugged
//! into the vrouter. Requests go by path and by host to the right Service (and over its
//! pods), an unknown host answers 503, an Ingress of another controller gets nothing,
//! the external IP answers a host outside the cluster, a custom network holds an
//! Ingress's VIP, and killing the active HAProxy moves the VIP to the standby (on the
//! same node or another one) until the active one is back.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use vr_tests::{VrLab, python};

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/ingress")
        .join(name)
        .display()
        .to_string()
}

/// An HTTP GET through `vrlab probe`: (exit status, the line it printed).
fn get(lab: &VrLab, from: &str, to: &str, host: Option<&str>, path: &str) -> (Option<i32>, String) {
    let mut args = vec!["probe", "--from", from, "--to", to, "--path", path];
    if let Some(h) = host {
        args.extend(["--host", h]);
    }
    let o = lab.vrlab(&args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// The pod that answered a successful GET (`... 200 (ns/pod) as ... via lb-...`).
fn served_by(out: &str) -> String {
    out.split('(')
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_default()
        .to_string()
}

/// The HAProxy instance that answered.
fn via(out: &str) -> String {
    out.split(" via ")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// An ingress's instances from `vrlab ingresses`: (node, name, pid) in order, active first.
fn instances(lab: &VrLab, ingress: &str) -> Vec<(String, String, Option<u32>)> {
    let out = lab.ok(&["ingresses"]);
    out.lines()
        .skip_while(|l| !l.starts_with(&format!("{ingress} ")))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[1].to_string(), w[2].to_string(), w[4].parse().ok())
        })
        .collect()
}

/// Retries a GET until it answers 200 (up to `limit`); the last answer.
fn get_until_ok(lab: &VrLab, from: &str, to: &str, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        let (code, out) = get(lab, from, to, None, "/");
        if code == Some(0) || t.elapsed() > limit {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the active instance's HAProxy: the standby answers; then the active one is
/// restarted and answers again.
fn check_failover(lab: &VrLab, from: &str, ingress: &str) {
    let inst = instances(lab, ingress);
    assert_eq!(inst.len(), 2, "{inst:?}");
    let (active, standby) = (inst[0].1.clone(), inst[1].1.clone());
    let out = get_until_ok(lab, from, &format!("ing/{ingress}"), Duration::from_secs(5));
    assert_eq!(via(&out), active, "the active instance serves: {out}");
    let pid = inst[0].2.expect("the active instance runs");
    vr_tests::ok(&["kill", "-9", &pid.to_string()]);
    // The standby takes over (a request in flight as the active one dies may fail).
    let out = get_until_ok(lab, from, &format!("ing/{ingress}"), Duration::from_secs(5));
    assert!(out.contains(": 200 ("), "{out}");
    let after = via(&out);
    let t = Instant::now();
    // It answered while the active instance was down or already back: either way one of
    // the two, and until the manager restarts the active one, the standby.
    assert!(after == standby || after == active, "{out}");
    // The active instance is started again and takes the VIP back.
    loop {
        let now = instances(lab, ingress);
        let back = now[0].2.is_some_and(|p| p != pid);
        let (_, out) = get(lab, from, &format!("ing/{ingress}"), None, "/");
        if back && via(&out) == active {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the active instance did not come back: {now:?} {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ingresses_route_by_path_and_host_through_haproxy_and_fail_over() {
    let lab = VrLab::new("ing");
    lab.ok(&["up"]);
    let out = lab.ok(&["apply", "-f", &manifest("shop.yaml")]);
    assert!(out.contains("ingress shop/single"), "{out}");
    let state = lab.state();
    let ingresses: BTreeSet<String> = state["ingresses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    // nginx's Ingress is left to nginx.
    assert_eq!(
        ingresses,
        BTreeSet::from(["shop/fanout".to_string(), "shop/single".to_string()])
    );

    // Single service: every request reaches web, spread over its two pods.
    let mut seen = BTreeSet::new();
    let mut instances_seen = BTreeSet::new();
    for _ in 0..12 {
        let (code, out) = get(&lab, "shop/client", "ing/shop/single", None, "/");
        assert_eq!(code, Some(0), "{out}");
        seen.insert(served_by(&out));
        instances_seen.insert(via(&out));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["shop/web-1".to_string(), "shop/web-2".to_string()])
    );
    assert_eq!(
        instances_seen,
        BTreeSet::from([instances(&lab, "shop/single")[0].1.clone()]),
        "only the active instance serves"
    );
    // Every HAProxy serving runs unprivileged in an empty chroot.
    for (_, name, pid) in instances(&lab, "shop/single") {
        let pid = pid.expect("a running HAProxy");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u != "0"),
            "{name}: HAProxy runs as root ({uid})"
        );
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert!(
            root.ends_with("chroot"),
            "{name}: HAProxy's root is {}",
            root.display()
        );
    }

    // Fanout by path, hosts by name.
    let shop = Some("shop.example.com");
    for (host, path, pod) in [
        (shop, "/cart", "shop/cart-1"),
        (shop, "/cart/items/3", "shop/cart-1"),
        (Some("SHOP.example.com:80"), "/cart", "shop/cart-1"),
        (shop, "/cartoons", "shop/web-"),
        (shop, "/", "shop/web-"),
        (Some("blog.example.com"), "/2026/11/post", "shop/blog-1"),
    ] {
        let (code, out) = get(&lab, "shop/client", "ing/shop/fanout", host, path);
        assert_eq!(code, Some(0), "{out}");
        assert!(served_by(&out).starts_with(pod), "{host:?}{path}: {out}");
    }
    let (code, out) = get(
        &lab,
        "shop/client",
        "ing/shop/fanout",
        Some("www.example.org"),
        "/",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(": 503"), "no rule for the host: {out}");

    // From outside the cluster, through the external IP.
    let (code, out) = get(
        &lab,
        "outside",
        "ing-ext/shop/fanout",
        Some("blog.example.com"),
        "/",
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(served_by(&out), "shop/blog-1");

    // A custom network: the operator makes it (reaching the service network and the
    // public one); the Ingress's VIP and instances live in it.
    python(
        "lab_network.py",
        &[
            &lab.target(),
            "default-domain:k8s-shop:edge",
            "default-domain:k8s-default:k8s-pod-ipam",
            "default-domain:k8s-default:k8s-default-service-network",
            "default-domain:default-project:public",
        ],
    );
    let out = lab.ok(&["apply", "-f", &manifest("edge.yaml")]);
    assert!(!out.contains("NetworkNotFound"), "{out}");
    let (code, out) = get(&lab, "outside", "ing-ext/shop/edge", None, "/");
    assert_eq!(code, Some(0), "{out}");
    assert!(served_by(&out).starts_with("shop/web-"), "{out}");
    // The pods' network has no policy with it.
    let (code, out) = get(&lab, "shop/client", "ing/shop/edge", None, "/");
    assert_eq!(code, Some(1), "{out}");

    // Failover on one node: both instances run here.
    check_failover(&lab, "shop/client", "shop/single");

    // Deleting the Ingress stops its instances and frees its VIP.
    let vip = lab.state()["ingresses"]["shop/single"]["vip"]
        .as_str()
        .unwrap()
        .to_string();
    let pids: Vec<u32> = instances(&lab, "shop/single")
        .into_iter()
        .filter_map(|i| i.2)
        .collect();
    lab.ok(&["delete", "-f", &manifest("single.yaml")]);
    assert!(lab.state()["ingresses"].get("shop/single").is_none());
    let t = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(t.elapsed() < Duration::from_secs(10), "HAProxy still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out) = get(&lab, "shop/client", &vip, None, "/");
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn the_standby_on_another_node_takes_over_when_the_active_haproxy_dies() {
    let lab = VrLab::new("ing2");
    lab.ok(&["up", "--nodes", "2"]);
    lab.ok(&["apply", "-f", &manifest("shop.yaml")]);
    let inst = instances(&lab, "shop/single");
    assert_eq!(inst.len(), 2, "{inst:?}");
    assert_ne!(inst[0].0, inst[1].0, "one instance per node: {inst:?}");
    // The external IP (routed to node 1) reaches the active instance wherever it runs.
    let (code, out) = get(&lab, "outside", "ing-ext/shop/single", None, "/");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(via(&out), inst[0].1, "{out}");
    check_failover(&lab, "shop/client", "shop/single");
    let (code, out) = get(&lab, "outside", "ing-ext/shop/single", None, "/");
    assert_eq!(code, Some(0), "after the failover and back: {out}");
}
