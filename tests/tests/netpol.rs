//! NetworkPolicy (networking.k8s.io/v1) end to end in `vrlab`, on the topology of the
//! upstream network-policy conformance tests: namespaces x, y, z (labelled `ns=<name>`),
//! pods a, b, c in each (labelled `pod=<name>`), each serving TCP and UDP on ports 80 and
//! 81 (named `serve-<port>-<tcp|udp>`). Every case applies its policies, probes every pod
//! pair with real connections and compares the whole matrix with what Kubernetes
//! specifies, then deletes its policies. A pod always reaches itself (loopback).

use std::collections::BTreeMap;

use vr_tests::VrLab;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|n| PODS.iter().map(move |p| format!("{n}/{p}")))
        .collect()
}

fn topology() -> String {
    let mut y = String::new();
    for n in NAMESPACES {
        y += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n  labels:\n    ns: {n}\n---\n"
        );
    }
    for n in NAMESPACES {
        for p in PODS {
            y += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {p}\n  namespace: {n}\n  labels:\n    pod: {p}\nspec:\n  containers:\n  - name: serve\n    image: agnhost\n    ports:\n"
            );
            for port in [80, 81] {
                for proto in ["TCP", "UDP"] {
                    y += &format!(
                        "    - name: serve-{port}-{}\n      containerPort: {port}\n      protocol: {proto}\n",
                        proto.to_lowercase()
                    );
                }
            }
            y += "---\n";
        }
    }
    y
}

/// The expected matrix, built like the upstream tests build theirs.
#[derive(Clone)]
struct Reach(BTreeMap<(String, String), bool>);

impl Reach {
    fn all(v: bool) -> Reach {
        let pods = all_pods();
        let mut m = BTreeMap::new();
        for f in &pods {
            for t in &pods {
                m.insert((f.clone(), t.clone()), v || f == t);
            }
        }
        Reach(m)
    }

    /// Sets every pair whose ends match; a pod to itself stays allowed.
    fn set(mut self, from: impl Fn(&str) -> bool, to: impl Fn(&str) -> bool, v: bool) -> Reach {
        for ((f, t), c) in self.0.iter_mut() {
            if from(f) && to(t) && f != t {
                *c = v;
            }
        }
        self
    }
}

fn any(_: &str) -> bool {
    true
}

fn pod(name: &'static str) -> impl Fn(&str) -> bool {
    move |p| p == name
}

fn in_ns(ns: &'static str) -> impl Fn(&str) -> bool {
    move |p| p.starts_with(&format!("{ns}/"))
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}---\n"
    )
}

struct Case {
    name: &'static str,
    policies: String,
    /// (port, protocol, expected).
    probes: Vec<(u16, &'static str, Reach)>,
}

fn case(name: &'static str, policies: String, probes: Vec<(u16, &'static str, Reach)>) -> Case {
    Case {
        name,
        policies,
        probes,
    }
}

fn cases(ip: &dyn Fn(&str) -> String) -> Vec<Case> {
    let to_xa = |from: &dyn Fn(&str) -> bool| {
        let deny = Reach::all(true).set(any, pod("x/a"), false);
        let mut r = deny;
        for ((f, t), c) in r.0.iter_mut() {
            if t == "x/a" && from(f) {
                *c = true;
            }
        }
        r
    };
    let yb = ip("y/b");
    let xb = ip("x/b");
    vec![
        case(
            "default-deny-ingress in x",
            policy("x", "deny-in", "podSelector: {}\npolicyTypes: [Ingress]"),
            vec![(80, "TCP", Reach::all(true).set(any, in_ns("x"), false))],
        ),
        case(
            "default-deny-all (ingress and egress) in x",
            policy(
                "x",
                "deny-all",
                "podSelector: {}\npolicyTypes: [Ingress, Egress]",
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true)
                    .set(any, in_ns("x"), false)
                    .set(in_ns("x"), any, false),
            )],
        ),
        case(
            "default-deny-egress in x",
            policy("x", "deny-out", "podSelector: {}\npolicyTypes: [Egress]"),
            vec![(80, "TCP", Reach::all(true).set(in_ns("x"), any, false))],
        ),
        case(
            "deny all ingress to x/a (an empty ingress list)",
            policy(
                "x",
                "deny-a",
                "podSelector:\n  matchLabels: {pod: a}\ningress: []",
            ),
            vec![(80, "TCP", Reach::all(true).set(any, pod("x/a"), false))],
        ),
        case(
            "allow x/b -> x/a by podSelector",
            policy(
                "x",
                "allow-b",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - podSelector:\n      matchLabels: {pod: b}",
            ),
            vec![(80, "TCP", to_xa(&pod("x/b")))],
        ),
        case(
            "allow namespace y -> x/a by namespaceSelector",
            policy(
                "x",
                "allow-y",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}",
            ),
            vec![(80, "TCP", to_xa(&in_ns("y")))],
        ),
        case(
            "namespaceSelector with matchExpressions (In)",
            policy(
                "x",
                "allow-y-expr",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: ns, operator: In, values: [y]}",
            ),
            vec![(80, "TCP", to_xa(&in_ns("y")))],
        ),
        case(
            "namespaceSelector NotIn [x]",
            policy(
                "x",
                "allow-not-x",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: ns, operator: NotIn, values: [x]}",
            ),
            vec![(80, "TCP", to_xa(&|p: &str| !p.starts_with("x/")))],
        ),
        case(
            "podSelector with matchExpressions (In)",
            policy(
                "x",
                "allow-b-expr",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - podSelector:\n      matchExpressions:\n      - {key: pod, operator: In, values: [b]}",
            ),
            vec![(80, "TCP", to_xa(&pod("x/b")))],
        ),
        case(
            "podSelector NotIn [b] (pods of x but b)",
            policy(
                "x",
                "allow-not-b",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - podSelector:\n      matchExpressions:\n      - {key: pod, operator: NotIn, values: [b]}",
            ),
            vec![(80, "TCP", to_xa(&pod("x/c")))],
        ),
        case(
            "podSelector OR namespaceSelector (two peers)",
            policy(
                "x",
                "allow-or",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: ns, operator: In, values: [y]}\n  - podSelector:\n      matchLabels: {pod: b}",
            ),
            vec![(
                80,
                "TCP",
                to_xa(&|p: &str| p.starts_with("y/") || p == "x/b"),
            )],
        ),
        case(
            "podSelector AND namespaceSelector (one peer)",
            policy(
                "x",
                "allow-and",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}\n    podSelector:\n      matchLabels: {pod: b}",
            ),
            vec![(80, "TCP", to_xa(&pod("y/b")))],
        ),
        case(
            "namespaces NotIn [x] and pods In [b, c]",
            policy(
                "x",
                "allow-multi",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions:\n      - {key: ns, operator: NotIn, values: [x]}\n    podSelector:\n      matchExpressions:\n      - {key: pod, operator: In, values: [b, c]}",
            ),
            vec![(
                80,
                "TCP",
                to_xa(&|p: &str| !p.starts_with("x/") && !p.ends_with("/a")),
            )],
        ),
        case(
            "the automatic kubernetes.io/metadata.name label",
            policy(
                "x",
                "allow-z-by-name",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {kubernetes.io/metadata.name: z}",
            ),
            vec![(80, "TCP", to_xa(&in_ns("z")))],
        ),
        case(
            "ingress from namespace y on port 81 only",
            policy(
                "x",
                "allow-y-81",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}\n  ports:\n  - {port: 81, protocol: TCP}",
            ),
            vec![
                (80, "TCP", to_xa(&|_: &str| false)),
                (81, "TCP", to_xa(&in_ns("y"))),
            ],
        ),
        case(
            "ingress on ports 80 and 81 from namespace y",
            policy(
                "x",
                "allow-y-80-81",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}\n  ports:\n  - {port: 80, protocol: TCP}\n  - {port: 81, protocol: TCP}",
            ),
            vec![
                (80, "TCP", to_xa(&in_ns("y"))),
                (81, "TCP", to_xa(&in_ns("y"))),
            ],
        ),
        case(
            "ingress on a named port (serve-80-tcp) from everywhere",
            policy(
                "x",
                "allow-named",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- ports:\n  - {port: serve-80-tcp, protocol: TCP}",
            ),
            vec![
                (80, "TCP", Reach::all(true)),
                (81, "TCP", to_xa(&|_: &str| false)),
            ],
        ),
        case(
            "ingress on a port range (endPort) 80-81 from y, 79-80 from z",
            policy(
                "x",
                "allow-range",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}\n  ports:\n  - {port: 80, endPort: 81, protocol: TCP}\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: z}\n  ports:\n  - {port: 79, endPort: 80, protocol: TCP}",
            ),
            vec![
                (
                    80,
                    "TCP",
                    to_xa(&|p: &str| p.starts_with("y/") || p.starts_with("z/")),
                ),
                (81, "TCP", to_xa(&in_ns("y"))),
            ],
        ),
        case(
            "UDP 80 only: TCP to x/a is blocked, UDP goes through",
            policy(
                "x",
                "allow-udp",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- ports:\n  - {port: 80, protocol: UDP}",
            ),
            vec![
                (80, "UDP", Reach::all(true)),
                (80, "TCP", to_xa(&|_: &str| false)),
            ],
        ),
        case(
            "SCTP 80 only: TCP and UDP to x/a are blocked",
            policy(
                "x",
                "allow-sctp",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- ports:\n  - {port: 80, protocol: SCTP}",
            ),
            vec![
                (80, "TCP", to_xa(&|_: &str| false)),
                (80, "UDP", to_xa(&|_: &str| false)),
            ],
        ),
        case(
            "egress from x/a on a named port (serve-80-tcp)",
            policy(
                "x",
                "egress-named",
                "podSelector:\n  matchLabels: {pod: a}\npolicyTypes: [Egress]\negress:\n- ports:\n  - {port: serve-80-tcp, protocol: TCP}",
            ),
            vec![
                (80, "TCP", Reach::all(true)),
                (81, "TCP", Reach::all(true).set(pod("x/a"), any, false)),
            ],
        ),
        case(
            "egress from x/a to y/b's address only (ipBlock)",
            policy(
                "x",
                "egress-ip",
                &format!(
                    "podSelector:\n  matchLabels: {{pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock:\n      cidr: {yb}/32"
                ),
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true)
                    .set(pod("x/a"), any, false)
                    .set(pod("x/a"), pod("y/b"), true),
            )],
        ),
        case(
            "egress from x/a to the pod subnet except y/b (ipBlock except)",
            policy(
                "x",
                "egress-except",
                &format!(
                    "podSelector:\n  matchLabels: {{pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock:\n      cidr: 10.32.0.0/12\n      except: [{yb}/32]"
                ),
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true).set(pod("x/a"), pod("y/b"), false),
            )],
        ),
        case(
            "ingress to x/a from everywhere but x/b (ipBlock except)",
            policy(
                "x",
                "ingress-except",
                &format!(
                    "podSelector:\n  matchLabels: {{pod: a}}\ningress:\n- from:\n  - ipBlock:\n      cidr: 10.32.0.0/12\n      except: [{xb}/32]"
                ),
            ),
            vec![(80, "TCP", to_xa(&|p: &str| p != "x/b"))],
        ),
        case(
            "two policies add up: from x/b, and from namespace z",
            policy(
                "x",
                "allow-b",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - podSelector:\n      matchLabels: {pod: b}",
            ) + &policy(
                "x",
                "allow-z",
                "podSelector:\n  matchLabels: {pod: a}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: z}",
            ),
            vec![(
                80,
                "TCP",
                to_xa(&|p: &str| p == "x/b" || p.starts_with("z/")),
            )],
        ),
        case(
            "deny all in x, then allow all ingress ({} rule): ingress open again",
            policy("x", "deny-in", "podSelector: {}\npolicyTypes: [Ingress]")
                + &policy("x", "allow-all-in", "podSelector: {}\ningress:\n- {}"),
            vec![(80, "TCP", Reach::all(true))],
        ),
        case(
            "deny all egress in x but to its own namespace",
            policy(
                "x",
                "egress-own",
                "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - podSelector: {}",
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true).set(in_ns("x"), |p| !p.starts_with("x/"), false),
            )],
        ),
        case(
            "both ends: x/a may only send to y, y/b only takes x/a",
            policy(
                "x",
                "xa-to-y",
                "podSelector:\n  matchLabels: {pod: a}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector:\n      matchLabels: {ns: y}",
            ) + &policy(
                "y",
                "yb-from-xa",
                "podSelector:\n  matchLabels: {pod: b}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: x}\n    podSelector:\n      matchLabels: {pod: a}",
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true)
                    .set(pod("x/a"), |p| !p.starts_with("y/"), false)
                    .set(any, pod("y/b"), false)
                    .set(pod("x/a"), pod("y/b"), true),
            )],
        ),
        case(
            "pods with the label (Exists) isolated, reachable from y only",
            policy(
                "x",
                "exists",
                "podSelector:\n  matchExpressions:\n  - {key: pod, operator: Exists}\ningress:\n- from:\n  - namespaceSelector:\n      matchLabels: {ns: y}",
            ),
            vec![(
                80,
                "TCP",
                Reach::all(true)
                    .set(any, in_ns("x"), false)
                    .set(in_ns("y"), in_ns("x"), true),
            )],
        ),
        case(
            "a policy that selects no pod changes nothing",
            policy(
                "y",
                "nobody",
                "podSelector:\n  matchLabels: {pod: nobody}\ningress: []",
            ),
            vec![(80, "TCP", Reach::all(true))],
        ),
    ]
}

fn compare(got: &BTreeMap<(String, String), bool>, want: &Reach) -> Vec<String> {
    want.0
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|((f, t), v)| {
            format!(
                "{f} -> {t}: {} (expected {})",
                match got.get(&(f.clone(), t.clone())) {
                    Some(true) => "connects",
                    Some(false) => "blocked",
                    None => "missing",
                },
                if *v { "connects" } else { "blocked" }
            )
        })
        .collect()
}

/// Brings a lab with `nodes` nodes up with the topology, runs the cases `pick` keeps
/// and checks every matrix, then that everything is open again without policies.
fn run_cases(nodes: u32, pick: impl Fn(&str) -> bool) -> VrLab {
    let lab = VrLab::new("netpol");
    lab.ok(&["up", "--nodes", &nodes.to_string()]);
    let topo = lab.dir.join("xyz.yaml");
    std::fs::write(&topo, topology()).unwrap();
    lab.ok(&["apply", "-f", topo.to_str().unwrap()]);
    let state = lab.state();
    let ip = |p: &str| -> String { vr_tests::address_of(&state["pods"][p]["ip"]) };
    // Without policies every pod reaches every other.
    let wrong = compare(&lab.matrix("80", "TCP"), &Reach::all(true));
    assert!(wrong.is_empty(), "no policies:\n{}", wrong.join("\n"));

    let all = cases(&ip);
    assert!(all.len() >= 25);
    let mut failures = Vec::new();
    for (i, c) in all.iter().enumerate().filter(|(_, c)| pick(c.name)) {
        let file = lab.dir.join(format!("case-{i}.yaml"));
        std::fs::write(&file, &c.policies).unwrap();
        lab.ok(&["apply", "-f", file.to_str().unwrap()]);
        for (port, proto, want) in &c.probes {
            let wrong = compare(&lab.matrix(&port.to_string(), proto), want);
            if !wrong.is_empty() {
                failures.push(format!(
                    "case {i} \"{}\" {port}/{proto}:\n  {}",
                    c.name,
                    wrong.join("\n  ")
                ));
            }
        }
        // Whatever the policies, the node reaches its pods (kubelet probes).
        let o = lab.vrlab(&["probe", "--from", "node1", "--to", "x/a", "--port", "80"]);
        if o.status.code() != Some(0) {
            failures.push(format!("case {i} \"{}\": node1 -> x/a blocked", c.name));
        }
        lab.ok(&["delete", "-f", file.to_str().unwrap()]);
    }
    // With the policies gone, everything is open again.
    let wrong = compare(&lab.matrix("80", "TCP"), &Reach::all(true));
    assert!(
        wrong.is_empty(),
        "after the last delete:\n{}",
        wrong.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    lab
}

#[test]
fn network_policy_conformance_cases_through_real_connections() {
    run_cases(1, |_| true);
}

/// The same policies with the pods spread over two nodes: the destination's vrouter
/// decides with the tags of remote sources as their routes carry them, the source's with
/// those of remote destinations; packets cross the fabric in tunnels.
#[test]
fn network_policies_hold_across_two_nodes() {
    let lab = run_cases(2, |name| {
        name.starts_with("default-deny-all")
            || name.starts_with("podSelector AND namespaceSelector")
            || name.starts_with("both ends")
            || name.starts_with("egress from x/a on a named port")
    });
    let state = lab.state();
    let nodes: std::collections::BTreeSet<u64> = state["pods"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["node"].as_u64().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "pods on both nodes");
    for n in ["node1", "node2"] {
        let stats = vr_tests::vrctl_json(&lab.dir.join(n).join("vrouter.sock"), &["stats"]);
        assert!(
            stats["encap"].as_u64().unwrap() > 0 && stats["decap"].as_u64().unwrap() > 0,
            "{n}: {stats}"
        );
    }
}

/// Every case with the pods spread over three nodes, so that most pairs cross the fabric
/// and each pair's two ends are decided by different vrouters.
#[test]
fn network_policies_hold_on_three_nodes() {
    let lab = run_cases(3, |_| true);
    let state = lab.state();
    let nodes: std::collections::BTreeSet<u64> = state["pods"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["node"].as_u64().unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "pods on every node");
}
