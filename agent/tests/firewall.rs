//! The firewall-policy framework: what the store accepts, and how application policy
//! sets compile into vrouter rule sets (sequence order, directions, services, tags named
//! by FQ name, binding by tags).

mod common;

use std::collections::HashMap;

use agent::firewall;
use agent::proto::{self, Ref, object::Kind as K};
use agent::store::{Change, Db};
use common::{obj, r};
use tonic::Code;
use vrouter_api::config::{ActionCfg, EndpointCfg};

/// A compiled rule: action, protocol, source, destination, destination ports.
type Compiled = (
    ActionCfg,
    Option<u8>,
    EndpointCfg,
    EndpointCfg,
    Option<(u16, u16)>,
);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn tag(fq: &[&str]) -> Change {
    let last = fq.last().unwrap();
    let (ty, value) = last.split_once('=').unwrap();
    Change::Create(obj(K::Tag(proto::Tag {
        fq_name: s(fq),
        tag_type_name: ty.into(),
        tag_value: value.into(),
        ..Default::default()
    })))
}

fn end_tags(t: &[&str]) -> Option<proto::FirewallEndpoint> {
    Some(proto::FirewallEndpoint {
        tags: s(t),
        ..Default::default()
    })
}

fn rule(name: &str, e1: Option<proto::FirewallEndpoint>, dir: &str) -> proto::FirewallRule {
    proto::FirewallRule {
        fq_name: s(&["default-policy-management", name]),
        action: "pass".into(),
        endpoint_1: e1,
        endpoint_2: Some(proto::FirewallEndpoint {
            any: true,
            ..Default::default()
        }),
        direction: dir.into(),
        ..Default::default()
    }
}

fn db() -> Db {
    let mut db = Db::new();
    db.apply(vec![
        Change::Create(obj(K::Project(proto::Project {
            fq_name: s(&["default-domain", "p"]),
            ..Default::default()
        }))),
        Change::Create(obj(K::Project(proto::Project {
            fq_name: s(&["default-domain", "q"]),
            ..Default::default()
        }))),
        tag(&["default-domain", "p", "label=app=web"]),
        tag(&["default-domain", "q", "label=app=web"]),
        tag(&["tier=db"]),
    ])
    .unwrap();
    db
}

#[test]
fn the_store_checks_endpoints_and_tag_names() {
    let mut db = db();
    // The same tag name in two projects: a bare name is ambiguous, the FQ name is not.
    let e = db
        .apply(vec![Change::Create(obj(K::FirewallRule(rule(
            "r",
            end_tags(&["label=app=web"]),
            ">",
        ))))])
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("several projects"), "{}", e.message());
    db.apply(vec![Change::Create(obj(K::FirewallRule(rule(
        "r",
        end_tags(&["default-domain:q:label=app=web", "tier=db"]),
        ">",
    ))))])
    .unwrap();
    // One kind of endpoint at a time.
    let both = Some(proto::FirewallEndpoint {
        tags: s(&["tier=db"]),
        subnet: "10.0.0.0/8".into(),
        ..Default::default()
    });
    let e = db
        .apply(vec![Change::Create(obj(K::FirewallRule(rule(
            "r2", both, ">",
        ))))])
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let mut m = rule("r3", end_tags(&["tier=db"]), ">");
    m.match_tags = s(&["app"]);
    let e = db
        .apply(vec![Change::Create(obj(K::FirewallRule(m)))])
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[test]
fn an_aps_compiles_its_policies_in_sequence_order_with_directions_and_services() {
    let mut db = db();
    let mut web_in = rule("web-in", end_tags(&["default-domain:p:label=app=web"]), "<");
    web_in.services = vec![
        proto::FirewallService {
            protocol: "tcp".into(),
            src_ports: None,
            dst_ports: Some(proto::PortRange {
                start_port: 80,
                end_port: 81,
            }),
        },
        proto::FirewallService {
            protocol: "udp".into(),
            src_ports: None,
            dst_ports: None,
        },
    ];
    let mut deny = rule("deny-db", end_tags(&["tier=db"]), "<>");
    deny.action = "deny".into();
    let fp = |name: &str, rules: &[&str]| {
        obj(K::FirewallPolicy(proto::FirewallPolicy {
            fq_name: s(&["default-policy-management", name]),
            firewall_rule_refs: rules
                .iter()
                .enumerate()
                .map(|(i, n)| proto::SequencedRef {
                    r#ref: Some(r("firewall-rule", s(&["default-policy-management", n]))),
                    sequence: i.to_string(),
                })
                .collect(),
            ..Default::default()
        }))
    };
    let aps = |name: &str, all: bool, tags: Vec<Ref>| {
        obj(K::ApplicationPolicySet(proto::ApplicationPolicySet {
            fq_name: s(&["default-policy-management", name]),
            // "10" sorts after "2": sequences are numbers.
            firewall_policy_refs: vec![
                proto::SequencedRef {
                    r#ref: Some(r(
                        "firewall-policy",
                        s(&["default-policy-management", "web"]),
                    )),
                    sequence: "10".into(),
                },
                proto::SequencedRef {
                    r#ref: Some(r(
                        "firewall-policy",
                        s(&["default-policy-management", "db"]),
                    )),
                    sequence: "2".into(),
                },
            ],
            tag_refs: tags,
            all_applications: all,
            ..Default::default()
        }))
    };
    db.apply(vec![
        Change::Create(obj(K::FirewallRule(web_in))),
        Change::Create(obj(K::FirewallRule(deny))),
        Change::Create(fp("web", &["web-in"])),
        Change::Create(fp("db", &["deny-db"])),
        Change::Create(aps("everyone", true, vec![])),
        Change::Create(aps("dbs", false, vec![r("tag", s(&["tier=db"]))])),
    ])
    .unwrap();
    let mut tag_ids = HashMap::new();
    let mut ids = HashMap::new();
    for o in db.list(agent::kinds::Kind::Tag) {
        if let Some(K::Tag(t)) = &o.kind {
            tag_ids.insert(t.uuid.clone(), t.tag_id);
            ids.insert(agent::kinds::fq_string(&t.fq_name), t.tag_id);
        }
    }
    let web = ids["default-domain:p:label=app=web"];
    let db_tag = ids["tier=db"];
    let sets = firewall::compile(&db, &HashMap::new(), &tag_ids, "t/");
    assert_eq!(sets.len(), 2);
    let everyone = sets.iter().find(|a| a.all).unwrap();
    let dbs = sets.iter().find(|a| !a.all).unwrap();
    assert!(everyone.applies(&[]));
    assert!(!dbs.applies(&[web]) && dbs.applies(&[db_tag]));
    let set = &everyone.set;
    assert_eq!(set.default, ActionCfg::Deny);
    let tags = |t: u32| EndpointCfg {
        tags: Some(vec![t]),
        ..Default::default()
    };
    // deny-db (sequence 2) both ways first, then web-in (sequence 10) from any to web
    // ("<": endpoint 2 to endpoint 1) once per service.
    let got: Vec<Compiled> = set
        .rules
        .iter()
        .map(|r| (r.action, r.proto, r.src.clone(), r.dst.clone(), r.dport))
        .collect();
    let any = EndpointCfg::default();
    assert_eq!(
        got,
        vec![
            (ActionCfg::Deny, None, tags(db_tag), any.clone(), None),
            (ActionCfg::Deny, None, any.clone(), tags(db_tag), None),
            (
                ActionCfg::Pass,
                Some(6),
                any.clone(),
                tags(web),
                Some((80, 81))
            ),
            (ActionCfg::Pass, Some(17), any.clone(), tags(web), None),
        ]
    );
}
