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

/// An ordered list of rules: the first match decides, else the default. Built with
/// [`RuleSet::new`], which indexes the rules so that a flow is compared with the few that
/// could match it, not with every rule (a set of thousands of rules costs a flow about
/// what a short one does). The compiled rules are shared: a clone (every interface that
/// names the set) costs a reference, not a copy of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Name for dumps (e.g. the security group's FQ name).
    pub name: String,
    /// Action when nothing matches.
    pub default: Action,
    /// A virtual network's policy (see [`evaluate_service`]).
    pub network: bool,
    compiled: std::sync::Arc<Compiled>,
}

/// The rules of a set and their index.
#[derive(Debug, PartialEq, Eq)]
struct Compiled {
    rules: Vec<Rule>,
    index: RuleIndex,
}

/// Below this many rules a set is scanned in order: the index would not pay.
const SCAN_BELOW: usize = 16;

/// A port range of at most this many ports is indexed under each of its ports.
const NARROW_PORTS: u32 = 64;

/// Rule indices (ascending) by one key, keys sorted: looked up by binary search.
/// (A sorted vector rather than a hash map: no hasher to choose on the lcore, compact,
/// and a lookup costs a few cache lines even for 10,000 keys.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Buckets<K: Ord + Copy> {
    keys: Vec<K>,
    /// Bucket i holds `rules[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    rules: Vec<u32>,
}

impl<K: Ord + Copy> Buckets<K> {
    fn build(mut pairs: Vec<(K, u32)>) -> Buckets<K> {
        pairs.sort_unstable();
        pairs.dedup();
        let mut b = Buckets {
            keys: Vec::new(),
            starts: Vec::new(),
            rules: Vec::with_capacity(pairs.len()),
        };
        for (k, r) in pairs {
            if b.keys.last() != Some(&k) {
                b.keys.push(k);
                b.starts.push(b.rules.len() as u32);
            }
            b.rules.push(r);
        }
        b.starts.push(b.rules.len() as u32);
        b
    }

    #[inline]
    fn get(&self, k: K) -> &[u32] {
        match self.keys.binary_search(&k) {
            Ok(i) => &self.rules[self.starts[i] as usize..self.starts[i + 1] as usize],
            Err(_) => &[],
        }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Each rule filed once, under its most selective field: a source or destination
/// prefix (by length, then network), a narrow destination port range, a VN, a tag the
/// endpoint must carry; the rest in order. A rule that matches a flow is always in one of
/// the buckets that flow looks in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleIndex {
    /// By source prefix: one bucket set per prefix length present.
    src: Vec<(u8, Buckets<u128>)>,
    /// By destination prefix.
    dst: Vec<(u8, Buckets<u128>)>,
    dport: Buckets<u16>,
    src_vn: Buckets<u32>,
    dst_vn: Buckets<u32>,
    src_tag: Buckets<u32>,
    dst_tag: Buckets<u32>,
    /// Rules no field indexes.
    rest: Vec<u32>,
}

impl RuleIndex {
    fn build(rules: &[Rule]) -> RuleIndex {
        if rules.len() < SCAN_BELOW {
            return RuleIndex::default();
        }
        let mut src: std::collections::BTreeMap<u8, Vec<(u128, u32)>> = Default::default();
        let mut dst: std::collections::BTreeMap<u8, Vec<(u128, u32)>> = Default::default();
        let (mut dport, mut src_vn, mut dst_vn, mut src_tag, mut dst_tag, mut rest) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let narrow = u32::from(r.dport.1).saturating_sub(u32::from(r.dport.0)) < NARROW_PORTS
                && r.dport.0 <= r.dport.1;
            match (&r.src, &r.dst) {
                (EndpointMatch::Prefix { net, len }, _) if *len > 0 => {
                    src.entry(*len).or_default().push((*net, i))
                }
                (_, EndpointMatch::Prefix { net, len }) if *len > 0 => {
                    dst.entry(*len).or_default().push((*net, i))
                }
                _ if narrow => dport.extend((r.dport.0..=r.dport.1).map(|p| (p, i))),
                (EndpointMatch::Vn(v), _) => src_vn.push((*v, i)),
                (_, EndpointMatch::Vn(v)) => dst_vn.push((*v, i)),
                (EndpointMatch::Tags(t), _) if !t.is_empty() => src_tag.push((t[0], i)),
                (_, EndpointMatch::Tags(t)) if !t.is_empty() => dst_tag.push((t[0], i)),
                _ => rest.push(i),
            }
        }
        RuleIndex {
            src: src
                .into_iter()
                .map(|(l, v)| (l, Buckets::build(v)))
                .collect(),
            dst: dst
                .into_iter()
                .map(|(l, v)| (l, Buckets::build(v)))
                .collect(),
            dport: Buckets::build(dport),
            src_vn: Buckets::build(src_vn),
            dst_vn: Buckets::build(dst_vn),
            src_tag: Buckets::build(src_tag),
            dst_tag: Buckets::build(dst_tag),
            rest,
        }
    }
}

impl Rule {
    #[inline]
    fn matches(&self, f: &FlowMatch<'_>) -> bool {
        self.proto.is_none_or(|p| p == f.proto)
            && (self.dport.0..=self.dport.1).contains(&f.dport)
            && (self.sport.0..=self.sport.1).contains(&f.sport)
            && self.src.matches(f.src, f.src_attr)
            && self.dst.matches(f.dst, f.dst_attr)
    }
}

impl RuleSet {
    /// A rule set, indexed.
    pub fn new(
        name: impl Into<String>,
        rules: Vec<Rule>,
        default: Action,
        network: bool,
    ) -> RuleSet {
        RuleSet {
            name: name.into(),
            default,
            network,
            compiled: std::sync::Arc::new(Compiled {
                index: RuleIndex::build(&rules),
                rules,
            }),
        }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.compiled.rules
    }

    /// Whether two sets share their compiled rules (one compilation, several users).
    pub fn shares_rules_with(&self, o: &RuleSet) -> bool {
        std::sync::Arc::ptr_eq(&self.compiled, &o.compiled)
    }

    /// The first rule of `candidates` (ascending) below `best` that matches.
    #[inline]
    fn first_in(&self, candidates: &[u32], best: &mut u32, f: &FlowMatch<'_>) {
        for &i in candidates {
            if i >= *best {
                return;
            }
            if self.compiled.rules[i as usize].matches(f) {
                *best = i;
                return;
            }
        }
    }

    /// Evaluates; returns the action and the index of the rule that matched (`None` for
    /// the default).
    #[inline]
    pub fn eval(&self, f: &FlowMatch<'_>) -> (Action, Option<usize>) {
        let Compiled { rules, index: x } = &*self.compiled;
        if rules.len() < SCAN_BELOW {
            return match rules.iter().position(|r| r.matches(f)) {
                Some(i) => (rules[i].action, Some(i)),
                None => (self.default, None),
            };
        }
        let mut best = u32::MAX;
        self.first_in(&x.rest, &mut best, f);
        for (len, b) in &x.src {
            self.first_in(b.get(f.src & prefix_mask(*len)), &mut best, f);
        }
        for (len, b) in &x.dst {
            self.first_in(b.get(f.dst & prefix_mask(*len)), &mut best, f);
        }
        self.first_in(x.dport.get(f.dport), &mut best, f);
        self.first_in(x.src_vn.get(f.src_attr.vn), &mut best, f);
        self.first_in(x.dst_vn.get(f.dst_attr.vn), &mut best, f);
        if !x.src_tag.is_empty() {
            for &t in &f.src_attr.tags {
                self.first_in(x.src_tag.get(t), &mut best, f);
            }
        }
        if !x.dst_tag.is_empty() {
            for &t in &f.dst_attr.tags {
                self.first_in(x.dst_tag.get(t), &mut best, f);
            }
        }
        match rules.get(best as usize) {
            Some(r) => (r.action, Some(best as usize)),
            None => (self.default, None),
        }
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
        let sg = RuleSet::new(
            "sg-web",
            vec![tcp_rule(80, Action::Pass)],
            Action::Deny,
            false,
        );
        let a = EndpointAttr::default();
        assert_eq!(sg.eval(&flow(6, 80, &a, &a)), (Action::Pass, Some(0)));
        assert_eq!(sg.eval(&flow(6, 81, &a, &a)), (Action::Deny, None));
        assert_eq!(sg.eval(&flow(17, 80, &a, &a)), (Action::Deny, None));
    }

    #[test]
    fn first_match_and_all_sets_must_pass() {
        let net = RuleSet::new(
            "np",
            vec![
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
            Action::Deny,
            false,
        );
        let fw = RuleSet::new(
            "fw",
            vec![Rule {
                dst: EndpointMatch::Tags(vec![7]),
                ..Rule::any(Action::Deny)
            }],
            Action::Pass,
            false,
        );
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
        let r = RuleSet::new(
            "p",
            vec![Rule {
                src: EndpointMatch::prefix("10.1.0.0".parse().unwrap(), 16),
                ..Rule::any(Action::Pass)
            }],
            Action::Deny,
            false,
        );
        assert_eq!(r.eval(&flow(6, 1, &a, &a)).0, Action::Pass);
        let mut f = flow(6, 1, &a, &a);
        f.src = addr_bits("10.3.0.1".parse().unwrap());
        assert_eq!(r.eval(&f).0, Action::Deny);
        let v6 = EndpointMatch::prefix("fd00::".parse().unwrap(), 8);
        assert!(v6.matches(addr_bits("fd12::1".parse().unwrap()), &a));
        assert!(!v6.matches(addr_bits("fe80::1".parse().unwrap()), &a));
        assert!(!v6.matches(addr_bits("10.0.0.1".parse().unwrap()), &a));
    }

    mod indexed {
        use super::*;
        use proptest::prelude::*;

        /// Addresses from a small space (10.0.0.0/29 and fd00::/125), so that rules match.
        fn addr() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                (0u8..8).prop_map(|h| IpAddr::from([10, 0, 0, h])),
                (0u16..8).prop_map(|h| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, h])),
            ]
        }

        fn endpoint() -> impl Strategy<Value = EndpointMatch> {
            prop_oneof![
                Just(EndpointMatch::Any),
                (addr(), 0u8..=32).prop_map(|(a, l)| EndpointMatch::prefix(a, l)),
                (addr(), 120u8..=128).prop_map(|(a, l)| EndpointMatch::prefix(a, l)),
                (0u32..4).prop_map(EndpointMatch::Vn),
                proptest::collection::vec(0u32..6, 0..3).prop_map(|mut t| {
                    t.sort_unstable();
                    t.dedup();
                    EndpointMatch::Tags(t)
                }),
            ]
        }

        fn ports() -> impl Strategy<Value = (u16, u16)> {
            prop_oneof![
                Just((0, u16::MAX)),
                (0u16..100).prop_map(|p| (p, p)),
                (0u16..100, 0u16..200).prop_map(|(a, w)| (a, a.saturating_add(w))),
            ]
        }

        fn rule() -> impl Strategy<Value = Rule> {
            (
                proptest::option::of(prop_oneof![Just(6u8), Just(17)]),
                endpoint(),
                endpoint(),
                ports(),
                ports(),
                any::<bool>(),
            )
                .prop_map(|(proto, src, dst, sport, dport, pass)| Rule {
                    proto,
                    src,
                    dst,
                    sport,
                    dport,
                    action: if pass { Action::Pass } else { Action::Deny },
                })
        }

        fn attr() -> impl Strategy<Value = EndpointAttr> {
            (0u32..4, proptest::collection::vec(0u32..6, 0..4)).prop_map(|(vn, mut tags)| {
                tags.sort_unstable();
                tags.dedup();
                EndpointAttr { vn, tags }
            })
        }

        proptest! {
            /// The index finds exactly the rule an in-order scan finds, for sets of every
            /// size around the point where it takes over.
            #[test]
            fn the_index_decides_as_an_in_order_scan(
                rules in proptest::collection::vec(rule(), 0..120),
                flows in proptest::collection::vec(
                    (prop_oneof![Just(6u8), Just(17), Just(1)], addr(), addr(), 0u16..300, 0u16..300, attr(), attr()),
                    1..40,
                ),
            ) {
                let set = RuleSet::new("p", rules.clone(), Action::Deny, false);
                for (proto, s, d, sport, dport, sa, da) in &flows {
                    let f = FlowMatch {
                        proto: *proto,
                        src: addr_bits(*s),
                        dst: addr_bits(*d),
                        sport: *sport,
                        dport: *dport,
                        src_attr: sa,
                        dst_attr: da,
                    };
                    let scan = match rules.iter().position(|r| r.matches(&f)) {
                        Some(i) => (rules[i].action, Some(i)),
                        None => (Action::Deny, None),
                    };
                    prop_assert_eq!(set.eval(&f), scan);
                }
            }
        }
    }
}
