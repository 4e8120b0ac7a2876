//! The object types: names as VNC spells them, the shape of their FQ names, their parents
//! and the references each one holds.

use crate::proto::{self, Object, Ref, object};

macro_rules! kinds {
    ($($variant:ident = $name:literal, fq $fq:expr, parent $parent:expr;)*) => {
        /// An object type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $(
                #[doc = $name]
                $variant,
            )*
        }

        impl Kind {
            /// Every type.
            pub const ALL: &[Kind] = &[$(Kind::$variant),*];

            /// The VNC type name (`virtual-network`).
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => $name),* }
            }

            /// Accepted FQ-name lengths.
            pub fn fq_lengths(self) -> &'static [usize] {
                match self { $(Kind::$variant => $fq),* }
            }

            /// The parent type for each FQ-name length (none: top level or a fixed
            /// root such as the domain).
            pub fn parent(self, fq_len: usize) -> Option<Kind> {
                let f: fn(usize) -> Option<Kind> = match self { $(Kind::$variant => $parent),* };
                f(fq_len)
            }
        }

        /// The type of an object (none when the oneof is empty).
        pub fn kind_of(o: &Object) -> Option<Kind> {
            match &o.kind {
                $(Some(object::Kind::$variant(_)) => Some(Kind::$variant),)*
                None => None,
            }
        }

        /// The UUID and FQ name of an object.
        pub fn meta(o: &Object) -> (&str, &[String]) {
            match &o.kind {
                $(Some(object::Kind::$variant(x)) => (&x.uuid, &x.fq_name),)*
                None => ("", &[]),
            }
        }

        /// Mutable UUID and FQ name.
        pub fn meta_mut(o: &mut Object) -> Option<(&mut String, &mut Vec<String>)> {
            match &mut o.kind {
                $(Some(object::Kind::$variant(x)) => Some((&mut x.uuid, &mut x.fq_name)),)*
                None => None,
            }
        }
    };
}

fn none(_: usize) -> Option<Kind> {
    None
}

fn project_child(len: usize) -> Option<Kind> {
    (len == 3).then_some(Kind::Project)
}

kinds! {
    Project = "project", fq &[2], parent none;
    NetworkIpam = "network-ipam", fq &[3], parent project_child;
    VirtualNetwork = "virtual-network", fq &[3], parent project_child;
    VirtualMachine = "virtual-machine", fq &[1], parent none;
    VirtualMachineInterface = "virtual-machine-interface", fq &[3], parent project_child;
    InstanceIp = "instance-ip", fq &[1], parent none;
    FloatingIpPool = "floating-ip-pool", fq &[4], parent |_| Some(Kind::VirtualNetwork);
    FloatingIp = "floating-ip", fq &[5], parent |_| Some(Kind::FloatingIpPool);
    SecurityGroup = "security-group", fq &[3], parent project_child;
    NetworkPolicy = "network-policy", fq &[3], parent project_child;
    Tag = "tag", fq &[1, 3], parent project_child;
    FirewallRule = "firewall-rule", fq &[2, 3], parent project_child;
    FirewallPolicy = "firewall-policy", fq &[2, 3], parent project_child;
    ApplicationPolicySet = "application-policy-set", fq &[2, 3], parent project_child;
    Loadbalancer = "loadbalancer", fq &[3], parent project_child;
    LoadbalancerListener = "loadbalancer-listener", fq &[3], parent project_child;
    LoadbalancerPool = "loadbalancer-pool", fq &[3], parent project_child;
    LoadbalancerMember = "loadbalancer-member", fq &[4], parent |_| Some(Kind::LoadbalancerPool);
    GlobalVrouterConfig = "global-vrouter-config", fq &[2], parent none;
}

impl Kind {
    /// The type named `name` (VNC spelling, `_` accepted for `-`).
    pub fn from_name(name: &str) -> Option<Kind> {
        let n = name.replace('_', "-");
        Kind::ALL.iter().copied().find(|k| k.name() == n)
    }
}

/// A reference field of an object: its name (for messages), the type it must point to,
/// and the reference itself.
pub type RefField<'a> = (String, Kind, &'a mut Ref);

fn opt<'a>(out: &mut Vec<RefField<'a>>, name: &str, kind: Kind, r: &'a mut Option<Ref>) {
    if let Some(r) = r.as_mut() {
        out.push((name.to_string(), kind, r));
    }
}

fn many<'a>(out: &mut Vec<RefField<'a>>, name: &str, kind: Kind, rs: &'a mut [Ref]) {
    for (i, r) in rs.iter_mut().enumerate() {
        out.push((format!("{name}[{i}]"), kind, r));
    }
}

fn seq<'a>(out: &mut Vec<RefField<'a>>, name: &str, kind: Kind, rs: &'a mut [proto::SequencedRef]) {
    for (i, r) in rs.iter_mut().enumerate() {
        opt(out, &format!("{name}[{i}].ref"), kind, &mut r.r#ref);
    }
}

/// Every reference an object holds.
pub fn refs_mut(o: &mut Object) -> Vec<RefField<'_>> {
    let mut out = Vec::new();
    match &mut o.kind {
        Some(object::Kind::VirtualNetwork(x)) => {
            for (i, r) in x.network_ipam_refs.iter_mut().enumerate() {
                opt(
                    &mut out,
                    &format!("network_ipam_refs[{i}].ipam"),
                    Kind::NetworkIpam,
                    &mut r.ipam,
                );
            }
            many(
                &mut out,
                "network_policy_refs",
                Kind::NetworkPolicy,
                &mut x.network_policy_refs,
            );
        }
        Some(object::Kind::VirtualMachineInterface(x)) => {
            opt(
                &mut out,
                "virtual_network_ref",
                Kind::VirtualNetwork,
                &mut x.virtual_network_ref,
            );
            opt(
                &mut out,
                "virtual_machine_ref",
                Kind::VirtualMachine,
                &mut x.virtual_machine_ref,
            );
            many(
                &mut out,
                "security_group_refs",
                Kind::SecurityGroup,
                &mut x.security_group_refs,
            );
            many(&mut out, "tag_refs", Kind::Tag, &mut x.tag_refs);
            opt(
                &mut out,
                "parent_interface_ref",
                Kind::VirtualMachineInterface,
                &mut x.parent_interface_ref,
            );
        }
        Some(object::Kind::InstanceIp(x)) => {
            opt(
                &mut out,
                "virtual_network_ref",
                Kind::VirtualNetwork,
                &mut x.virtual_network_ref,
            );
            many(
                &mut out,
                "virtual_machine_interface_refs",
                Kind::VirtualMachineInterface,
                &mut x.virtual_machine_interface_refs,
            );
        }
        Some(object::Kind::FloatingIp(x)) => {
            many(
                &mut out,
                "virtual_machine_interface_refs",
                Kind::VirtualMachineInterface,
                &mut x.virtual_machine_interface_refs,
            );
            opt(
                &mut out,
                "loadbalancer_ref",
                Kind::Loadbalancer,
                &mut x.loadbalancer_ref,
            );
        }
        Some(object::Kind::FirewallPolicy(x)) => seq(
            &mut out,
            "firewall_rule_refs",
            Kind::FirewallRule,
            &mut x.firewall_rule_refs,
        ),
        Some(object::Kind::ApplicationPolicySet(x)) => {
            seq(
                &mut out,
                "firewall_policy_refs",
                Kind::FirewallPolicy,
                &mut x.firewall_policy_refs,
            );
            many(&mut out, "tag_refs", Kind::Tag, &mut x.tag_refs);
        }
        Some(object::Kind::Loadbalancer(x)) => {
            opt(
                &mut out,
                "virtual_network_ref",
                Kind::VirtualNetwork,
                &mut x.virtual_network_ref,
            );
            many(
                &mut out,
                "virtual_machine_interface_refs",
                Kind::VirtualMachineInterface,
                &mut x.virtual_machine_interface_refs,
            );
        }
        Some(object::Kind::LoadbalancerListener(x)) => opt(
            &mut out,
            "loadbalancer_ref",
            Kind::Loadbalancer,
            &mut x.loadbalancer_ref,
        ),
        Some(object::Kind::LoadbalancerPool(x)) => opt(
            &mut out,
            "loadbalancer_listener_ref",
            Kind::LoadbalancerListener,
            &mut x.loadbalancer_listener_ref,
        ),
        _ => {}
    }
    out
}

/// The UUIDs an object refers to (after normalisation every reference has one).
pub fn ref_uuids(o: &Object) -> Vec<String> {
    let mut o = o.clone();
    refs_mut(&mut o)
        .into_iter()
        .map(|(_, _, r)| r.uuid.clone())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The ports a listener may serve on every node's address (Kubernetes' default
/// `--service-node-port-range`): a node port elsewhere would take a host port such as
/// SSH (22), etcd (2379) or the kubelet (10250) from fabric and pod traffic.
pub const NODE_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// `a:b:c` for messages.
pub fn fq_string(fq: &[String]) -> String {
    fq.join(":")
}
