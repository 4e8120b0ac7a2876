//! Flow setup: every packet a new flow, each checked against a 100-rule policy on vm1's
//! egress before its pair is installed. The rules that do not match come first, so every
//! setup walks all of them.

use vrouter::config::{ActionCfg, Config, Encap, EndpointCfg, PolicyCfg, RuleCfg};

use crate::scenario::{Kind, Scenario};
use crate::scenarios::vxlan_encap::to_node_b;

/// Rules in the policy.
pub const RULES: usize = 100;
/// The policy's name.
pub const POLICY: &str = "perf-100-rules";

/// New flows vm1 -> node B through a 100-rule policy.
#[derive(Debug)]
pub struct FlowSetup;

/// The policy: 99 rules that do not match the traffic, then the one that passes it.
pub fn policy() -> PolicyCfg {
    let mut rules: Vec<RuleCfg> = (0..RULES as u32 - 1)
        .map(|i| RuleCfg {
            proto: Some(if i % 2 == 0 { 17 } else { 6 }),
            src: EndpointCfg::default(),
            dst: EndpointCfg {
                prefix: Some(format!("172.{}.{}.0/24", 16 + i / 256, i % 256)),
                ..EndpointCfg::default()
            },
            sport: None,
            dport: Some((1000 + i as u16, 1000 + i as u16)),
            action: ActionCfg::Deny,
        })
        .collect();
    rules.push(RuleCfg {
        proto: Some(17),
        src: EndpointCfg::default(),
        dst: EndpointCfg {
            prefix: Some("10.1.2.0/24".into()),
            ..EndpointCfg::default()
        },
        sport: None,
        dport: Some((9001, 9001)),
        action: ActionCfg::Pass,
    });
    PolicyCfg {
        name: POLICY.into(),
        rules,
        default: ActionCfg::Deny,
        network: false,
    }
}

impl Scenario for FlowSetup {
    fn name(&self) -> &'static str {
        "flow-setup"
    }
    fn about(&self) -> &'static str {
        "every packet a new flow: 100-rule policy, pair insert, MPLSoUDP encap"
    }
    fn output(&self) -> &'static str {
        "fabric"
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        to_node_b(flow, len)
    }
    fn tables(&self, cfg: &mut Config) {
        cfg.global.encap_priority = vec![Encap::MplsUdp];
        cfg.policies.push(policy());
        if let Some(v) = cfg.vifs.iter_mut().find(|v| v.name == "vm1") {
            v.egress.push(POLICY.into());
        }
    }
    fn kind(&self) -> Kind {
        Kind::Setup
    }
}
