//! Drop reasons, in the spirit of TF's dropstats: every packet the vrouter does not send
//! is counted under exactly one of these. Where a reason means the drop TF's
//! `vr_drop_stats` counts, it has TF's name (`invalid_if`, `invalid_nh`, `cksum_err`,
//! `pull_fail` for `vds_pull`, ...); malformed packets are told apart by where they fail
//! (headers, transport header, tunnel header, ARP/ND, a rewrite).

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// Why a packet was dropped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// The name shown by `vrctl dropstats`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// An Ethernet or IP header too short or inconsistent.
    InvalidPacket = "invalid_packet",
    /// A TCP, UDP, ICMP or SCTP header too short or malformed.
    InvalidTransport = "invalid_transport_header",
    /// A tunnel header (GRE, MPLS, VXLAN) or the packet inside it too short or malformed.
    InvalidTunnelPacket = "invalid_tunnel_packet",
    /// A malformed ARP request or IPv6 neighbour solicitation.
    InvalidArp = "invalid_arp",
    /// Headers to take off longer than the packet (TF's `vds_pull`).
    PullFail = "pull_fail",
    /// A header the vrouter rewrites (NAT, TTL, an ICMP error, an ARP/ND answer, a
    /// fragment) that does not fit the packet.
    RewriteFail = "rewrite_fail",
    /// A packet that reached the nexthop stage with no flow action (never expected).
    FlowActionInvalid = "flow_action_invalid",
    /// A packet no stage gave a disposition, or beyond the burst it came in (never
    /// expected).
    NowhereToGo = "nowhere_to_go",
    /// IPv4 header checksum wrong.
    BadChecksum = "cksum_err",
    /// A protocol we do not forward (e.g. non-IP on an L3-only interface).
    InvalidProtocol = "invalid_protocol",
    /// The receiving interface is unknown or deleted.
    InvalidVif = "invalid_if",
    /// The interface's VRF is missing.
    InvalidVrf = "invalid_vrf",
    /// No route for the destination.
    NoRoute = "no_route",
    /// The route's nexthop is missing.
    InvalidNexthop = "invalid_nh",
    /// The nexthop says discard.
    Discard = "discard",
    /// TTL or hop limit reached zero.
    TtlExpired = "ttl_exceeded",
    /// MPLS label not mapped (or not bottom of stack).
    InvalidLabel = "invalid_label",
    /// VXLAN VNI not mapped.
    InvalidVni = "invalid_vnid",
    /// A tunnel packet not for this node.
    InvalidTunnel = "invalid_tunnel",
    /// Policy denied the flow.
    PolicyDeny = "policy_deny",
    /// The flow table had no room and nothing could be evicted.
    FlowTableFull = "flow_table_full",
    /// The flow was set up to drop (cached deny).
    FlowDrop = "flow_action_drop",
    /// No encapsulation both sides support.
    NoEncap = "no_encap",
    /// No headroom to push the tunnel headers (TF's `vds_push`).
    NoHeadroom = "push_fail",
    /// The packet plus encapsulation exceeds the MTU.
    TooBig = "too_big",
    /// NAT could not get a port.
    NatNoPort = "nat_no_port",
    /// The flow's interface (a local VM) holds its quota of flows already.
    VifFlowLimit = "vif_flow_limit",
    /// The flow's interface holds its share of the node's SNAT ports already.
    VifSnatLimit = "vif_snat_limit",
    /// A first fragment too short to hold its whole transport header (the tiny-fragment
    /// attack of RFC 1858; RFC 7112 for IPv6's header chain).
    FragmentTiny = "fragment_tiny",
    /// A fragment that overlaps another of its datagram (RFC 1858, RFC 5722): it and every
    /// later fragment of that datagram are dropped.
    FragmentOverlap = "fragment_overlap",
    /// No room to track another fragmented datagram, or to hold another fragment that
    /// came before its first one.
    FragmentTableFull = "fragment_table_full",
    /// A fragment held for its first fragment, which did not come in time.
    FragmentTimeout = "fragment_timeout",
    /// Neighbour not resolved.
    Unresolved = "unresolved",
    /// The output queue was full, or the output interface has gone (TF's
    /// `vds_interface_tx_discard`).
    TxFull = "interface_tx_discard",
    /// A packet for an L2 destination we do not know.
    NoBridgeEntry = "l2_no_route",
    /// An L2 flood the runtime cannot copy yet.
    FloodUnsupported = "flood_unsupported",
    /// A service address reached on a protocol / port it does not serve.
    NoServicePort = "no_service_port",
    /// A frame longer than a host interface's ring frame (2 KiB): only its start arrived.
    RxTruncated = "rx_truncated",
    /// No mbuf left in the pool for a frame from a host interface.
    NoMbuf = "no_mbuf",
    /// A VM sent from an address that is not its own nor an allowed pair's (IP or ARP
    /// sender), or from its address with another MAC (anti-spoofing; TF's "Invalid Source").
    InvalidSource = "invalid_source",
    /// A frame with a broadcast or multicast source MAC, or from a VM with a MAC that is not
    /// its own nor an allowed pair's.
    InvalidSourceMac = "invalid_source_mac",
    /// An IPv6 packet with an IPv4-mapped address (`::ffff:0:0/96`), which never appears
    /// on the wire and would alias an IPv4 flow.
    MappedAddress = "v4_mapped_address",
    /// An ICMP error quoting a packet of no flow (or nothing a flow could hold): errors
    /// follow flows and never set one up.
    IcmpErrorNoFlow = "icmp_error_no_flow",
    /// A tunnel from a fabric address that is no node's: not decapsulated.
    UntrustedTunnel = "untrusted_tunnel",
    /// A decapsulated packet whose source is routed to another place than the node that
    /// sent it (one of this node's interfaces, or another node): a forged source.
    TunnelSourceMismatch = "tunnel_source_mismatch",
}

/// Number of reasons.
pub const NUM_REASONS: usize = DropReason::ALL.len();

impl DropReason {
    /// The reason from its `u8` value, as stored in flow entries.
    pub fn from_u8(v: u8) -> Option<DropReason> {
        DropReason::ALL.get(usize::from(v)).copied()
    }
}

/// Per-lcore drop counters, indexed by reason; serialized as a map from reason name to
/// count, every reason included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropStats(pub [u64; NUM_REASONS]);

impl serde::Serialize for DropStats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(NUM_REASONS))?;
        for r in DropReason::ALL {
            m.serialize_entry(r.name(), &self.get(*r))?;
        }
        m.end()
    }
}

impl Default for DropStats {
    fn default() -> Self {
        DropStats([0; NUM_REASONS])
    }
}

impl DropStats {
    /// Counts one drop.
    #[inline]
    pub fn count(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }

    /// The count for a reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    /// Adds another lcore's counters.
    pub fn add(&mut self, o: &DropStats) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    /// Total drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero reasons with names.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_u8_and_have_unique_names() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_u8(*r as u8), Some(*r));
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_REASONS);
        assert_eq!(DropReason::from_u8(NUM_REASONS as u8), None);
    }
}
