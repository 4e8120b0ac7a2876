//! Compiled policy, evaluated on the lcore at flow setup.
//!
//! The agent compiles VNC objects into [`RuleSet`]s: security groups (allow rules, default
//! deny), network policies between VNs (ordered, first match, default deny; the agent adds
//! the implicit same-VN pass), and firewall policies with tags (ordered, first match,
//! configurable default). A [`Policy`] is the list of rule sets of one interface per
//! direction; a flow is allowed only if every set passes it. The result names the set and
//! rule that decided, for flow dumps.

use std::net::IpAddr;

/// An address as a 128-bit number (IPv4 as an IPv4-mapped IPv6 address), so one rule type
/// serves both families.
pub fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// What a flow endpoint is, beyond its address: the VN and the tags of its interface or
/// route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointAttr {
    /// Virtual network id (0 = unknown / outside).
    pub vn: u32,
    /// Tag ids, sorted.
    pub tags: Vec<u32>,
}

impl EndpointAttr {
    /// Whether every tag of `want` (sorted) is present.
    pub fn has_all(&self, want: &[u32]) -> bool {
        want.iter().all(|t| self.tags.binary_search(t).is_ok())
    }
}

/// How a rule matches one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointMatch {
    /// Anything.
    Any,
    /// An address prefix (on the 128-bit form; IPv4 prefixes are offset by 96).
    Prefix {
        /// Network bits.
        net: u128,
        /// Prefix length on 128 bits.
        len: u8,
    },
    /// Endpoints in this VN.
    Vn(u32),
    /// Endpoints carrying all of these tags (sorted).
    Tags(Vec<u32>),
}

impl EndpointMatch {
    /// An IPv4 or IPv6 prefix.
    pub fn prefix(addr: IpAddr, len: u8) -> EndpointMatch {
        let len = match addr {
            IpAddr::V4(_) => 96 + len.min(32),
            IpAddr::V6(_) => len.min(128),
        };
        EndpointMatch::Prefix {
            net: addr_bits(addr) & prefix_mask(len),
            len,
        }
    }

    #[inline]
    fn matches(&self, addr: u128, attr: &EndpointAttr) -> bool {
        match self {
            EndpointMatch::Any => true,
            EndpointMatch::Prefix { net, len } => addr & prefix_mask(*len) == *net,
            EndpointMatch::Vn(vn) => attr.vn == *vn,
            EndpointMatch::Tags(t) => attr.has_all(t),
        }
    }
}

/// The mask of a prefix of `len` bits on 128 (IPv4 prefixes count from bit 96).
#[inline]
pub(crate) fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Allow the flow.
    Pass,
    /// Drop the flow.
    Deny,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// IP protocol, or any.
    pub proto: Option<u8>,
    /// Source endpoint.
    pub src: EndpointMatch,
    /// Destination endpoint.
    pub dst: EndpointMatch,
    /// Source ports, inclusive.
    pub sport: (u16, u16),
    /// Destination ports, inclusive.
    pub dport: (u16, u16),
    /// Action.
    pub action: Action,
}

impl Rule {
    /// A rule matching everything with `action`.
    pub fn any(action: Action) -> Rule {
        Rule {
            proto: None,
            src: EndpointMatch::Any,
            dst: EndpointMatch::Any,
            sport: (0, u16::MAX),
            dport: (0, u16::MAX),
            action,
        }
    }
}

/// What policy sees of a new flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowMatch<'a> {
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port (ICMP: echo identifier).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Source endpoint attributes.
    pub src_attr: &'a EndpointAttr,
    /// Destination endpoint attributes.
    pub dst_attr: &'a EndpointAttr,
}

/// An ordered list of rules: the first match decides, else the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Name for dumps (e.g. the security group's FQ name).
    pub name: String,
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Action when nothing matches.
    pub default: Action,
    /// A virtual network's policy (see [`evaluate_service`]).
    pub network: bool,
}

impl RuleSet {
    /// Evaluates; returns the action and the index of the rule that matched (`None` for
    /// the default).
    #[inline]
    pub fn eval(&self, f: &FlowMatch<'_>) -> (Action, Option<usize>) {
        for (i, r) in self.rules.iter().enumerate() {
            if r.proto.is_some_and(|p| p != f.proto) {
                continue;
            }
            if f.dport < r.dport.0
                || f.dport > r.dport.1
                || f.sport < r.sport.0
                || f.sport > r.sport.1
            {
                continue;
            }
            if r.src.matches(f.src, f.src_attr) && r.dst.matches(f.dst, f.dst_attr) {
                return (r.action, Some(i));
            }
        }
        (self.default, None)
    }
}

/// The policy of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Sets applied to flows leaving the VM (from the interface).
    pub egress: Vec<RuleSet>,
    /// Sets applied to flows arriving at the VM (to the interface).
    pub ingress: Vec<RuleSet>,
}

/// Which set and rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Pass or deny.
    pub action: Action,
    /// Index of the deciding set (the denying one, or the last one on pass).
    pub set: usize,
    /// Rule index within it, `None` for the set's default.
    pub rule: Option<usize>,
}

/// Evaluates sets in order; the first deny decides, else pass.
#[inline]
pub fn evaluate(sets: &[RuleSet], f: &FlowMatch<'_>) -> Decision {
    evaluate_service(sets, f, f)
}

/// [`evaluate`] for a flow to a service address: network policies see the flow as the
/// client sent it (`sent`: to the service address, in the service's network), the
/// other sets as it reaches the backend (`f`), as kube-proxy's DNAT would show it.
#[inline]
pub fn evaluate_service(sets: &[RuleSet], f: &FlowMatch<'_>, sent: &FlowMatch<'_>) -> Decision {
    let mut last = Decision {
        action: Action::Pass,
        set: 0,
        rule: None,
    };
    for (si, s) in sets.iter().enumerate() {
        let (action, rule) = s.eval(if s.network { sent } else { f });
        last = Decision {
            action,
            set: si,
            rule,
        };
        if action == Action::Deny {
            return last;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_rule(dport: u16, action: Action) -> Rule {
        Rule {
            proto: Some(6),
            dport: (dport, dport),
            ..Rule::any(action)
        }
    }

    fn flow<'a>(proto: u8, dport: u16, a: &'a EndpointAttr, b: &'a EndpointAttr) -> FlowMatch<'a> {
        FlowMatch {
            proto,
            src: addr_bits("10.1.1.3".parse().unwrap()),
            dst: addr_bits("10.2.2.4".parse().unwrap()),
            sport: 40000,
            dport,
            src_attr: a,
            dst_attr: b,
        }
    }

    #[test]
    fn security_group_allows_tcp_80_only() {
        let sg = RuleSet {
            name: "sg-web".into(),
            rules: vec![tcp_rule(80, Action::Pass)],
            default: Action::Deny,
            network: false,
        };
        let a = EndpointAttr::default();
        assert_eq!(sg.eval(&flow(6, 80, &a, &a)), (Action::Pass, Some(0)));
        assert_eq!(sg.eval(&flow(6, 81, &a, &a)), (Action::Deny, None));
        assert_eq!(sg.eval(&flow(17, 80, &a, &a)), (Action::Deny, None));
    }

    #[test]
    fn first_match_and_all_sets_must_pass() {
        let net = RuleSet {
            name: "np".into(),
            rules: vec![
                Rule {
                    src: EndpointMatch::Vn(1),
                    dst: EndpointMatch::Vn(2),
                    ..tcp_rule(22, Action::Deny)
                },
                Rule {
                    src: EndpointMatch::Vn(1),
                    dst: EndpointMatch::Vn(2),
                    ..Rule::any(Action::Pass)
                },
            ],
            default: Action::Deny,
            network: false,
        };
        let fw = RuleSet {
            name: "fw".into(),
            rules: vec![Rule {
                dst: EndpointMatch::Tags(vec![7]),
                ..Rule::any(Action::Deny)
            }],
            default: Action::Pass,
            network: false,
        };
        let a = EndpointAttr {
            vn: 1,
            tags: vec![],
        };
        let b = EndpointAttr {
            vn: 2,
            tags: vec![3],
        };
        let b_tagged = EndpointAttr {
            vn: 2,
            tags: vec![3, 7],
        };
        let sets = [net, fw];
        let d = evaluate(&sets, &flow(6, 22, &a, &b));
        assert_eq!((d.action, d.set, d.rule), (Action::Deny, 0, Some(0)));
        assert_eq!(evaluate(&sets, &flow(6, 80, &a, &b)).action, Action::Pass);
        let d = evaluate(&sets, &flow(6, 80, &a, &b_tagged));
        assert_eq!((d.action, d.set), (Action::Deny, 1));
        assert_eq!(
            evaluate(&sets, &flow(6, 80, &b, &a)).action,
            Action::Deny,
            "VN 2 -> 1 not allowed"
        );
    }

    #[test]
    fn prefixes_for_both_families() {
        let a = EndpointAttr::default();
        let r = RuleSet {
            name: "p".into(),
            rules: vec![Rule {
                src: EndpointMatch::prefix("10.1.0.0".parse().unwrap(), 16),
                ..Rule::any(Action::Pass)
            }],
            default: Action::Deny,
            network: false,
        };
        assert_eq!(r.eval(&flow(6, 1, &a, &a)).0, Action::Pass);
        let mut f = flow(6, 1, &a, &a);
        f.src = addr_bits("10.3.0.1".parse().unwrap());
        assert_eq!(r.eval(&f).0, Action::Deny);
        let v6 = EndpointMatch::prefix("fd00::".parse().unwrap(), 8);
        assert!(v6.matches(addr_bits("fd12::1".parse().unwrap()), &a));
        assert!(!v6.matches(addr_bits("fe80::1".parse().unwrap()), &a));
        assert!(!v6.matches(addr_bits("10.0.0.1".parse().unwrap()), &a));
    }
}
