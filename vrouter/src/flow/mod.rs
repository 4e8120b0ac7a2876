//! Flows: the exact-match cache in front of routing and policy.
//!
//! A flow key is (VRF, protocol, source, destination, ports); flows come in pairs (forward
//! and reverse) set up together by the lcore that saw the first packet, after evaluating
//! policy. The entry remembers the decision: forward to a nexthop (the ECMP member chosen
//! at setup stays), drop with a reason, or NAT; plus TCP state and counters.

pub mod frag;
pub mod table;

use std::net::IpAddr;

use crate::policy::addr_bits;
use crate::tables::{NhId, VrfId};
use vrouter_api::drops::DropReason;

pub use table::{
    AgingConfig, FlowHit, FlowIdx, FlowInfo, FlowTable, FlowTableStats, InsertError, TcpState,
};

/// A flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// VRF.
    pub vrf: VrfId,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (ICMP echo: identifier; otherwise 0 for portless protocols).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl FlowKey {
    /// The key of the opposite direction. ICMP echo keys carry the identifier as the
    /// source port in both directions (requests and replies share it), so their ports stay.
    pub fn reversed(&self) -> FlowKey {
        let icmp = self.proto == 1 || self.proto == 58;
        FlowKey {
            vrf: self.vrf,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: if icmp { self.sport } else { self.dport },
            dport: if icmp { self.dport } else { self.sport },
        }
    }

    /// The key packed into five words (addresses as 128-bit, IPv4 mapped).
    #[inline]
    pub fn pack(&self) -> [u64; 5] {
        let s = addr_bits(self.src);
        let d = addr_bits(self.dst);
        [
            (u64::from(self.vrf.0 & 0x00ff_ffff) << 40)
                | (u64::from(self.proto) << 32)
                | (u64::from(self.sport) << 16)
                | u64::from(self.dport),
            (s >> 64) as u64,
            s as u64,
            (d >> 64) as u64,
            d as u64,
        ]
    }

    /// Unpacks what `pack` wrote.
    pub fn unpack(w: &[u64; 5]) -> FlowKey {
        let s = (u128::from(w[1]) << 64) | u128::from(w[2]);
        let d = (u128::from(w[3]) << 64) | u128::from(w[4]);
        FlowKey {
            vrf: VrfId(((w[0] >> 40) & 0x00ff_ffff) as u32),
            proto: (w[0] >> 32) as u8,
            src: bits_addr(s),
            dst: bits_addr(d),
            sport: (w[0] >> 16) as u16,
            dport: w[0] as u16,
        }
    }

    /// The flow hash (also used to pick ECMP members and tunnel source ports).
    #[inline]
    pub fn hash(&self) -> u64 {
        hash_words(&self.pack())
    }
}

fn bits_addr(b: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The flow hash's seed: fixed until [`seed_hash`] sets it.
static SEED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0x243f_6a88_85a3_08d3);

/// Seeds the flow hash (the daemon does, with a random value, once at start, before any
/// table exists), so that keys colliding in one bucket cannot be worked out in advance.
/// Every lcore reads the same seed: one table, one hash.
pub fn seed_hash(seed: u64) {
    SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
}

/// A random seed for [`seed_hash`] (from the standard library's per-process random keys).
pub fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// Mixes packed key words into 64 bits (multiply-rotate per word from the seed, murmur3
/// finaliser; written here because the datapath needs an allocation-free hash identical on
/// every lcore, a few cycles long).
#[inline]
pub fn hash_words(w: &[u64; 5]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = SEED.load(std::sync::atomic::Ordering::Relaxed);
    for &x in w {
        h = (h ^ x).wrapping_mul(K).rotate_left(31);
    }
    // murmur3's 64-bit finaliser: every input bit reaches every output bit, so the bucket
    // index (low bits) and the signature (high bits) are independent even for keys that
    // differ only in a port or the last address octet.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Which address and port a NAT entry rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRewrite {
    /// True: rewrite the source (SNAT, or the reverse of a DNAT); false: the destination.
    pub source: bool,
    /// The new address.
    pub addr: IpAddr,
    /// The new port (0 keeps the port).
    pub port: u16,
    /// The port came from the node's SNAT pool and goes back when the flow is deleted.
    pub pooled: bool,
}

/// A flow translated both ways: a pod reaching itself through its service would get its
/// own address back as the source, so the packet's other address is rewritten too, from
/// the flow's own key (no address to store: the service is the forward key's
/// destination, the pod the reply key's source; ports are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hairpin {
    /// One way only.
    #[default]
    No,
    /// The source becomes the key's destination (the service).
    Source,
    /// The destination becomes the key's source (the pod itself).
    Destination,
}

impl Hairpin {
    /// The second rewrite of a packet with flow key `key`, if any.
    pub fn rewrite(self, key: &FlowKey) -> Option<NatRewrite> {
        let (source, addr) = match self {
            Hairpin::No => return None,
            Hairpin::Source => (true, key.dst),
            Hairpin::Destination => (false, key.src),
        };
        Some(NatRewrite {
            source,
            addr,
            port: 0,
            pooled: false,
        })
    }
}

/// What a flow does with its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    /// Forward to `nh` with `label`.
    Forward,
    /// Drop, counting `reason`.
    Drop(DropReason),
}

/// The decision stored in a flow entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowAction {
    /// Forward or drop.
    pub verdict: FlowVerdict,
    /// Nexthop (the ECMP member for composites).
    pub nh: NhId,
    /// Label or VNI to push.
    pub label: u32,
    /// Address/port rewrite, if any.
    pub nat: Option<NatRewrite>,
    /// With `nat`, the packet's other address is rewritten too (hairpin).
    pub hairpin: Hairpin,
    /// Route generation of the VRF when the nexthop was resolved.
    pub route_gen: u32,
    /// Policy generation of the tables (low 32 bits) when policy decided: a forward entry
    /// decided under another generation is set up again. (Stored whole: 8 bits wrapped
    /// after 256 policy changes, and a flow decided that long ago looked current again.)
    pub policy_gen: u32,
    /// Copy packets to the mirror destination.
    pub mirror: bool,
    /// The fabric address (IPv4 bits) of the node whose tunnel packets may hit this entry:
    /// the node that sent the flow's first packet, or the one its replies come back from;
    /// 0: none, a decapsulated packet hitting it has a forged source.
    pub from_node: u32,
    /// The nexthop was chosen for this flow, not by the route to its destination (the
    /// way back to the node that translated the flow's client): a route change does not
    /// resolve it again.
    pub pinned: bool,
}

impl FlowAction {
    /// A drop action.
    pub fn drop(reason: DropReason) -> FlowAction {
        FlowAction {
            verdict: FlowVerdict::Drop(reason),
            nh: NhId(0),
            label: 0,
            nat: None,
            hairpin: Hairpin::No,
            route_gen: 0,
            policy_gen: 0,
            mirror: false,
            from_node: 0,
            pinned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_for_both_families() {
        for (s, d) in [("10.1.1.3", "10.1.1.4"), ("fd00::1", "fd00::2")] {
            let k = FlowKey {
                vrf: VrfId(77),
                proto: 6,
                src: s.parse().unwrap(),
                dst: d.parse().unwrap(),
                sport: 40000,
                dport: 80,
            };
            assert_eq!(FlowKey::unpack(&k.pack()), k);
            assert_ne!(k.hash(), k.reversed().hash());
            assert_eq!(k.reversed().reversed(), k);
        }
    }
}
