//! Ingresses without a cluster: kube-manager's translation (a loadbalancer, two
//! interfaces bound to nodes, active and standby, a listener, a pool per rule, the
//! backend Services' addresses as members, the class filter, custom networks, events),
//! the HAProxy configuration of a load balancer (checked by the real `haproxy -c`), and
//! the agent's routes for the VIP (the active instance's path; the standby's once the
//! active one is gone; a remote path of higher preference over a local one).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use agent::k8s::translate::{Translation, Underlay, translate_with};
use agent::k8s::{Cluster, KubeConfig, ingress, manifest};
use agent::lbaas::{self, Objects};
use agent::oper::{Bases, Ids, RemoteRoute, desired};
use agent::persist::PortRec;
use agent::proto::{self, object, object::Kind as K};
use agent::store::{Change, Db};
use common::{fq, node, obj, pods_network, project_and_ipam, r};

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{port: 8000}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fanout, namespace: shop}
spec:
  defaultBackend: {service: {name: web, port: {name: http}}}
  tls: [{hosts: [shop.example.com]}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {number: 8000}}}}
      - {path: /cart/checkout, pathType: Exact, backend: {service: {name: cart, port: {number: 8000}}}}
      - {path: /old, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}
  - http:
      paths:
      - {path: /web/, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: nginx-one
  namespace: shop
  annotations: {kubernetes.io/ingress.class: nginx}
spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: classed, namespace: shop}
spec: {ingressClassName: traefik, defaultBackend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ours
  namespace: shop
  annotations: {kubernetes.io/ingress.class: opencontrail}
spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}
"#;

fn nodes(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("---\napiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"))
        .collect()
}

fn shop(extra: &str) -> Cluster {
    let mut c = Cluster::default();
    let skipped = c.apply(manifest::parse(&format!("{SHOP}{extra}")).unwrap());
    assert!(skipped.is_empty(), "{skipped:?}");
    c
}

fn run(
    c: &Cluster,
    networks: &BTreeSet<String>,
    addresses: &BTreeMap<Vec<String>, String>,
) -> Translation {
    translate_with(
        &KubeConfig::default(),
        c,
        &Underlay {
            networks,
            node_interfaces: &Default::default(),
            addresses,
            ..Default::default()
        },
    )
}

fn of<T: Clone>(t: &Translation, pick: impl Fn(&object::Kind) -> Option<&T>) -> Vec<T> {
    t.objects
        .iter()
        .filter_map(|o| o.kind.as_ref())
        .filter_map(pick)
        .cloned()
        .collect()
}

#[test]
fn an_ingress_becomes_an_haproxy_load_balancer_with_two_instances_and_a_pool_per_rule() {
    let c = shop(&nodes(&["n1", "n2", "n3"]));
    // The agent assigned cart's VIP (web has its own clusterIP).
    let cart = agent::k8s::translate::service_interface(&KubeConfig::default(), "shop", "cart");
    let addresses = BTreeMap::from([(cart, "10.96.0.20".to_string())]);
    let t = run(&c, &BTreeSet::new(), &addresses);

    let lbs = of(&t, |k| match k {
        object::Kind::Loadbalancer(l) if l.provider == "opencontrail" => Some(l),
        _ => None,
    });
    let names: Vec<String> = lbs.iter().map(|l| l.fq_name[2].clone()).collect();
    // Other controllers' ingresses (annotation or ingressClassName) are left alone.
    assert_eq!(
        names,
        vec!["k8s__ingress__shop__fanout", "k8s__ingress__shop__ours"]
    );
    let lb = &lbs[0];
    assert_eq!(lb.vip_address, "", "the agent allocates the VIP");
    assert_eq!(
        lb.virtual_network_ref.as_ref().unwrap().fq_name,
        ["default-domain", "k8s-default", "k8s-default-pod-network"],
        "the namespace's pod network"
    );
    // Two instances on two different nodes, the first active.
    let vmis = of(&t, |k| match k {
        object::Kind::VirtualMachineInterface(v) if !v.binding_host.is_empty() => Some(v),
        _ => None,
    });
    let mine: Vec<&proto::VirtualMachineInterface> = vmis
        .iter()
        .filter(|v| v.fq_name[2].starts_with("k8s__ingress__shop__fanout"))
        .collect();
    assert_eq!(mine.len(), 2);
    assert_ne!(mine[0].binding_host, mine[1].binding_host);
    let placed = ingress::placement("shop", "fanout", c.nodes.keys());
    assert_eq!(
        [mine[0].binding_host.clone(), mine[1].binding_host.clone()],
        [placed[0].clone(), placed[1].clone()]
    );
    assert_eq!(mine[0].local_preference, ingress::ACTIVE_PREFERENCE);
    assert_eq!(mine[1].local_preference, 0, "the standby: the default");
    assert_eq!(
        lb.virtual_machine_interface_refs
            .iter()
            .map(|r| r.fq_name.clone())
            .collect::<Vec<_>>(),
        vec![mine[0].fq_name.clone(), mine[1].fq_name.clone()]
    );

    let listeners = of(&t, |k| match k {
        object::Kind::LoadbalancerListener(l) if l.protocol == "HTTP" => Some(l),
        _ => None,
    });
    assert_eq!(listeners.len(), 2, "one per ingress");
    assert_eq!(listeners[0].protocol_port, 80);
    let pools = of(&t, |k| match k {
        object::Kind::LoadbalancerPool(p) if p.fq_name[2].contains("fanout") => Some(p),
        _ => None,
    });
    let rules: BTreeSet<(String, String, bool)> = pools
        .iter()
        .map(|p| (p.host.clone(), p.path.clone(), p.path_exact))
        .collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            (String::new(), String::new(), false),
            ("shop.example.com".into(), "/cart".into(), false),
            ("shop.example.com".into(), "/cart/checkout".into(), true),
            ("shop.example.com".into(), "/old".into(), false),
            (String::new(), "/web/".into(), false),
        ])
    );
    // Members: the Services' addresses and ports (a named port resolved); the rule whose
    // Service does not exist has none.
    let members: BTreeSet<(String, u32)> = of(&t, |k| match k {
        object::Kind::LoadbalancerMember(m) if m.fq_name[2].contains("fanout") => Some(m),
        _ => None,
    })
    .into_iter()
    .map(|m| (m.address, m.protocol_port))
    .collect();
    assert_eq!(
        members,
        BTreeSet::from([("10.96.0.10".into(), 80), ("10.96.0.20".into(), 8000)])
    );
    let pool_members = of(&t, |k| match k {
        object::Kind::LoadbalancerMember(m) if m.fq_name[2].contains("fanout") => Some(m),
        _ => None,
    });
    assert_eq!(pool_members.len(), 4, "five rules, one without a Service");
    // Everything is named as kube-manager's own (so that it deletes it again).
    for o in &t.objects {
        let (kind, fq) = (agent::kinds::kind_of(o).unwrap(), agent::kinds::meta(o).1);
        if fq.iter().any(|s| s.contains("__ingress__")) {
            assert!(
                agent::k8s::sync::owned(&KubeConfig::default(), kind, fq),
                "{fq:?}"
            );
        }
    }
    let reasons: BTreeSet<&str> = t.events.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons.contains("BackendServiceNotFound") && reasons.contains("TlsNotSupported"),
        "{:?}",
        t.events
    );
}

#[test]
fn the_placement_is_stable_and_a_single_node_runs_both_instances() {
    let one = ["n1".to_string()];
    assert_eq!(ingress::placement("a", "b", one.iter()), vec!["n1", "n1"]);
    let three: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    let p = ingress::placement("shop", "fanout", three.iter());
    assert_eq!(p.len(), 2);
    assert_ne!(p[0], p[1]);
    // A node the ingress does not run on leaves: its instances stay where they are.
    let unused = three.iter().find(|n| !p.contains(n)).unwrap();
    let rest: Vec<String> = three.iter().filter(|n| *n != unused).cloned().collect();
    assert_eq!(ingress::placement("shop", "fanout", rest.iter()), p);
    assert!(ingress::placement("shop", "fanout", [].iter()).is_empty());
}

#[test]
fn no_nodes_and_missing_custom_networks_are_events_and_an_existing_network_is_used() {
    let t = run(&shop(""), &BTreeSet::new(), &BTreeMap::new());
    assert!(
        t.events.iter().any(|e| e.reason == "NoNodes"),
        "{:?}",
        t.events
    );
    let custom = "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  \
        name: edge\n  namespace: shop\n  annotations: {opencontrail.org/network: 'default-domain:k8s-shop:edge'}\n\
        spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}\n";
    let c = shop(&format!("{}{custom}", nodes(&["n1"])));
    let t = run(&c, &BTreeSet::new(), &BTreeMap::new());
    assert!(
        t.events
            .iter()
            .any(|e| e.object == "Ingress shop/edge" && e.reason == "NetworkNotFound"),
        "{:?}",
        t.events
    );
    let nets = BTreeSet::from(["default-domain:k8s-shop:edge".to_string()]);
    let t = run(&c, &nets, &BTreeMap::new());
    let edge = of(&t, |k| match k {
        object::Kind::Loadbalancer(l) if l.fq_name[2].ends_with("edge") => Some(l),
        _ => None,
    });
    assert_eq!(
        edge[0].virtual_network_ref.as_ref().unwrap().fq_name,
        ["default-domain", "k8s-shop", "edge"]
    );
}

fn objects(c: &Cluster, vip: &str) -> Objects {
    let cart = agent::k8s::translate::service_interface(&KubeConfig::default(), "shop", "cart");
    let t = run(
        c,
        &BTreeSet::new(),
        &BTreeMap::from([(cart, "10.96.0.20".into())]),
    );
    let mut o = Objects::from_objects(t.objects);
    // References by UUID, as the agent resolves them (kube-manager's objects have their
    // UUIDs already; its references name FQ names).
    let resolve = |r: &mut proto::Ref| {
        let kind = agent::kinds::Kind::from_name(&r.r#type).unwrap();
        r.uuid = agent::k8s::translate::uuid_for(kind, &r.fq_name);
    };
    for (i, l) in o.loadbalancers.iter_mut().enumerate() {
        l.vip_address = format!("{vip}{}", i + 1);
        l.virtual_machine_interface_refs
            .iter_mut()
            .for_each(resolve);
    }
    o.listeners
        .iter_mut()
        .for_each(|l| l.loadbalancer_ref.iter_mut().for_each(resolve));
    o.pools
        .iter_mut()
        .for_each(|p| p.loadbalancer_listener_ref.iter_mut().for_each(resolve));
    o
}

#[test]
fn the_haproxy_configuration_routes_by_host_and_path_and_haproxy_accepts_it() {
    let c = shop(&nodes(&["n1", "n2"]));
    let o = objects(&c, "10.32.0.");
    let fanout = o
        .loadbalancers
        .iter()
        .find(|l| l.fq_name[2].ends_with("fanout"))
        .unwrap();
    let cfg = lbaas::config(&o, fanout);
    assert!(
        cfg.contains(&format!("bind {}:80", fanout.vip_address)),
        "{cfg}"
    );
    // Order: host+exact, host+longer prefix ... any host; the default last.
    let uses: Vec<&str> = cfg.lines().filter(|l| l.contains("use_backend")).collect();
    assert_eq!(uses.len(), 4, "{cfg}");
    let acl = |backend_line: &str| -> Vec<String> {
        let pool = backend_line.split_whitespace().nth(1).unwrap();
        cfg.lines()
            .filter(|l| l.trim_start().starts_with(&format!("acl {pool}-")))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert!(
        acl(uses[0])
            .iter()
            .any(|a| a.ends_with("path -m str '/cart/checkout'")),
        "{cfg}"
    );
    assert!(
        acl(uses[1])
            .iter()
            .any(|a| a.ends_with("path -m beg '/cart/'")),
        "{cfg}"
    );
    assert!(
        acl(uses[1])
            .iter()
            .any(|a| a.ends_with("path -m str '/cart'")),
        "{cfg}"
    );
    assert!(
        acl(uses[1])
            .iter()
            .any(|a| a.contains("-m str -i 'shop.example.com'")),
        "{cfg}"
    );
    assert!(
        acl(uses[3])
            .iter()
            .any(|a| a.ends_with("path -m beg '/web/'")),
        "{cfg}"
    );
    assert!(
        !acl(uses[3]).iter().any(|a| a.contains("hdr(host)")),
        "{cfg}"
    );
    assert_eq!(cfg.matches("default_backend").count(), 1, "{cfg}");
    assert!(
        cfg.contains("server member-") && cfg.contains("10.96.0.20:8000"),
        "{cfg}"
    );
    assert!(cfg.contains("10.96.0.10:80"), "{cfg}");
    // The pool of a missing Service: a backend without servers (503).
    let backends = cfg.split("\nbackend ").skip(1);
    assert_eq!(
        backends.filter(|b| !b.contains("server ")).count(),
        1,
        "{cfg}"
    );

    // The real HAProxy accepts it, sandboxed as haproxy-manager runs it.
    let dir = std::env::temp_dir().join(format!("lbaas-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("chroot")).unwrap();
    let path = dir.join("fanout.cfg");
    let cfg = lbaas::sandboxed(
        &cfg,
        &lbaas::Sandbox {
            user: "haproxy".into(),
            group: "haproxy".into(),
            chroot: dir.join("chroot"),
        },
    );
    assert!(
        cfg.contains("global\n    user 'haproxy'\n    group 'haproxy'\n    chroot '"),
        "{cfg}"
    );
    std::fs::write(&path, &cfg).unwrap();
    let out = std::process::Command::new("haproxy")
        .env(lbaas::INSTANCE_ENV, "lb-test")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy (scripts/setup installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{cfg}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Ingress of the CVE-2021-25742 family: a path that carries HAProxy directives on
/// lines of their own, and a host with one. Each is its rule's event; the rest applies.
const HOSTILE: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: evil, namespace: shop}
spec:
  rules:
  - http:
      paths:
      - path: "/x\n    http-request return status 200 content-type text/plain file /etc/shadow if TRUE\n#"
        pathType: ImplementationSpecific
        backend: {service: {name: web, port: {number: 80}}}
      - {path: "/ok' if TRUE", pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: "/${HOME}", pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /fine, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: "shop.example.com if TRUE\n    http-request deny"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: "*.example.com"
    http:
      paths:
      - {path: /wild, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

#[test]
fn hostile_ingress_paths_and_hosts_are_events_and_never_reach_haproxy() {
    let c = shop(&format!("{}{HOSTILE}", nodes(&["n1"])));
    let t = run(&c, &BTreeSet::new(), &BTreeMap::new());
    let evil: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.object == "Ingress shop/evil")
        .collect();
    let reasons: Vec<&str> = evil.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "InvalidIngressPath",
            "InvalidIngressPath",
            "InvalidIngressPath",
            "InvalidIngressHost"
        ],
        "{evil:?}"
    );
    assert!(
        evil[0].message.starts_with("rules[0].http.paths[0]:"),
        "{evil:?}"
    );
    assert!(evil[3].message.starts_with("rules[1]:"), "{evil:?}");
    let pools = of(&t, |k| match k {
        object::Kind::LoadbalancerPool(p) if p.fq_name[2].contains("evil") => Some(p),
        _ => None,
    });
    let mut kept: Vec<(&str, &str)> = pools
        .iter()
        .map(|p| (p.host.as_str(), p.path.as_str()))
        .collect();
    kept.sort();
    assert_eq!(kept, [("", "/fine"), ("*.example.com", "/wild")]);
    // What is kept renders quoted, and nothing of the rejected rules is in the text.
    let o = objects(&c, "10.33.0.");
    let lb = o
        .loadbalancers
        .iter()
        .find(|l| l.fq_name[2].ends_with("evil"))
        .unwrap();
    let cfg = lbaas::config(&o, lb);
    assert!(
        !cfg.contains("http-request return") && !cfg.contains("/etc/shadow"),
        "{cfg}"
    );
    assert!(!cfg.contains("deny") && !cfg.contains("HOME"), "{cfg}");
    assert!(cfg.contains("-m end -i '.example.com'"), "{cfg}");

    // The store refuses the same values from any other client (gRPC).
    for (host, path) in [
        ("", "/x\n    http-request return status 200 if TRUE\n#"),
        ("", "relative"),
        ("", "/a b"),
        ("", "/100%"),
        ("a b", "/"),
        ("-bad.example.com", "/"),
        ("x.example.com\n#", "/"),
    ] {
        assert!(lbaas::check_path(path).is_err() || lbaas::check_host(host).is_err());
    }
    for ok in ["/", "/cart/checkout", "/a-b_c.d~e/%2F/:@!&()*+,;="] {
        assert_eq!(lbaas::check_path(ok), Ok(()), "{ok}");
    }
    for ok in ["shop.example.com", "*.example.com", "a", "SHOP.Example.com"] {
        assert_eq!(lbaas::check_host(ok), Ok(()), "{ok}");
    }
}

#[test]
fn a_node_runs_the_instances_bound_to_it_and_none_without_a_vip() {
    let c = shop(&nodes(&["n1", "n2"]));
    let o = objects(&c, "10.32.0.");
    let on1 = lbaas::instances(&o, "n1");
    let on2 = lbaas::instances(&o, "n2");
    assert_eq!(
        on1.len() + on2.len(),
        4,
        "two ingresses, two instances each"
    );
    assert!(!on1.is_empty() && !on2.is_empty());
    assert!(lbaas::instances(&o, "n3").is_empty());
    for i in on1.iter().chain(&on2) {
        assert_eq!(
            i.config,
            lbaas::config(
                &o,
                o.loadbalancers
                    .iter()
                    .find(|l| l.uuid == i.lb_uuid)
                    .unwrap()
            )
        );
    }
    let mut none = o.clone();
    for l in &mut none.loadbalancers {
        l.vip_address.clear();
    }
    assert!(lbaas::instances(&none, "n1").is_empty());
}

/// An HAProxy load balancer's VIP on two local interfaces of preferences 200 and 100.
fn haproxy_db() -> (Db, String, String) {
    let mut db = Db::new();
    let mut changes = Vec::from(project_and_ipam());
    changes.push(pods_network());
    for (name, pref) in [("active", 200), ("standby", 0)] {
        changes.push(Change::Create(obj(K::VirtualMachineInterface(
            proto::VirtualMachineInterface {
                fq_name: fq(name),
                virtual_network_ref: Some(r("virtual-network", fq("pods"))),
                binding_host: "n1".into(),
                local_preference: pref,
                ..Default::default()
            },
        ))));
    }
    changes.push(Change::Create(obj(K::Loadbalancer(proto::Loadbalancer {
        fq_name: fq("ing"),
        vip_address: "10.1.0.50".into(),
        virtual_network_ref: Some(r("virtual-network", fq("pods"))),
        provider: "opencontrail".into(),
        virtual_machine_interface_refs: vec![
            r("virtual-machine-interface", fq("active")),
            r("virtual-machine-interface", fq("standby")),
        ],
        ..Default::default()
    }))));
    db.apply(changes).expect("the configuration is valid");
    let uuid = |db: &Db, n: &str| {
        agent::kinds::meta(
            db.by_fq(agent::kinds::Kind::VirtualMachineInterface, &fq(n))
                .unwrap(),
        )
        .0
        .to_string()
    };
    let (a, s) = (uuid(&db, "active"), uuid(&db, "standby"));
    (db, a, s)
}

fn port(uuid: &str) -> (String, PortRec) {
    (
        uuid.to_string(),
        PortRec {
            vmi_uuid: uuid.to_string(),
            device: String::new(),
            name: String::new(),
            mtu: 1500,
        },
    )
}

/// The nexthop the VIP is routed to, and what it is.
fn vip_route(d: &agent::oper::Desired) -> vrouter_api::config::NexthopKind {
    let r = d
        .routes
        .values()
        .find(|r| r.prefix == "10.1.0.50/32")
        .expect("a route for the VIP");
    d.nexthops[&r.nh].kind.clone()
}

#[test]
fn the_vip_goes_to_the_active_instance_then_to_the_standby_when_it_is_gone() {
    let (db, active, standby) = haproxy_db();
    let mut ids = Ids::new(Bases::default(), BTreeMap::new());
    let both: BTreeMap<String, PortRec> = [port(&active), port(&standby)].into();
    let d = desired(&db, &node(), &both, &[], &mut ids);
    let nh_of = |d: &agent::oper::Desired, vmi: &str| d.ports[vmi].vif;
    let vrouter_api::config::NexthopKind::Encap { vif, .. } = vip_route(&d) else {
        panic!(
            "the VIP goes to one interface, not ECMP: {:?}",
            vip_route(&d)
        );
    };
    assert_eq!(vif, nh_of(&d, &active));
    // Both interfaces hold the VIP as their address (HAProxy binds it in each).
    assert!(
        d.ports[&active]
            .ip_addresses
            .iter()
            .any(|a| a.starts_with("10.1.0.50/"))
    );
    assert!(
        d.ports[&standby]
            .ip_addresses
            .iter()
            .any(|a| a.starts_with("10.1.0.50/"))
    );
    // Both are published with their preference, for the other nodes to choose alike.
    let prefs: BTreeSet<u32> = d
        .published
        .iter()
        .filter(|r| r.prefix == "10.1.0.50/32")
        .map(|r| r.preference)
        .collect();
    assert_eq!(prefs, BTreeSet::from([100, 200]));

    // The active instance's port withdrawn: the standby takes the VIP.
    let one: BTreeMap<String, PortRec> = [port(&standby)].into();
    let d = desired(&db, &node(), &one, &[], &mut ids);
    let vrouter_api::config::NexthopKind::Encap { vif, .. } = vip_route(&d) else {
        panic!("{:?}", vip_route(&d));
    };
    assert_eq!(vif, nh_of(&d, &standby));

    // The active instance on another node: its (remote) path wins over the local standby.
    let vn = agent::kinds::meta(
        db.by_fq(agent::kinds::Kind::VirtualNetwork, &fq("pods"))
            .unwrap(),
    )
    .0
    .to_string();
    let remote = vec![RemoteRoute {
        node_ip: "192.0.2.2".parse().unwrap(),
        node_mac: "02:00:00:00:00:02".into(),
        vn,
        prefix: "10.1.0.50/32".into(),
        label: 40,
        vni: 5,
        encaps: vec!["MPLSoUDP".into()],
        security_groups: vec![],
        tags: vec![],
        preference: 200,
    }];
    let d = desired(&db, &node(), &one, &remote, &mut ids);
    assert!(
        matches!(
            vip_route(&d),
            vrouter_api::config::NexthopKind::Tunnel { .. }
        ),
        "{:?}",
        vip_route(&d)
    );
}
