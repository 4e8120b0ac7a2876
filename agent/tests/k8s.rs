//! kube-manager without an agent: the `[KUBERNETES]` section, manifests with
//! `kubectl apply` semantics, the translation's layout and events, and the sync plan.

use std::collections::BTreeSet;

use agent::k8s::sync::{owned, plan};
use agent::k8s::translate::translate;
use agent::k8s::{Cluster, KubeConfig, fq_annotation, manifest};
use agent::kinds::{self, Kind, fq_string};
use agent::proto::{change, object};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata:
  name: dev
  annotations: {opencontrail.org/isolation: "true"}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: dev, labels: {app: web, tier: front}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: node-agent}
spec: {hostNetwork: true, containers: [{name: c, image: i}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
"#;

fn cluster() -> Cluster {
    let mut c = Cluster::default();
    let skipped = c.apply(manifest::parse(MANIFEST).unwrap());
    assert_eq!(skipped, vec!["Deployment d".to_string()]);
    c
}

fn names(objs: &[agent::proto::Object], kind: Kind) -> Vec<String> {
    objs.iter()
        .filter(|o| kinds::kind_of(o) == Some(kind))
        .map(|o| fq_string(kinds::meta(o).1))
        .collect()
}

#[test]
fn kubernetes_section_is_read_with_contrail_list_values_and_checked() {
    let c = KubeConfig::parse(
        "[DEFAULTS]\nfoo = 1\n[KUBERNETES]\ncluster_name = prod\n\
         pod_subnets = ['10.40.0.0/16', '10.41.0.0/16']\nservice_subnets = 10.100.0.0/16\n\
         cluster_project = {'domain': 'default-domain', 'project': 'k8s'}\nip_fabric_snat = True\n\
         public_fip_pool = {'project' : 'admin', 'domain': 'default-domain', 'name': 'pool', 'network': 'public'}\n",
    )
    .unwrap();
    assert_eq!(
        c.public_fip_pool,
        Some(vec![
            "default-domain".to_string(),
            "admin".into(),
            "public".into(),
            "pool".into()
        ])
    );
    assert_eq!(c.cluster_name, "prod");
    assert_eq!(c.pod_subnets, vec!["10.40.0.0/16", "10.41.0.0/16"]);
    assert_eq!(c.service_subnets, vec!["10.100.0.0/16"]);
    assert_eq!(c.cluster_project.as_deref(), Some("default-domain:k8s"));
    assert!(c.ip_fabric_snat && !c.ip_fabric_forwarding);
    for (bad, why) in [
        (
            "[KUBERNETES]\npod_subnets = ['10.0.0.0']\n",
            "ADDRESS/LENGTH",
        ),
        (
            "[KUBERNETES]\npod_subnets = ['10.0.0.1/16']\n",
            "host bits are set",
        ),
        (
            "[KUBERNETES]\nservice_subnets = 10.96.0.0/33\n",
            "length above 32",
        ),
        ("[KUBERNETES]\nservice_subnets = []\n", "at least one"),
        ("[KUBERNETES]\nip_fabric_snat = maybe\n", "not a boolean"),
        ("[KUBERNETES]\nclusterr_name = x\n", "unknown key"),
        ("[KUBERNETES]\ncluster_name = a b\n", "letters, digits"),
        (
            "[KUBERNETES]\npublic_fip_pool = {'domain': 'd', 'project': 'p', 'name': 'n'}\n",
            "no \"network\"",
        ),
        (
            "[KUBERNETES]\npublic_fip_pool = d:p:n\n",
            "pool names are needed",
        ),
    ] {
        let e = format!("{:#}", KubeConfig::parse(bad).unwrap_err());
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert_eq!(
        fq_annotation(r#"{"domain": "d", "project": "p", "name": "n"}"#),
        Some(vec!["d".into(), "p".into(), "n".into()])
    );
    assert_eq!(fq_annotation("d:p:n").map(|v| v.len()), Some(3));
    assert_eq!(fq_annotation("just-a-name"), None);
}

#[test]
fn manifests_apply_replace_and_delete_and_bad_documents_are_errors() {
    let mut c = cluster();
    assert_eq!(c.pods.len(), 4);
    // Applying again with other labels replaces the pod.
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: dev, labels: {app: api}}\n",
        )
        .unwrap(),
    );
    let web = &c.pods[&("dev".to_string(), "web".to_string())];
    assert_eq!(web.metadata.labels.as_ref().unwrap()["app"], "api");
    // Deleting a namespace deletes its pods.
    c.delete(&manifest::parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n").unwrap());
    assert!(!c.pods.keys().any(|(ns, _)| ns == "dev"));
    // A round trip through the saved form keeps every object.
    let mut again = Cluster::default();
    again.apply(manifest::parse(&cluster().to_yaml().unwrap()).unwrap());
    assert_eq!(again.pods.len(), 4);
    assert_eq!(again.namespaces.len(), 2);
    for (bad, why) in [
        ("kind: Pod\nmetadata: {name: p}\n", "apiVersion and kind"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "metadata.name"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 5}\n",
            "Pod p",
        ),
        ("apiVersion: v1\nkind: Pod\n  bad: [indent\n", "document 1"),
    ] {
        let e = format!("{:#}", manifest::parse(bad).unwrap_err());
        assert!(e.contains(why), "{bad:?}: {e}");
    }
}

#[test]
fn translation_lays_out_projects_networks_isolation_and_pods() {
    let t = translate(&KubeConfig::default(), &cluster(), &BTreeSet::new());
    assert!(t.events.is_empty(), "{:?}", t.events);
    assert_eq!(
        names(&t.objects, Kind::Project),
        vec!["default-domain:k8s-default", "default-domain:k8s-dev"]
    );
    assert_eq!(
        names(&t.objects, Kind::VirtualNetwork),
        vec![
            "default-domain:k8s-default:k8s-default-pod-network",
            "default-domain:k8s-default:k8s-default-service-network",
            "default-domain:k8s-dev:k8s-dev-pod-network",
            "default-domain:k8s-dev:k8s-dev-service-network",
        ]
    );
    // Isolation is the networks': no security group. The isolated pods open connections
    // to the cluster's pods and services one way; their own services both ways.
    assert!(names(&t.objects, Kind::SecurityGroup).is_empty());
    let rules = |fq: &str| -> Vec<(String, String, String)> {
        t.objects
            .iter()
            .find_map(|o| match &o.kind {
                Some(object::Kind::NetworkPolicy(p)) if fq_string(&p.fq_name) == fq => Some(
                    p.network_policy_entries
                        .iter()
                        .map(|r| {
                            (
                                r.src_addresses[0].virtual_network.clone(),
                                r.direction.clone(),
                                r.dst_addresses[0].virtual_network.clone(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no policy {fq}"))
    };
    let net = |p: &str, n: &str| format!("default-domain:{p}:{n}");
    assert_eq!(
        rules("default-domain:k8s-dev:k8s-dev-cluster-access"),
        vec![
            (
                net("k8s-dev", "k8s-dev-pod-network"),
                ">".into(),
                net("k8s-default", "k8s-default-pod-network")
            ),
            (
                net("k8s-dev", "k8s-dev-pod-network"),
                ">".into(),
                net("k8s-default", "k8s-default-service-network")
            ),
        ]
    );
    assert_eq!(
        rules("default-domain:k8s-dev:k8s-dev-pod-service"),
        vec![(
            net("k8s-dev", "k8s-dev-pod-network"),
            "<>".into(),
            net("k8s-dev", "k8s-dev-service-network")
        )]
    );
    // kube-system and host-network pods are the underlay's.
    let pods: Vec<String> = t
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert_eq!(pods, vec!["default/client", "dev/web"]);
    let web = &t.pods[1];
    assert_eq!(
        fq_string(&web.network),
        "default-domain:k8s-dev:k8s-dev-pod-network"
    );
    assert_eq!(
        web.ports,
        vec![(80, "TCP".to_string()), (53, "UDP".to_string())]
    );
    // The pod's interface: its network, its labels and namespace.
    let vmi = t
        .objects
        .iter()
        .find_map(|o| match &o.kind {
            Some(object::Kind::VirtualMachineInterface(v)) if v.fq_name == web.vmi => Some(v),
            _ => None,
        })
        .unwrap();
    let tags: Vec<String> = vmi.tag_refs.iter().map(|r| fq_string(&r.fq_name)).collect();
    assert_eq!(
        tags,
        vec![
            "default-domain:k8s-dev:namespace=dev",
            "default-domain:k8s-dev:label=app=web",
            "default-domain:k8s-dev:label=tier=front",
            "default-domain:k8s-dev:pod=web",
        ]
    );
    assert!(vmi.security_group_refs.is_empty());
    // Objects come in dependency order.
    let order: Vec<usize> = t
        .objects
        .iter()
        .map(|o| {
            let k = kinds::kind_of(o).unwrap();
            agent::k8s::translate::ORDER
                .iter()
                .position(|x| *x == k)
                .unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn a_missing_custom_network_is_an_event_on_the_pod_and_an_existing_one_is_used() {
    let mut c = cluster();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {opencontrail.org/network: 'default-domain:admin:blue'}\n",
        )
        .unwrap(),
    );
    // admin's networks are the operator's to share.
    let cfg = KubeConfig {
        shared_networks: vec!["default-domain:admin:*".into()],
        ..KubeConfig::default()
    };
    let t = translate(&cfg, &c, &BTreeSet::new());
    assert_eq!(t.events.len(), 1);
    assert_eq!(t.events[0].reason, "NetworkNotFound");
    assert!(t.events[0].object == "Pod default/p");
    assert_eq!(t.pods.len(), 2, "the other pods are still translated");
    let nets: BTreeSet<String> = ["default-domain:admin:blue".to_string()].into();
    let t = translate(&cfg, &c, &nets);
    assert!(t.events.is_empty());
    let p = t.pods.iter().find(|p| p.name == "p").unwrap();
    assert_eq!(fq_string(&p.network), "default-domain:admin:blue");
}

#[test]
fn a_custom_network_must_be_the_namespaces_own_or_shared_and_never_the_underlay() {
    let pod = |name: &str, ns: &str, net: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
             annotations: {{opencontrail.org/network: '{net}'}}\n"
        )
    };
    let mut c = cluster();
    let text = [
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n".to_string(),
        pod(
            "fabric",
            "default",
            "default-domain:default-project:ip-fabric",
        ),
        pod("public", "default", "default-domain:admin:public"),
        pod("theirs", "default", "default-domain:k8s-other:secret"),
        pod("mine", "other", "default-domain:k8s-other:secret"),
        pod("shared", "default", "default-domain:admin:blue"),
        pod(
            "json",
            "default",
            r#"{"domain": "default-domain", "project": "k8s-other", "name": "secret"}"#,
        ),
    ]
    .concat();
    c.apply(manifest::parse(&text).unwrap());
    let cfg = KubeConfig {
        public_fip_pool: Some(
            ["default-domain", "admin", "public", "pool"]
                .map(String::from)
                .to_vec(),
        ),
        shared_networks: vec!["default-domain:admin:blue".into()],
        ..KubeConfig::default()
    };
    let nets: BTreeSet<String> = [
        "default-domain:default-project:ip-fabric",
        "default-domain:admin:public",
        "default-domain:admin:blue",
        "default-domain:k8s-other:secret",
    ]
    .map(String::from)
    .into();
    let t = translate(&cfg, &c, &nets);
    let refused: BTreeSet<&str> = t
        .events
        .iter()
        .filter(|e| e.reason == "NetworkNotAllowed")
        .map(|e| e.object.as_str())
        .collect();
    assert_eq!(
        refused,
        BTreeSet::from([
            "Pod default/fabric",
            "Pod default/public",
            "Pod default/theirs",
            "Pod default/json"
        ]),
        "{:?}",
        t.events
    );
    let placed = |name: &str| {
        t.pods
            .iter()
            .find(|p| p.name == name)
            .map(|p| fq_string(&p.network))
    };
    assert_eq!(
        placed("mine").as_deref(),
        Some("default-domain:k8s-other:secret")
    );
    assert_eq!(
        placed("shared").as_deref(),
        Some("default-domain:admin:blue")
    );
    assert_eq!(placed("theirs"), None);
}

#[test]
fn sync_plan_is_empty_when_in_step_and_deletes_only_its_own_objects() {
    let cfg = KubeConfig::default();
    let t = translate(&cfg, &cluster(), &BTreeSet::new());
    // Everything missing: creates in order.
    let p = plan(&cfg, &t.objects, &[]);
    assert_eq!(p.len(), t.objects.len());
    assert!(
        p.iter()
            .all(|c| matches!(c.change, Some(change::Change::Create(_))))
    );
    // In step: nothing to do.
    assert!(plan(&cfg, &t.objects, &t.objects).is_empty());
    // The dev namespace goes: its objects are deleted, VMIs before networks, and the
    // cluster network is updated (its policy to dev's networks is gone).
    let mut c = cluster();
    c.delete(&manifest::parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n").unwrap());
    let smaller = translate(&cfg, &c, &BTreeSet::new());
    let mut foreign = t.objects.clone();
    foreign.push(agent::proto::Object {
        kind: Some(object::Kind::Project(agent::proto::Project {
            uuid: "u".into(),
            fq_name: vec!["default-domain".into(), "admin".into()],
        })),
    });
    let p = plan(&cfg, &smaller.objects, &foreign);
    let deleted: Vec<String> = p
        .iter()
        .filter_map(|c| match &c.change {
            Some(change::Change::Delete(r)) => {
                Some(format!("{}:{}", r.r#type, fq_string(&r.fq_name)))
            }
            _ => None,
        })
        .collect();
    assert!(!deleted.iter().any(|d| d.contains("admin")), "{deleted:?}");
    let pos = |s: &str| deleted.iter().position(|d| d.starts_with(s)).unwrap();
    assert!(pos("instance-ip") < pos("virtual-machine-interface"));
    assert!(pos("virtual-machine-interface") < pos("virtual-network"));
    assert!(pos("virtual-network") < pos("network-policy"));
    assert!(pos("network-policy") < pos("project"));
    assert!(p.iter().any(|c| matches!(&c.change,
        Some(change::Change::Update(o)) if kinds::meta(o).1.last().unwrap() == "k8s-default-pod-network")));
    assert!(owned(&cfg, Kind::VirtualMachine, &["k8s__dev__web".into()]));
    assert!(!owned(
        &cfg,
        Kind::VirtualNetwork,
        &["default-domain".into(), "admin".into(), "blue".into()]
    ));
}

#[test]
fn network_policies_become_two_cluster_wide_policy_sets_and_leave_with_the_last_policy() {
    let cfg = KubeConfig::default();
    let mut c = cluster();
    let before = translate(&cfg, &c, &BTreeSet::new());
    assert!(names(&before.objects, Kind::ApplicationPolicySet).is_empty());
    let policies = manifest::parse(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-in, namespace: dev}\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - podSelector: {}\n    ports:\n    - {port: 80}\n\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: lost, namespace: nowhere}\nspec: {podSelector: {}}\n",
    )
    .unwrap();
    c.apply(policies.clone());
    let t = translate(&cfg, &c, &BTreeSet::new());
    assert_eq!(
        names(&t.objects, Kind::ApplicationPolicySet),
        vec![
            "default-policy-management:k8s-egress",
            "default-policy-management:k8s-ingress"
        ]
    );
    assert!(
        names(&t.objects, Kind::FirewallPolicy)
            .contains(&"default-domain:k8s-dev:k8s-dev-web-in-ingress".to_string())
    );
    // The allow rule: pods of dev -> pods of dev labelled app=web, TCP 80; the isolation
    // rule denies the rest to them.
    let rules: Vec<&agent::proto::FirewallRule> = t
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::FirewallRule(r)) => Some(r),
            _ => None,
        })
        .collect();
    let web = vec![
        "default-domain:k8s-dev:label=app=web".to_string(),
        "default-domain:k8s-dev:namespace=dev".to_string(),
    ];
    assert!(rules.iter().any(|r| {
        r.action == "pass"
            && r.endpoint_1.as_ref().unwrap().tags == ["default-domain:k8s-dev:namespace=dev"]
            && r.endpoint_2.as_ref().unwrap().tags == web
            && r.services.len() == 1
            && r.services[0].protocol == "tcp"
            && r.services[0]
                .dst_ports
                .as_ref()
                .map(|p| (p.start_port, p.end_port))
                == Some((80, 80))
    }));
    assert!(rules.iter().any(|r| r.action == "deny"
        && r.endpoint_1.as_ref().unwrap().any
        && r.endpoint_2.as_ref().unwrap().tags == web));
    assert!(
        t.events
            .iter()
            .any(|e| e.object == "NetworkPolicy nowhere/lost" && e.reason == "NamespaceNotFound"),
        "{:?}",
        t.events
    );
    // Without policies the firewall objects go, policy sets first.
    c.delete(&policies);
    let p = plan(&cfg, &before.objects, &t.objects);
    let deleted: Vec<String> = p
        .iter()
        .filter_map(|c| match &c.change {
            Some(change::Change::Delete(r)) => Some(r.r#type.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted.first().map(String::as_str),
        Some("application-policy-set")
    );
    assert!(deleted.iter().any(|d| d == "firewall-rule"));
    assert!(
        p.iter()
            .all(|c| matches!(c.change, Some(change::Change::Delete(_))))
    );
}

#[test]
fn nested_mode_makes_pods_sub_interfaces_of_their_node_vm_interface() {
    let cfg = KubeConfig::parse("[KUBERNETES]\nnested_mode = 1\n").unwrap();
    assert!(cfg.nested_mode);
    let mut c = Cluster::default();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: on-node}\n\
             spec: {containers: [{name: c, image: i}]}\nstatus: {hostIP: 192.0.2.10}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\n\
             spec: {containers: [{name: c, image: i}]}\nstatus: {hostIP: 192.0.2.99}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: pending}\n\
             spec: {containers: [{name: c, image: i}]}\n",
        )
        .unwrap(),
    );
    let node_vmi: Vec<String> = ["default-domain", "admin", "k8s-node-1-eth0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let nodes = std::collections::BTreeMap::from([("192.0.2.10".to_string(), node_vmi.clone())]);
    let t = agent::k8s::translate::translate_nested(&cfg, &c, &BTreeSet::new(), &nodes);
    let names: Vec<&str> = t.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["on-node"]);
    let vmi = t
        .objects
        .iter()
        .find_map(|o| match &o.kind {
            Some(object::Kind::VirtualMachineInterface(v)) => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(vmi.parent_interface_ref.as_ref().unwrap().fq_name, node_vmi);
    assert_eq!(vmi.sub_interface_vlan_tag, 0, "the agent assigns the tag");
    let reasons: Vec<(String, String)> = t
        .events
        .iter()
        .map(|e| (e.object.clone(), e.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                "Pod default/elsewhere".into(),
                "NodeInterfaceNotFound".into()
            ),
            ("Pod default/pending".into(), "NodeInterfaceNotFound".into()),
        ]
    );
    // Outside nested mode the same pods are ordinary interfaces.
    let plain = translate(&KubeConfig::default(), &c, &BTreeSet::new());
    assert_eq!(plain.pods.len(), 3);
}

#[test]
fn the_node_reaches_pod_networks_through_a_policy_attached_to_ip_fabric() {
    let cfg = KubeConfig::default();
    let fabric: Vec<String> = agent::oper::IP_FABRIC
        .split(':')
        .map(str::to_string)
        .collect();
    // Without an ip-fabric network nothing of the kind is made.
    let t = translate(&cfg, &cluster(), &BTreeSet::new());
    assert!(t.attachments.is_empty());
    let with = BTreeSet::from([agent::oper::IP_FABRIC.to_string()]);
    let t = translate(&cfg, &cluster(), &with);
    let policy = vec![
        "default-domain".to_string(),
        "k8s-default".into(),
        "k8s-ip-fabric-pod".into(),
    ];
    assert_eq!(t.attachments, vec![(fabric.clone(), policy.clone())]);
    let np = t
        .objects
        .iter()
        .find_map(|o| match &o.kind {
            Some(object::Kind::NetworkPolicy(p)) if p.fq_name == policy => Some(p),
            _ => None,
        })
        .unwrap();
    let peers: Vec<&str> = np
        .network_policy_entries
        .iter()
        .map(|r| r.dst_addresses[0].virtual_network.as_str())
        .collect();
    assert_eq!(
        peers,
        vec![
            "default-domain:k8s-dev:k8s-dev-pod-network",
            "default-domain:k8s-default:k8s-default-pod-network"
        ]
    );
    // Attaching keeps the operator's references and replaces stale ones of ours.
    let r = |fq: &[&str]| agent::proto::Ref {
        r#type: "network-policy".into(),
        uuid: "u".into(),
        fq_name: fq.iter().map(|s| s.to_string()).collect(),
    };
    let actual = vec![agent::proto::Object {
        kind: Some(object::Kind::VirtualNetwork(agent::proto::VirtualNetwork {
            fq_name: fabric.clone(),
            network_policy_refs: vec![
                r(&["default-domain", "admin", "operator-policy"]),
                r(&["default-domain", "k8s-default", "k8s-old-policy"]),
            ],
            ..Default::default()
        })),
    }];
    let changes = agent::k8s::sync::attach(&cfg, &t.attachments, &actual);
    let Some(change::Change::Update(o)) = &changes[0].change else {
        panic!("an update");
    };
    let Some(object::Kind::VirtualNetwork(vn)) = &o.kind else {
        panic!("a network");
    };
    let refs: Vec<String> = vn
        .network_policy_refs
        .iter()
        .map(|r| fq_string(&r.fq_name))
        .collect();
    assert_eq!(
        refs,
        vec![
            "default-domain:admin:operator-policy",
            "default-domain:k8s-default:k8s-ip-fabric-pod"
        ]
    );
    // In step: nothing to do.
    let done = vec![agent::proto::Object {
        kind: Some(object::Kind::VirtualNetwork(vn.clone())),
    }];
    assert!(agent::k8s::sync::attach(&cfg, &t.attachments, &done).is_empty());
}

#[test]
fn services_become_load_balancers_with_a_member_per_ready_selected_pod() {
    let cfg = KubeConfig::default();
    let mut c = Cluster::default();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\n\
             spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: web}}\n\
             spec: {containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: sick, labels: {app: web}}\n\
             spec: {containers: [{name: c}]}\nstatus: {conditions: [{type: Ready, status: 'False'}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: new, labels: {app: web}}\n\
             spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
             spec: {selector: {app: web}, clusterIP: 10.96.0.50, ports: [{port: 80, targetPort: http}, {port: 99, protocol: SCTP}]}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: headless}\n\
             spec: {selector: {app: web}, clusterIP: None, ports: [{port: 80}]}\n",
        )
        .unwrap(),
    );
    // The agent knows a's and b's addresses (and sick's), not new's yet.
    let addresses = std::collections::BTreeMap::from([
        (vec!["k8s__default__a".to_string()], "10.32.0.3".to_string()),
        (vec!["k8s__default__b".to_string()], "10.32.0.4".to_string()),
        (
            vec!["k8s__default__sick".to_string()],
            "10.32.0.5".to_string(),
        ),
    ]);
    let t = agent::k8s::translate::translate_with(
        &cfg,
        &c,
        &agent::k8s::translate::Underlay {
            networks: &BTreeSet::new(),
            node_interfaces: &Default::default(),
            addresses: &addresses,
            ..Default::default()
        },
    );
    let lbs: Vec<&agent::proto::Loadbalancer> = t
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::Loadbalancer(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lbs.len(), 1, "the headless service has none");
    assert_eq!(lbs[0].vip_address, "10.96.0.50");
    assert_eq!(
        lbs[0]
            .virtual_network_ref
            .as_ref()
            .unwrap()
            .fq_name
            .last()
            .unwrap(),
        "k8s-default-service-network"
    );
    assert_eq!(
        names(&t.objects, Kind::LoadbalancerListener).len(),
        1,
        "SCTP is left out"
    );
    let members: Vec<(String, u32)> = t
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::LoadbalancerMember(m)) => Some((m.address.clone(), m.protocol_port)),
            _ => None,
        })
        .collect();
    // The named target port per pod; the unready pod and the one without an address out.
    assert_eq!(
        members,
        vec![
            ("10.32.0.3".to_string(), 8080),
            ("10.32.0.4".to_string(), 9090)
        ]
    );
    assert!(
        t.events.iter().any(|e| e.reason == "UnsupportedProtocol"),
        "{:?}",
        t.events
    );
}

proptest::proptest! {
    /// Whatever arrives as a manifest or a configuration file: an error, never a panic.
    #[test]
    fn arbitrary_manifests_and_config_files_never_panic(text in "(?s).{0,400}") {
        let _ = manifest::parse(&text);
        let _ = KubeConfig::parse(&format!("[KUBERNETES]\n{text}"));
    }

    /// Documents with the right shape but arbitrary field values either parse or are
    /// refused; a parsed pod always gets translated or reported.
    #[test]
    fn pods_with_arbitrary_labels_and_ports_translate(
        key in "[a-z]{1,8}",
        value in "[a-z0-9]{0,8}",
        port in proptest::prelude::any::<i32>(),
    ) {
        let doc = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{{key}: '{value}'}}}}\n\
             spec: {{containers: [{{name: c, ports: [{{containerPort: {port}}}]}}]}}\n"
        );
        let mut c = Cluster::default();
        c.apply(manifest::parse(&doc).unwrap());
        let t = translate(&KubeConfig::default(), &c, &BTreeSet::new());
        proptest::prop_assert_eq!(t.pods.len(), 1);
        let valid = u16::try_from(port).is_ok();
        proptest::prop_assert_eq!(t.pods[0].ports.len(), usize::from(valid));
    }
}

#[test]
fn ip_fabric_snat_follows_the_global_option_and_namespace_annotations() {
    let snat_of = |t: &agent::k8s::translate::Translation| -> Vec<(String, bool)> {
        t.objects
            .iter()
            .filter_map(|o| match &o.kind {
                Some(object::Kind::VirtualNetwork(v)) => {
                    Some((v.fq_name[2].clone(), v.fabric_snat))
                }
                _ => None,
            })
            .collect()
    };
    let nets = |on: [bool; 2]| {
        vec![
            ("k8s-default-pod-network".to_string(), on[0]),
            ("k8s-default-service-network".to_string(), false),
            ("k8s-dev-pod-network".to_string(), on[1]),
            ("k8s-dev-service-network".to_string(), false),
        ]
    };
    // Off by default; the global option turns it on for every pod network (never for
    // service networks).
    let mut cfg = KubeConfig::default();
    let t = translate(&cfg, &cluster(), &BTreeSet::new());
    assert_eq!(snat_of(&t), nets([false, false]));
    cfg.ip_fabric_snat = true;
    let t = translate(&cfg, &cluster(), &BTreeSet::new());
    assert_eq!(snat_of(&t), nets([true, true]));
    // A namespace's annotation wins either way; the default namespace speaks for the
    // cluster's pod network.
    let mut c = cluster();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations: \
             {opencontrail.org/ip_fabric_snat: \"false\"}\n",
        )
        .unwrap(),
    );
    let t = translate(&cfg, &c, &BTreeSet::new());
    assert_eq!(snat_of(&t), nets([false, true]));
    cfg.ip_fabric_snat = false;
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n  annotations: \
             {opencontrail.org/isolation: \"true\", opencontrail.org/ip_fabric_snat: \"true\"}\n",
        )
        .unwrap(),
    );
    let t = translate(&cfg, &c, &BTreeSet::new());
    assert_eq!(snat_of(&t), nets([false, true]));
}

#[test]
fn the_snat_port_ranges_are_reserved_in_the_global_configuration_once() {
    use agent::k8s::sync::reserve_ports;
    use agent::proto::{GlobalVrouterConfig, PortTranslationPool};
    let pools = |c: &agent::proto::Change| match &c.change {
        Some(change::Change::Create(o) | change::Change::Update(o)) => match &o.kind {
            Some(object::Kind::GlobalVrouterConfig(g)) => g.clone(),
            _ => panic!("{o:?}"),
        },
        other => panic!("{other:?}"),
    };
    // None yet: created with both ranges.
    let c = reserve_ports(None).expect("a change");
    assert!(matches!(c.change, Some(change::Change::Create(_))));
    let created = pools(&c);
    let want = |p: &str, s, e| PortTranslationPool {
        protocol: p.into(),
        start_port: s,
        end_port: e,
    };
    assert_eq!(
        created.port_translation_pools,
        vec![want("tcp", 56000, 57023), want("udp", 57024, 58047)]
    );
    // There: nothing to do.
    assert!(reserve_ports(Some(&created)).is_none());
    // The operator's settings stay; only what is missing is added.
    let theirs = GlobalVrouterConfig {
        uuid: "g".into(),
        fq_name: created.fq_name.clone(),
        encapsulation_priorities: vec!["VXLAN".into()],
        port_translation_pools: vec![want("tcp", 56000, 57023), want("tcp", 1000, 1999)],
    };
    let c = reserve_ports(Some(&theirs)).expect("a change");
    assert!(matches!(c.change, Some(change::Change::Update(_))));
    let g = pools(&c);
    assert_eq!(g.uuid, "g");
    assert_eq!(g.encapsulation_priorities, vec!["VXLAN".to_string()]);
    assert_eq!(
        g.port_translation_pools,
        vec![
            want("tcp", 56000, 57023),
            want("tcp", 1000, 1999),
            want("udp", 57024, 58047)
        ]
    );
}

#[test]
fn ip_fabric_forwarding_puts_pod_networks_in_the_underlay_and_stays_on() {
    let vn = |t: &agent::k8s::translate::Translation, name: &str| {
        t.objects
            .iter()
            .find_map(|o| match &o.kind {
                Some(object::Kind::VirtualNetwork(v)) if v.fq_name[2] == name => Some(v.clone()),
                _ => None,
            })
            .unwrap()
    };
    let ipam = |v: &agent::proto::VirtualNetwork| {
        fq_string(&v.network_ipam_refs[0].ipam.as_ref().unwrap().fq_name)
    };
    // The global option: pod networks forwarded on the ip-fabric ipam, SNAT ignored;
    // service networks stay in the overlay.
    let cfg = KubeConfig {
        ip_fabric_forwarding: true,
        ip_fabric_snat: true,
        ..KubeConfig::default()
    };
    let t = translate(&cfg, &cluster(), &BTreeSet::new());
    for name in ["k8s-default-pod-network", "k8s-dev-pod-network"] {
        let v = vn(&t, name);
        assert!(v.ip_fabric_forwarding && !v.fabric_snat, "{name}");
        assert_eq!(ipam(&v), "default-domain:k8s-default:k8s-ip-fabric-ipam");
    }
    let svc = vn(&t, "k8s-default-service-network");
    assert!(!svc.ip_fabric_forwarding);
    // A namespace annotation turns it off for its network...
    let mut c = cluster();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n  annotations: \
             {opencontrail.org/isolation: \"true\", opencontrail.org/ip_fabric_forwarding: \"false\"}\n",
        )
        .unwrap(),
    );
    let off = translate(&cfg, &c, &BTreeSet::new());
    let dev = vn(&off, "k8s-dev-pod-network");
    assert!(!dev.ip_fabric_forwarding && dev.fabric_snat);
    assert_eq!(ipam(&dev), "default-domain:k8s-default:k8s-pod-ipam");
    // ...but not once the network is forwarded: the plan keeps it as it is.
    let actual = t.objects.clone();
    let changes = plan(&cfg, &off.objects, &actual);
    assert!(
        !changes.iter().any(|ch| matches!(&ch.change,
            Some(change::Change::Update(o)) if matches!(&o.kind,
                Some(object::Kind::VirtualNetwork(v)) if v.fq_name[2] == "k8s-dev-pod-network"))),
        "{changes:?}"
    );
    // The translation knows it too (from the agent's networks): the network stays
    // forwarded, and the annotation that asks otherwise is an event.
    let forwarded = BTreeSet::from(["default-domain:k8s-dev:k8s-dev-pod-network".to_string()]);
    let kept = agent::k8s::translate::translate_with(
        &cfg,
        &c,
        &agent::k8s::translate::Underlay {
            forwarded: &forwarded,
            ..Default::default()
        },
    );
    assert!(vn(&kept, "k8s-dev-pod-network").ip_fabric_forwarding);
    assert!(
        kept.events
            .iter()
            .any(|e| e.object == "Namespace dev" && e.reason == "IpFabricForwardingImmutable"),
        "{:?}",
        kept.events
    );
    assert!(
        !off.events
            .iter()
            .any(|e| e.reason == "IpFabricForwardingImmutable")
    );
}

#[test]
fn node_ports_are_assigned_like_the_api_server_does_and_kept() {
    let svc = |name: &str, ports: &str| {
        manifest::parse(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n  \
             ports: {ports}\n"
        ))
        .unwrap()
    };
    let node_ports = |c: &Cluster, name: &str| -> Vec<Option<i32>> {
        c.services[&("default".to_string(), name.to_string())]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| p.node_port)
            .collect()
    };
    let mut c = Cluster::default();
    // Explicit ones are kept; missing ones get the lowest free.
    c.apply(svc("a", "[{port: 80, nodePort: 30000}, {port: 81}]"));
    assert_eq!(node_ports(&c, "a"), vec![Some(30000), Some(30001)]);
    c.apply(svc("b", "[{port: 80}]"));
    assert_eq!(node_ports(&c, "b"), vec![Some(30002)]);
    // Applied again without them: each port keeps its own.
    c.apply(svc("a", "[{port: 80}, {port: 81}]"));
    assert_eq!(node_ports(&c, "a"), vec![Some(30000), Some(30001)]);
    // ClusterIP Services get none.
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap(),
    );
    assert_eq!(node_ports(&c, "c"), vec![None]);
}

#[test]
fn a_node_port_outside_the_range_is_an_event_and_never_a_listener() {
    let mut c = cluster();
    c.apply(
        manifest::parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ssh}\nspec:\n  type: NodePort\n  \
             selector: {app: x}\n  ports: [{port: 80, nodePort: 22}, {port: 81, nodePort: 2379}, {port: 82, nodePort: 30082}]\n",
        )
        .unwrap(),
    );
    let t = translate(&KubeConfig::default(), &c, &BTreeSet::new());
    let out: Vec<&str> = t
        .events
        .iter()
        .filter(|e| e.reason == "NodePortOutOfRange")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(out.len(), 2, "{:?}", t.events);
    assert!(
        out[0].contains("nodePort 22 is outside 30000-32767"),
        "{out:?}"
    );
    let node_ports: BTreeSet<u32> = t
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::LoadbalancerListener(l)) => Some(l.node_port),
            _ => None,
        })
        .collect();
    assert!(node_ports.contains(&30082), "{node_ports:?}");
    assert!(
        !node_ports.contains(&22) && !node_ports.contains(&2379),
        "{node_ports:?}"
    );

    // The store refuses such a listener from any other client.
    let mut db = agent::store::Db::new();
    db.apply(vec![agent::store::Change::Create(agent::proto::Object {
        kind: Some(object::Kind::Project(agent::proto::Project {
            fq_name: vec!["d".into(), "p".into()],
            ..Default::default()
        })),
    })])
    .unwrap();
    let e = db
        .apply(vec![agent::store::Change::Create(agent::proto::Object {
            kind: Some(object::Kind::LoadbalancerListener(
                agent::proto::LoadbalancerListener {
                    fq_name: vec!["d".into(), "p".into(), "l".into()],
                    protocol: "TCP".into(),
                    protocol_port: 80,
                    node_port: 10250,
                    ..Default::default()
                },
            )),
        })])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("node_port"), "{e}");
}

#[test]
fn an_external_ip_belongs_to_the_service_created_first_and_the_next_gets_an_event() {
    let cfg = KubeConfig::parse(
        "[KUBERNETES]\npublic_fip_pool = {'domain': 'default-domain', 'project': 'admin', 'name': 'pool', 'network': 'public'}\n",
    )
    .unwrap();
    let svc = |name: &str, created: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, creationTimestamp: '{created}'}}\n\
             spec: {{selector: {{app: web}}, externalIPs: [203.0.113.60], ports: [{{port: 80}}]}}\n---\n"
        )
    };
    let mut c = Cluster::default();
    // The younger one sorts first by name.
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n---\n{}{}",
        svc("a-young", "2026-03-02T10:00:00Z"),
        svc("z-old", "2026-03-01T10:00:00Z")
    );
    c.apply(manifest::parse(&text).unwrap());
    let networks = BTreeSet::from(["default-domain:admin:public:pool".to_string()]);
    let subnets = vec!["203.0.113.0/24".to_string()];
    let t = agent::k8s::translate::translate_with(
        &cfg,
        &c,
        &agent::k8s::translate::Underlay {
            networks: &networks,
            public_subnets: &subnets,
            ..Default::default()
        },
    );
    let fips: Vec<(String, String)> = t
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::FloatingIp(f)) => Some((
                f.fq_name.last().unwrap().clone(),
                f.floating_ip_address.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(fips.len(), 1, "{fips:?} {:?}", t.events);
    assert!(fips[0].0.contains("z-old"), "{fips:?}");
    assert_eq!(fips[0].1, "203.0.113.60");
    let taken: Vec<&agent::k8s::translate::Event> = t
        .events
        .iter()
        .filter(|e| e.reason == "ExternalIPTaken")
        .collect();
    assert_eq!(taken.len(), 1, "{:?}", t.events);
    assert_eq!(taken[0].object, "Service default/a-young");
    assert!(
        taken[0].message.contains("default/z-old"),
        "{}",
        taken[0].message
    );
}

#[test]
fn a_policy_too_large_is_an_event_its_pods_stay_isolated_and_the_rest_applies() {
    let cfg = KubeConfig::default();
    let mut c = cluster();
    let ports: String = (1..=3000)
        .map(|p| format!("    - {{port: {p}}}\n"))
        .collect();
    let blocks: String = (0..4)
        .map(|i| format!("    - ipBlock: {{cidr: 192.0.{i}.0/24}}\n"))
        .collect();
    let except: Vec<String> = (0..5000u32)
        .map(|i| format!("\"{}/32\"", std::net::Ipv4Addr::from(0x0a00_0000 + i * 7)))
        .collect();
    let values: String = (0..8)
        .map(|k| {
            format!(
                "        - {{key: k{k}, operator: In, values: [{}]}}\n",
                (0..10)
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let m = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: ports, namespace: dev}}\n\
         spec:\n  podSelector: {{matchLabels: {{tier: front}}}}\n  ingress:\n  - from:\n{blocks}    ports:\n{ports}\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: except, namespace: dev}}\n\
         spec:\n  podSelector: {{}}\n  egress:\n  - to:\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [{}]}}\n\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: product, namespace: dev}}\n\
         spec:\n  podSelector: {{}}\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n{values}\
         ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web-in, namespace: dev}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - podSelector: {{}}\n    ports:\n    - {{port: 80}}\n",
        except.join(", ")
    );
    c.apply(manifest::parse(&m).unwrap());
    let t = translate(&cfg, &c, &BTreeSet::new());
    let event = |object: &str, reason: &str| {
        t.events
            .iter()
            .find(|e| e.object == object && e.reason == reason)
            .unwrap_or_else(|| panic!("no {reason} on {object}: {:?}", t.events))
    };
    assert!(
        event("NetworkPolicy dev/ports", "PolicyTooLarge")
            .message
            .contains("more than 10000")
    );
    assert!(
        event("NetworkPolicy dev/except", "InvalidIpBlock")
            .message
            .contains("more than 10000 prefixes")
    );
    assert!(
        !t.events
            .iter()
            .any(|e| e.object == "NetworkPolicy dev/web-in"
                || e.object == "NetworkPolicy dev/product")
    );
    let policy = |leaf: &str| {
        let fq = format!("default-domain:k8s-dev:k8s-dev-{leaf}");
        t.objects
            .iter()
            .find_map(|o| match &o.kind {
                Some(object::Kind::FirewallPolicy(p)) if fq_string(&p.fq_name) == fq => Some(p),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no firewall policy {fq}"))
    };
    // Fail closed: the large policy allows nothing, and the pod it selects is still
    // isolated for ingress.
    assert!(policy("ports-ingress").firewall_rule_refs.is_empty());
    let front = vec![
        "default-domain:k8s-dev:label=tier=front".to_string(),
        "default-domain:k8s-dev:namespace=dev".to_string(),
    ];
    assert!(t.objects.iter().any(|o| matches!(&o.kind,
        Some(object::Kind::FirewallRule(r)) if r.action == "deny"
            && r.endpoint_1.as_ref().unwrap().any
            && r.endpoint_2.as_ref().unwrap().tags == front)));
    // The others apply: web-in's rule, and `product` (10^8 label combinations) named by
    // its pods, of which there are none with those labels.
    assert_eq!(policy("web-in-ingress").firewall_rule_refs.len(), 1);
    assert!(policy("product-ingress").firewall_rule_refs.is_empty());
    let total = t
        .objects
        .iter()
        .filter(|o| kinds::kind_of(o) == Some(Kind::FirewallRule))
        .count();
    assert!(total < 100, "{total} firewall rules");
}
