//! The published table snapshot, its single writer, and per-lcore readers.
//!
//! Readers (forwarding lcores) hold a [`TableReader`] and call `load()` once per burst: an
//! `arc_swap::Cache` that costs one atomic load while nothing changed. The writer changes
//! its working copy with validated calls (a refused change leaves everything as it was)
//! and `publish()`es. Old snapshots are kept in a retire list and freed on the control
//! thread once no lcore holds them (their count drops to the list's own reference) - the
//! same guarantee as RCU quiescent-state reclamation, without freeing on the fast path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use super::lpm::{Lpm, LpmWriter, PrefixLenError, RouteEntry};
use super::nexthop::{Nexthop, TunnelKind};
use super::pvec::PVec;
use super::vif::Vif;
use super::{NhId, VifId, VrfId};
use crate::policy::EndpointAttr;
use crate::wire::MacAddr;

/// Table capacities, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Interfaces.
    pub vifs: u32,
    /// VRFs.
    pub vrfs: u32,
    /// Nexthops.
    pub nexthops: u32,
    /// MPLS labels (label values below this).
    pub labels: u32,
    /// Endpoint attribute records.
    pub attrs: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        TableSizes {
            vifs: 4096,
            vrfs: 4096,
            nexthops: 524_288,
            labels: 1 << 20,
            attrs: 65_536,
        }
    }
}

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Encapsulations in order of preference.
    pub encap_priority: Vec<TunnelKind>,
    /// The MAC the vrouter answers ARP/ND with for VN gateways (TF uses 00:00:5e:00:01:00).
    pub vrouter_mac: MacAddr,
    /// The fabric (physical) interface: tunnels arrive here.
    pub fabric_vif: Option<VifId>,
    /// The host interface (vhost0): fabric traffic that is not ours goes there, and
    /// what the host sends leaves through the fabric.
    pub host_vif: Option<VifId>,
    /// Flow pairs one local VM may hold at once (`None`: a quarter of the table).
    pub vif_max_flows: Option<u32>,
    /// SNAT ports one local VM may hold at once (`None`: a quarter of the smaller pool).
    pub vif_max_snat_ports: Option<u32>,
    /// SNAT port ranges `([tcp first, last], [udp first, last])`, which the pools
    /// follow; `None`: the pools keep theirs.
    pub snat_ports: Option<([u16; 2], [u16; 2])>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            encap_priority: vec![TunnelKind::MplsUdp, TunnelKind::MplsGre, TunnelKind::Vxlan],
            vrouter_mac: MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00]),
            fabric_vif: None,
            host_vif: None,
            vif_max_flows: None,
            vif_max_snat_ports: None,
            snat_ports: None,
        }
    }
}

/// A VRF as lcores read it.
#[derive(Debug, Clone)]
pub struct Vrf {
    /// Index.
    pub id: VrfId,
    /// IPv4 routes.
    pub v4: Lpm<4>,
    /// IPv6 routes.
    pub v6: Lpm<16>,
    /// MAC -> destination, for L2 forwarding.
    pub bridge: Arc<HashMap<MacAddr, RouteEntry>>,
    /// Bumped on every route change: flows set up under an older generation re-resolve
    /// their route on their next packet.
    pub generation: u32,
}

impl Vrf {
    /// Route lookup for either family.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<RouteEntry> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(&a.octets()),
            IpAddr::V6(a) => self.v6.lookup(&a.octets()),
        }
    }
}

/// Everything the datapath reads, immutable once published.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Interfaces.
    pub vifs: PVec<Arc<Vif>>,
    /// VRFs.
    pub vrfs: PVec<Arc<Vrf>>,
    /// Nexthops.
    pub nexthops: PVec<Arc<Nexthop>>,
    /// MPLS label -> nexthop.
    pub labels: PVec<NhId>,
    /// VXLAN VNI -> VRF.
    pub vnis: Arc<HashMap<u32, VrfId>>,
    /// Endpoint attributes (VN, tags) by id.
    pub attrs: PVec<Arc<EndpointAttr>>,
    /// Node-wide settings.
    pub global: Arc<GlobalConfig>,
    /// Publication counter.
    pub version: u64,
    /// Bumped when an interface's policy or attributes, or an attribute record, change:
    /// flows decided under an older generation are decided again.
    pub policy_gen: u32,
    /// The other nodes' fabric addresses that tunnel nexthops lead to, with how many do:
    /// the tunnels the vrouter decapsulates must come from one of them (or from a node
    /// the fabric VRF routes to, see [`Snapshot::known_node`]).
    pub tunnel_peers: Arc<HashMap<std::net::Ipv4Addr, u32>>,
}

impl Snapshot {
    /// Empty tables of the given sizes.
    pub fn new(sizes: TableSizes) -> Snapshot {
        Snapshot {
            vifs: PVec::with_capacity(sizes.vifs),
            vrfs: PVec::with_capacity(sizes.vrfs),
            nexthops: PVec::with_capacity(sizes.nexthops),
            labels: PVec::with_capacity(sizes.labels),
            vnis: Arc::new(HashMap::new()),
            attrs: PVec::with_capacity(sizes.attrs),
            global: Arc::new(GlobalConfig::default()),
            version: 0,
            policy_gen: 0,
            tunnel_peers: Arc::new(HashMap::new()),
        }
    }

    /// Whether `a` is another node's fabric address: a tunnel nexthop leads to it, or the
    /// fabric VRF has a route of its own to it ([`Snapshot::node_route`]).
    pub fn known_node(&self, a: std::net::Ipv4Addr) -> bool {
        self.tunnel_peers.contains_key(&a) || self.node_route(a).is_some()
    }

    /// The nexthop that reaches node `a` directly on the fabric: its address's own route
    /// in the fabric VRF (an encap nexthop out of the fabric vif, which the agent makes
    /// for every node it learns routes from), not the fabric's default (the gateway).
    pub fn node_route(&self, a: std::net::Ipv4Addr) -> Option<NhId> {
        let fabric = self.global.fabric_vif?;
        let vrf = self.vrfs.get(self.vifs.get(fabric.0)?.vrf.0)?;
        let r = vrf.lookup(IpAddr::V4(a))?;
        let default = vrf.lookup(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if default.is_some_and(|d| d.nh == r.nh) {
            return None;
        }
        match self.nexthops.get(r.nh.0).map(|n| &**n) {
            Some(Nexthop::Encap { vif, .. }) if *vif == fabric => Some(r.nh),
            _ => None,
        }
    }

    /// This node's fabric address (the fabric vif's IPv4), the source of the ICMP errors
    /// the vrouter sends.
    pub fn node_ip4(&self) -> Option<std::net::Ipv4Addr> {
        self.global
            .fabric_vif
            .and_then(|f| self.vifs.get(f.0))
            .and_then(|f| f.ip4)
    }

    /// Endpoint attributes by id (0 or unknown: the empty record).
    #[inline]
    pub fn attr(&self, id: u32) -> &EndpointAttr {
        static NONE: EndpointAttr = EndpointAttr {
            vn: 0,
            tags: Vec::new(),
        };
        self.attrs.get(id).map_or(&NONE, |a| a)
    }
}

/// A refused table change. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Index beyond the table's capacity.
    #[error("{what} {id} is out of range (table holds {capacity})")]
    OutOfRange {
        /// Table.
        what: &'static str,
        /// Index given.
        id: u32,
        /// Capacity.
        capacity: u32,
    },
    /// A referenced VRF does not exist.
    #[error("{0} does not exist")]
    NoVrf(VrfId),
    /// A referenced interface does not exist.
    #[error("{0} does not exist")]
    NoVif(VifId),
    /// A referenced nexthop does not exist.
    #[error("{0} does not exist")]
    NoNexthop(NhId),
    /// The object is still referenced.
    #[error("{what} is in use by {by}")]
    InUse {
        /// The object.
        what: String,
        /// Who uses it.
        by: String,
    },
    /// Bad prefix length.
    #[error(transparent)]
    Prefix(#[from] PrefixLenError),
    /// An address family mismatch or similar.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default)]
struct VrfRoutes {
    v4: LpmWriter<4>,
    v6: LpmWriter<16>,
    bridge: HashMap<MacAddr, RouteEntry>,
    generation: u32,
}

/// The single writer of the tables (the control thread).
#[derive(Debug)]
pub struct TablesWriter {
    work: Snapshot,
    /// Per-VRF route state, copy-on-write so a transaction's saved copy is cheap.
    routes: HashMap<VrfId, Arc<VrfRoutes>>,
    shared: Arc<ArcSwap<Snapshot>>,
    retired: Vec<Arc<Snapshot>>,
}

/// A per-lcore reader.
#[derive(Debug)]
pub struct TableReader {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl TableReader {
    /// The current snapshot; call once per burst.
    #[inline]
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.cache.load()
    }
}

fn check_range(what: &'static str, id: u32, capacity: u32) -> Result<(), TableError> {
    if id >= capacity {
        return Err(TableError::OutOfRange { what, id, capacity });
    }
    Ok(())
}

impl TablesWriter {
    /// Empty tables; publishes the empty snapshot.
    pub fn new(sizes: TableSizes) -> TablesWriter {
        let work = Snapshot::new(sizes);
        let shared = Arc::new(ArcSwap::from_pointee(work.clone()));
        TablesWriter {
            work,
            routes: HashMap::new(),
            shared,
            retired: Vec::new(),
        }
    }

    /// A reader for an lcore.
    pub fn reader(&self) -> TableReader {
        TableReader {
            cache: Cache::new(Arc::clone(&self.shared)),
        }
    }

    /// The working copy (what the next publish will show).
    pub fn tables(&self) -> &Snapshot {
        &self.work
    }

    /// Runs `f` as one transaction: if it fails, every change it made is undone (the
    /// working copy and the route state are restored), so nothing is half applied.
    pub fn transaction<T, E>(
        &mut self,
        f: impl FnOnce(&mut TablesWriter) -> Result<T, E>,
    ) -> Result<T, E> {
        let saved = (self.work.clone(), self.routes.clone());
        let r = f(self);
        if r.is_err() {
            (self.work, self.routes) = saved;
        }
        r
    }

    /// Makes the working copy visible to readers; returns its version. Frees old
    /// snapshots that no reader holds any more.
    pub fn publish(&mut self) -> u64 {
        self.work.version += 1;
        let old = self.shared.swap(Arc::new(self.work.clone()));
        self.retired.push(old);
        self.reclaim();
        self.work.version
    }

    /// Frees retired snapshots no reader holds; returns how many are still held.
    pub fn reclaim(&mut self) -> usize {
        self.retired.retain(|s| Arc::strong_count(s) > 1);
        self.retired.len()
    }

    /// Sets node-wide settings.
    pub fn set_global(&mut self, g: GlobalConfig) -> Result<(), TableError> {
        if g.encap_priority.is_empty() {
            return Err(TableError::Invalid(
                "encapsulation priority list is empty".into(),
            ));
        }
        self.work.global = Arc::new(g);
        Ok(())
    }

    /// Creates (or keeps) a VRF.
    pub fn add_vrf(&mut self, id: VrfId) -> Result<(), TableError> {
        check_range("vrf", id.0, self.work.vrfs.capacity())?;
        if self.work.vrfs.get(id.0).is_none() {
            self.routes.insert(id, Arc::new(VrfRoutes::default()));
            self.sync_vrf(id);
        }
        Ok(())
    }

    /// Deletes a VRF that no interface or VNI uses, with its routes.
    pub fn del_vrf(&mut self, id: VrfId) -> Result<(), TableError> {
        if self.work.vrfs.get(id.0).is_none() {
            return Err(TableError::NoVrf(id));
        }
        if let Some((_, v)) = self.work.vifs.iter().find(|(_, v)| v.vrf == id) {
            return Err(TableError::InUse {
                what: id.to_string(),
                by: v.id.to_string(),
            });
        }
        if let Some((vni, _)) = self.work.vnis.iter().find(|(_, v)| **v == id) {
            return Err(TableError::InUse {
                what: id.to_string(),
                by: format!("vni {vni}"),
            });
        }
        self.routes.remove(&id);
        self.work.vrfs.remove(id.0);
        Ok(())
    }

    fn sync_vrf(&mut self, id: VrfId) {
        let r = &self.routes[&id];
        let vrf = Vrf {
            id,
            v4: r.v4.snapshot(),
            v6: r.v6.snapshot(),
            bridge: Arc::new(r.bridge.clone()),
            generation: r.generation,
        };
        // In range: checked when the VRF was added.
        let _ = self.work.vrfs.set(id.0, Arc::new(vrf));
    }

    /// Adds or replaces an interface; its VRF must exist.
    pub fn add_vif(&mut self, vif: Vif) -> Result<(), TableError> {
        check_range("vif", vif.id.0, self.work.vifs.capacity())?;
        if self.work.vrfs.get(vif.vrf.0).is_none() {
            return Err(TableError::NoVrf(vif.vrf));
        }
        let changed = self
            .work
            .vifs
            .get(vif.id.0)
            .is_some_and(|old| old.policy != vif.policy || old.attr != vif.attr);
        if changed {
            self.policy_changed();
        }
        let _ = self.work.vifs.set(vif.id.0, Arc::new(vif));
        Ok(())
    }

    /// Deletes an interface that no nexthop uses.
    pub fn del_vif(&mut self, id: VifId) -> Result<Arc<Vif>, TableError> {
        if self.work.vifs.get(id.0).is_none() {
            return Err(TableError::NoVif(id));
        }
        self.unused(id.to_string(), |(_, vifs)| vifs.contains(&id))?;
        self.work.vifs.remove(id.0).ok_or(TableError::NoVif(id))
    }

    /// Refuses (`InUse`) when a nexthop's references satisfy `uses`.
    fn unused(
        &self,
        what: String,
        uses: impl Fn(&(Vec<NhId>, Vec<VifId>)) -> bool,
    ) -> Result<(), TableError> {
        match self
            .work
            .nexthops
            .iter()
            .find(|(_, nh)| uses(&nh.references()))
        {
            Some((by, _)) => Err(TableError::InUse {
                what,
                by: NhId(by).to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Adds or replaces a nexthop; the interfaces and nexthops it names must exist.
    pub fn set_nexthop(&mut self, id: NhId, nh: Nexthop) -> Result<(), TableError> {
        check_range("nexthop", id.0, self.work.nexthops.capacity())?;
        let (nhs, vifs) = nh.references();
        if let Some(v) = vifs.iter().find(|v| self.work.vifs.get(v.0).is_none()) {
            return Err(TableError::NoVif(*v));
        }
        if let Some(n) = nhs.iter().find(|n| self.work.nexthops.get(n.0).is_none()) {
            return Err(TableError::NoNexthop(*n));
        }
        if nhs.contains(&id) {
            return Err(TableError::Invalid(format!("{id} cannot contain itself")));
        }
        let peer = match &nh {
            Nexthop::Tunnel(t) => Some(t.dst),
            _ => None,
        };
        if let Some(old) = self.work.nexthops.set(id.0, Arc::new(nh)).ok().flatten() {
            self.forget_peer(&old);
        }
        if let Some(p) = peer {
            *Arc::make_mut(&mut self.work.tunnel_peers)
                .entry(p)
                .or_insert(0) += 1;
        }
        Ok(())
    }

    /// Deletes a nexthop. Routes and flows that still name it drop their packets with
    /// the "invalid nexthop" reason until they are changed.
    pub fn del_nexthop(&mut self, id: NhId) -> Result<Arc<Nexthop>, TableError> {
        self.unused(id.to_string(), |(nhs, _)| nhs.contains(&id))?;
        let old = self
            .work
            .nexthops
            .remove(id.0)
            .ok_or(TableError::NoNexthop(id))?;
        self.forget_peer(&old);
        Ok(old)
    }

    /// Drops a removed or replaced nexthop's count of its tunnel peer.
    fn forget_peer(&mut self, old: &Nexthop) {
        if let Nexthop::Tunnel(t) = old {
            let peers = Arc::make_mut(&mut self.work.tunnel_peers);
            if let Some(n) = peers.get_mut(&t.dst) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&t.dst);
                }
            }
        }
    }

    /// A free nexthop index.
    pub fn free_nexthop(&self) -> Option<NhId> {
        self.work.nexthops.first_free().map(NhId)
    }

    /// Adds or replaces a route.
    pub fn add_route(
        &mut self,
        vrf: VrfId,
        prefix: IpAddr,
        len: u8,
        entry: RouteEntry,
    ) -> Result<Option<RouteEntry>, TableError> {
        if self.work.nexthops.get(entry.nh.0).is_none() {
            return Err(TableError::NoNexthop(entry.nh));
        }
        let r = Arc::make_mut(self.routes.get_mut(&vrf).ok_or(TableError::NoVrf(vrf))?);
        let old = match prefix {
            IpAddr::V4(a) => r.v4.insert(a.octets(), len, entry)?,
            IpAddr::V6(a) => r.v6.insert(a.octets(), len, entry)?,
        };
        r.generation = r.generation.wrapping_add(1);
        self.sync_vrf(vrf);
        Ok(old)
    }

    /// Removes a route.
    pub fn del_route(
        &mut self,
        vrf: VrfId,
        prefix: IpAddr,
        len: u8,
    ) -> Result<RouteEntry, TableError> {
        let r = Arc::make_mut(self.routes.get_mut(&vrf).ok_or(TableError::NoVrf(vrf))?);
        let old = match prefix {
            IpAddr::V4(a) => r.v4.remove(a.octets(), len),
            IpAddr::V6(a) => r.v6.remove(a.octets(), len),
        }
        .ok_or_else(|| TableError::Invalid(format!("no route {prefix}/{len} in {vrf}")))?;
        r.generation = r.generation.wrapping_add(1);
        self.sync_vrf(vrf);
        Ok(old)
    }

    /// Routes of a VRF, IPv4 then IPv6, for dumps.
    pub fn routes(&self, vrf: VrfId) -> Option<Vec<(IpAddr, u8, RouteEntry)>> {
        let r = self.routes.get(&vrf)?;
        let mut out: Vec<_> =
            r.v4.routes()
                .map(|(a, l, e)| (IpAddr::from(*a), l, *e))
                .collect();
        out.extend(r.v6.routes().map(|(a, l, e)| (IpAddr::from(*a), l, *e)));
        Some(out)
    }

    /// Adds or replaces a bridge entry.
    pub fn add_bridge(
        &mut self,
        vrf: VrfId,
        mac: MacAddr,
        entry: RouteEntry,
    ) -> Result<(), TableError> {
        if self.work.nexthops.get(entry.nh.0).is_none() {
            return Err(TableError::NoNexthop(entry.nh));
        }
        let r = Arc::make_mut(self.routes.get_mut(&vrf).ok_or(TableError::NoVrf(vrf))?);
        r.bridge.insert(mac, entry);
        self.sync_vrf(vrf);
        Ok(())
    }

    /// Maps an MPLS label to a nexthop.
    pub fn set_label(&mut self, label: u32, nh: NhId) -> Result<(), TableError> {
        check_range("label", label, self.work.labels.capacity())?;
        if self.work.nexthops.get(nh.0).is_none() {
            return Err(TableError::NoNexthop(nh));
        }
        let _ = self.work.labels.set(label, nh);
        Ok(())
    }

    /// Removes a label.
    pub fn del_label(&mut self, label: u32) -> Result<NhId, TableError> {
        self.work
            .labels
            .remove(label)
            .ok_or_else(|| TableError::Invalid(format!("label {label} is not mapped")))
    }

    /// Maps a VXLAN VNI to a VRF.
    pub fn set_vni(&mut self, vni: u32, vrf: VrfId) -> Result<(), TableError> {
        if vni > crate::wire::vxlan::MAX_VNI {
            return Err(TableError::OutOfRange {
                what: "vni",
                id: vni,
                capacity: crate::wire::vxlan::MAX_VNI + 1,
            });
        }
        if self.work.vrfs.get(vrf.0).is_none() {
            return Err(TableError::NoVrf(vrf));
        }
        Arc::make_mut(&mut self.work.vnis).insert(vni, vrf);
        Ok(())
    }

    /// Removes a VNI.
    pub fn del_vni(&mut self, vni: u32) -> Result<VrfId, TableError> {
        Arc::make_mut(&mut self.work.vnis)
            .remove(&vni)
            .ok_or_else(|| TableError::Invalid(format!("vni {vni} is not mapped")))
    }

    /// Sets endpoint attributes (tags are sorted here).
    pub fn set_attr(&mut self, id: u32, mut attr: EndpointAttr) -> Result<(), TableError> {
        check_range("attr", id, self.work.attrs.capacity())?;
        attr.tags.sort_unstable();
        attr.tags.dedup();
        if self.work.attrs.get(id).is_some_and(|old| **old != attr) {
            self.policy_changed();
        }
        let _ = self.work.attrs.set(id, Arc::new(attr));
        Ok(())
    }

    fn policy_changed(&mut self) {
        self.work.policy_gen = self.work.policy_gen.wrapping_add(1);
    }

    /// Deletes an endpoint attribute record (vifs and routes that still name it then
    /// match as the empty record).
    pub fn del_attr(&mut self, id: u32) -> Result<(), TableError> {
        self.work
            .attrs
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| TableError::Invalid(format!("attr {id} is not set")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::vif::VifKind;

    fn vif(id: u32, vrf: u32) -> Vif {
        Vif {
            id: VifId(id),
            name: format!("tap{id}"),
            kind: VifKind::Virtual,
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            vrf: VrfId(vrf),
            ip4: None,
            ip6: None,
            mtu: 1500,
            policy: None,
            attr: 0,
            vm_mac: None,
            allowed: Vec::new(),
        }
    }

    fn small() -> TableSizes {
        TableSizes {
            vifs: 16,
            vrfs: 8,
            nexthops: 64,
            labels: 1024,
            attrs: 16,
        }
    }

    #[test]
    fn references_are_validated_and_refusals_change_nothing() {
        let mut w = TablesWriter::new(small());
        assert_eq!(w.add_vif(vif(1, 3)), Err(TableError::NoVrf(VrfId(3))));
        w.add_vrf(VrfId(3)).unwrap();
        w.add_vif(vif(1, 3)).unwrap();
        let nh = Nexthop::Encap {
            vif: VifId(2),
            dmac: MacAddr::ZERO,
            smac: MacAddr::ZERO,
        };
        assert_eq!(w.set_nexthop(NhId(5), nh), Err(TableError::NoVif(VifId(2))));
        assert!(w.tables().nexthops.get(5).is_none());
        let nh = Nexthop::Encap {
            vif: VifId(1),
            dmac: MacAddr::ZERO,
            smac: MacAddr::ZERO,
        };
        w.set_nexthop(NhId(5), nh).unwrap();
        let e = RouteEntry {
            nh: NhId(6),
            label: 0,
            attr: 0,
        };
        assert_eq!(
            w.add_route(VrfId(3), "10.0.0.0".parse().unwrap(), 8, e),
            Err(TableError::NoNexthop(NhId(6)))
        );
        assert!(matches!(w.del_vif(VifId(1)), Err(TableError::InUse { .. })));
        assert!(matches!(w.del_vrf(VrfId(3)), Err(TableError::InUse { .. })));
        assert!(matches!(
            w.set_nexthop(NhId(64), Nexthop::Discard),
            Err(TableError::OutOfRange { capacity: 64, .. })
        ));
        assert!(matches!(
            w.set_label(1024, NhId(5)),
            Err(TableError::OutOfRange { .. })
        ));
        let e = RouteEntry {
            nh: NhId(5),
            label: 0,
            attr: 0,
        };
        assert!(matches!(
            w.add_route(VrfId(3), "10.0.0.0".parse().unwrap(), 40, e),
            Err(TableError::Prefix(_))
        ));
    }

    #[test]
    fn readers_see_a_snapshot_until_publish_and_old_ones_are_reclaimed() {
        let mut w = TablesWriter::new(small());
        let mut r = w.reader();
        w.add_vrf(VrfId(1)).unwrap();
        w.set_nexthop(NhId(1), Nexthop::Discard).unwrap();
        assert!(r.load().vrfs.get(1).is_none(), "not published yet");
        let v = w.publish();
        let snap = Arc::clone(r.load());
        assert_eq!(snap.version, v);
        let e = RouteEntry {
            nh: NhId(1),
            label: 0,
            attr: 0,
        };
        w.add_route(VrfId(1), "10.0.0.0".parse().unwrap(), 8, e)
            .unwrap();
        w.publish();
        // The held snapshot still has no route and its old generation.
        let vrf_old = snap.vrfs.get(1).unwrap();
        assert!(vrf_old.lookup("10.1.1.1".parse().unwrap()).is_none());
        let vrf_new = Arc::clone(r.load().vrfs.get(1).unwrap());
        assert_eq!(vrf_new.lookup("10.1.1.1".parse().unwrap()), Some(e));
        assert_ne!(vrf_old.generation, vrf_new.generation);
        assert!(w.reclaim() >= 1, "the snapshot we hold is kept");
        drop(snap);
        assert_eq!(w.reclaim(), 0, "nothing holds old snapshots any more");
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let mut w = TablesWriter::new(small());
        w.add_vrf(VrfId(1)).unwrap();
        w.set_nexthop(NhId(1), Nexthop::Discard).unwrap();
        let e = RouteEntry {
            nh: NhId(1),
            label: 0,
            attr: 0,
        };
        w.add_route(VrfId(1), "10.0.0.0".parse().unwrap(), 8, e)
            .unwrap();
        let r: Result<(), TableError> = w.transaction(|w| {
            w.del_route(VrfId(1), "10.0.0.0".parse().unwrap(), 8)?;
            w.add_vrf(VrfId(2))?;
            w.set_nexthop(NhId(2), Nexthop::Discard)?;
            w.add_route(
                VrfId(1),
                "10.1.0.0".parse().unwrap(),
                16,
                RouteEntry { nh: NhId(9), ..e },
            )?;
            Ok(())
        });
        assert_eq!(r, Err(TableError::NoNexthop(NhId(9))));
        assert!(w.tables().vrfs.get(2).is_none());
        assert!(w.tables().nexthops.get(2).is_none());
        assert_eq!(
            w.routes(VrfId(1)).unwrap().len(),
            1,
            "the deleted route is back"
        );
        let ok: Result<(), TableError> = w.transaction(|w| w.add_vrf(VrfId(2)));
        assert!(ok.is_ok() && w.tables().vrfs.get(2).is_some());
    }

    #[test]
    fn labels_vnis_and_attrs() {
        let mut w = TablesWriter::new(small());
        w.add_vrf(VrfId(2)).unwrap();
        w.set_nexthop(NhId(1), Nexthop::Discard).unwrap();
        w.set_label(16, NhId(1)).unwrap();
        w.set_vni(5000, VrfId(2)).unwrap();
        assert!(w.set_vni(1 << 24, VrfId(2)).is_err());
        w.set_attr(
            3,
            EndpointAttr {
                vn: 9,
                tags: vec![5, 1, 5],
            },
        )
        .unwrap();
        w.publish();
        let s = w.reader().load().clone();
        assert_eq!(s.labels.get(16), Some(&NhId(1)));
        assert_eq!(s.vnis.get(&5000), Some(&VrfId(2)));
        assert_eq!(s.attr(3).tags, vec![1, 5]);
        assert_eq!(s.attr(99).vn, 0);
        assert!(matches!(w.del_vrf(VrfId(2)), Err(TableError::InUse { .. })));
        w.del_vni(5000).unwrap();
        w.del_vrf(VrfId(2)).unwrap();
    }
}
