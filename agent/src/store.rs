//! The configuration database. Every change is validated against the current state and
//! applied to the in-memory indexes; a batch that fails anywhere is rolled back, so a
//! refused request changes nothing. Errors are gRPC statuses whose message names the
//! object and the field.
//!
//! Invariants kept by [`Db::put`], the only place that changes the maps: every stored
//! reference and every parent points at a stored object (deletes of referenced objects
//! are refused), FQ names are unique per type, and an address is held by at most one
//! instance-ip or floating-ip per subnet space.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use tonic::Status;

use crate::kinds::{Kind, fq_string, kind_of, meta, meta_mut, ref_uuids, refs_mut};
use crate::proto::{self, Object, Ref, object};

/// The response metadata key of a refused batch that holds the index of the refused change.
pub const CHANGE_INDEX: &str = "vnc-change-index";

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn from_bits(v: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4((v as u32).into())
    } else {
        IpAddr::V6(v.into())
    }
}

impl Net {
    /// Parses `a.b.c.d/len` (host bits must be zero).
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix (a.b.c.d/len)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let len: u8 = l.parse().map_err(|_| format!("{s:?}: bad length"))?;
        let (v, w) = bits(addr);
        if len > w {
            return Err(format!("{s:?}: length above {w}"));
        }
        if v & !Net::mask(len, w) != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(Net { addr, len })
    }

    fn mask(len: u8, width: u8) -> u128 {
        if len == 0 {
            0
        } else {
            (u128::MAX << (128 - u32::from(len))) >> (128 - u32::from(width))
        }
    }

    /// Whether `a` is inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        let (n, w) = bits(self.addr);
        let (v, w2) = bits(a);
        w == w2 && v & Net::mask(self.len, w) == n
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, o: &Net) -> bool {
        self.contains(o.addr) || o.contains(self.addr)
    }

    /// The `i`-th address (0 = the network address), if inside.
    pub fn nth(&self, i: u128) -> Option<IpAddr> {
        let (n, w) = bits(self.addr);
        let size = if u32::from(w - self.len) >= 128 {
            u128::MAX
        } else {
            1u128 << (w - self.len)
        };
        (i < size).then(|| from_bits(n + i, w))
    }

    /// Number of addresses (saturating).
    pub fn size(&self) -> u128 {
        let w = bits(self.addr).1;
        1u128
            .checked_shl(u32::from(w - self.len))
            .unwrap_or(u128::MAX)
    }

    /// Whether `a` can be given to an interface: not the network address, nor the
    /// IPv4 broadcast address.
    pub fn usable(&self, a: IpAddr) -> bool {
        let (v, w) = bits(a);
        let (n, _) = bits(self.addr);
        let last = n + (self.size() - 1);
        self.contains(a) && (self.size() <= 2 || (v != n && !(w == 32 && v == last)))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A subnet of a VN as resolved: where it came from and its gateway / DNS addresses.
#[derive(Debug, Clone)]
pub struct VnSubnet {
    /// The prefix.
    pub net: Net,
    /// Gateway (answered by the vrouter).
    pub gateway: IpAddr,
    /// DNS server address.
    pub dns: IpAddr,
    /// Address space the subnet belongs to: the VN, or a flat-subnet IPAM shared by VNs.
    pub space: String,
}

/// One change of a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create an object.
    Create(Object),
    /// Replace an object (found by UUID or FQ name).
    Update(Object),
    /// Delete an object.
    Delete(Ref),
}

/// What happened to an object, for watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// 0 added, 1 modified, 2 deleted (the proto enum's values).
    pub kind: i32,
    /// The object (its last state for deletes).
    pub object: Object,
    /// Revision after the batch.
    pub revision: u64,
}

/// The outcome of an applied batch.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// Per change, the stored object (none for deletes).
    pub objects: Vec<Option<Object>>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// UUIDs whose stored state changed (to persist).
    pub touched: Vec<String>,
    /// The new revision.
    pub revision: u64,
    /// How to take the batch back ([`Db::rollback`]).
    pub undo: Vec<(String, Option<Object>)>,
}

/// The in-memory configuration database.
#[derive(Debug, Default)]
pub struct Db {
    objs: HashMap<String, Object>,
    by_fq: HashMap<(Kind, Vec<String>), String>,
    back: HashMap<String, BTreeSet<String>>,
    ips: HashMap<(String, IpAddr), String>,
    ip_of: HashMap<String, (String, IpAddr)>,
    /// Where the last allocation in an address space ended, to start the next one there.
    hint: HashMap<String, u128>,
    revision: u64,
}

fn invalid(o: &str, field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{o}: {field}: {why}"))
}

/// The display name of an object for messages: `virtual-network a:b:c`.
pub fn label(o: &Object) -> String {
    let k = kind_of(o).map_or("object", Kind::name);
    let (u, fq) = meta(o);
    if fq.is_empty() {
        format!("{k} {u}")
    } else {
        format!("{k} {}", fq_string(fq))
    }
}

impl Db {
    /// An empty database.
    pub fn new() -> Db {
        Db::default()
    }

    /// The revision (bumped by each applied batch).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Sets the revision (when loading).
    pub fn set_revision(&mut self, r: u64) {
        self.revision = r;
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }

    /// An object by UUID.
    pub fn get(&self, uuid: &str) -> Option<&Object> {
        self.objs.get(uuid)
    }

    /// An object by type and FQ name.
    pub fn by_fq(&self, kind: Kind, fq: &[String]) -> Option<&Object> {
        self.by_fq
            .get(&(kind, fq.to_vec()))
            .and_then(|u| self.objs.get(u))
    }

    /// All objects of a type, in FQ-name order.
    pub fn list(&self, kind: Kind) -> Vec<&Object> {
        let mut v: Vec<&Object> = self
            .objs
            .values()
            .filter(|o| kind_of(o) == Some(kind))
            .collect();
        v.sort_by(|a, b| meta(a).1.cmp(meta(b).1));
        v
    }

    /// Every object.
    pub fn all(&self) -> impl Iterator<Item = &Object> {
        self.objs.values()
    }

    /// UUIDs of the objects that refer to `uuid` or are its children.
    pub fn referrers(&self, uuid: &str) -> impl Iterator<Item = &String> {
        self.back.get(uuid).into_iter().flatten()
    }

    /// Resolves a reference to a stored object of type `want` (any type when none).
    pub fn resolve(&self, r: &Ref, want: Option<Kind>) -> Result<&Object, String> {
        let kind = match (want, r.r#type.as_str()) {
            (w, "") => w,
            (w, t) => {
                let k = Kind::from_name(t).ok_or_else(|| format!("unknown type {t:?}"))?;
                if w.is_some_and(|w| w != k) {
                    return Err(format!(
                        "refers to a {t}, not a {}",
                        w.map_or("", Kind::name)
                    ));
                }
                Some(k)
            }
        };
        if !r.uuid.is_empty() {
            let o = self
                .objs
                .get(&r.uuid)
                .ok_or_else(|| format!("{} does not exist", r.uuid))?;
            if let Some(k) = kind
                && kind_of(o) != Some(k)
            {
                return Err(format!("{} is a {}, not a {}", r.uuid, label(o), k.name()));
            }
            if !r.fq_name.is_empty() && r.fq_name.as_slice() != meta(o).1 {
                return Err(format!(
                    "uuid {} and fq_name {} name different objects",
                    r.uuid,
                    fq_string(&r.fq_name)
                ));
            }
            return Ok(o);
        }
        let Some(k) = kind else {
            return Err("a reference by fq_name needs the type".into());
        };
        if r.fq_name.is_empty() {
            return Err("neither uuid nor fq_name given".into());
        }
        self.by_fq(k, &r.fq_name)
            .ok_or_else(|| format!("{} {} does not exist", k.name(), fq_string(&r.fq_name)))
    }

    /// The subnets of a VN: its user-defined ones, and those of its flat-subnet IPAMs.
    pub fn vn_subnets(&self, vn: &proto::VirtualNetwork) -> Vec<VnSubnet> {
        let mut out = Vec::new();
        for r in &vn.network_ipam_refs {
            let ipam = r
                .ipam
                .as_ref()
                .and_then(|i| self.objs.get(&i.uuid))
                .and_then(|o| match &o.kind {
                    Some(object::Kind::NetworkIpam(i)) => Some(i),
                    _ => None,
                });
            let flat = ipam.is_some_and(|i| i.ipam_subnet_method == "flat-subnet");
            let (subnets, space) = match ipam {
                Some(i) if flat => (&i.ipam_subnets, i.uuid.clone()),
                _ => (&r.subnets, vn.uuid.clone()),
            };
            for s in subnets {
                if let Ok(net) = Net::parse(&s.prefix) {
                    let gateway = s.gateway.parse().ok().or_else(|| net.nth(1));
                    let dns = s.dns_server.parse().ok().or_else(|| net.nth(2));
                    if let (Some(gateway), Some(dns)) = (gateway, dns) {
                        out.push(VnSubnet {
                            net,
                            gateway,
                            dns,
                            space: space.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// A VN by UUID.
    pub fn vn(&self, uuid: &str) -> Option<&proto::VirtualNetwork> {
        match self.objs.get(uuid).map(|o| &o.kind) {
            Some(Some(object::Kind::VirtualNetwork(v))) => Some(v),
            _ => None,
        }
    }

    /// Who holds an address in a space.
    pub fn ip_owner(&self, space: &str, a: IpAddr) -> Option<&String> {
        self.ips.get(&(space.to_string(), a))
    }

    /// Replaces the stored state of `uuid` (none: deleted), keeping every index right;
    /// returns the previous state. Used by batches and their rollback, and by loading.
    pub fn put(&mut self, uuid: &str, new: Option<Object>) -> Option<Object> {
        let old = self.objs.remove(uuid);
        if let Some(o) = &old {
            let (_, fq) = meta(o);
            if let Some(k) = kind_of(o) {
                self.by_fq.remove(&(k, fq.to_vec()));
            }
            for t in self.targets(o) {
                if let Some(s) = self.back.get_mut(&t) {
                    s.remove(uuid);
                    if s.is_empty() {
                        self.back.remove(&t);
                    }
                }
            }
            if let Some(key) = self.ip_of.remove(uuid) {
                self.ips.remove(&key);
            }
        }
        if let Some(o) = new {
            let (_, fq) = meta(&o);
            if let Some(k) = kind_of(&o) {
                self.by_fq.insert((k, fq.to_vec()), uuid.to_string());
            }
            for t in self.targets(&o) {
                self.back.entry(t).or_default().insert(uuid.to_string());
            }
            if let Some(key) = self.ip_key(&o) {
                self.ips.insert(key.clone(), uuid.to_string());
                self.ip_of.insert(uuid.to_string(), key);
            }
            self.objs.insert(uuid.to_string(), o);
        }
        old
    }

    /// Referenced objects and the parent.
    fn targets(&self, o: &Object) -> Vec<String> {
        let mut t = ref_uuids(o);
        if let Some(p) = self.parent_uuid(o) {
            t.push(p);
        }
        t
    }

    fn parent_uuid(&self, o: &Object) -> Option<String> {
        let k = kind_of(o)?;
        let fq = meta(o).1;
        let pk = k.parent(fq.len())?;
        self.by_fq.get(&(pk, fq[..fq.len() - 1].to_vec())).cloned()
    }

    /// The address an object holds and the space it is unique in.
    fn ip_key(&self, o: &Object) -> Option<(String, IpAddr)> {
        let (vn, addr) = match &o.kind {
            Some(object::Kind::InstanceIp(i)) => (
                i.virtual_network_ref.as_ref()?.uuid.clone(),
                i.instance_ip_address.parse().ok()?,
            ),
            Some(object::Kind::Loadbalancer(lb)) => (
                lb.virtual_network_ref.as_ref()?.uuid.clone(),
                lb.vip_address.parse().ok()?,
            ),
            Some(object::Kind::FloatingIp(f)) => {
                let pool = self.parent_uuid(o)?;
                let vn = self.parent_uuid(self.objs.get(&pool)?)?;
                (vn, f.floating_ip_address.parse().ok()?)
            }
            _ => return None,
        };
        let vn = self.vn(&vn)?;
        let s = self
            .vn_subnets(vn)
            .into_iter()
            .find(|s| s.net.contains(addr))?;
        Some((s.space, addr))
    }

    /// Applies a batch: all changes or none. A refused batch's status names the change
    /// that was refused in its [`CHANGE_INDEX`] metadata.
    pub fn apply(&mut self, changes: Vec<Change>) -> Result<Committed, Status> {
        let mut undo: Vec<(String, Option<Object>)> = Vec::new();
        let mut out = Committed::default();
        for (i, c) in changes.into_iter().enumerate() {
            match self.apply_one(c, &mut undo, &mut out) {
                Ok(()) => {}
                Err(e) => {
                    for (u, old) in undo.into_iter().rev() {
                        self.put(&u, old);
                    }
                    let msg = if i > 0 || !out.objects.is_empty() {
                        format!("change {i}: {}", e.message())
                    } else {
                        e.message().to_string()
                    };
                    // Which change was refused, for a client that applies the rest
                    // without it (kube-manager: one bad object stops nothing else).
                    let mut md = tonic::metadata::MetadataMap::new();
                    md.insert(CHANGE_INDEX, tonic::metadata::MetadataValue::from(i as u64));
                    return Err(Status::with_metadata(e.code(), msg, md));
                }
            }
        }
        self.revision += 1;
        out.revision = self.revision;
        for e in &mut out.events {
            e.revision = self.revision;
        }
        let mut seen = BTreeSet::new();
        out.touched = undo
            .iter()
            .map(|(u, _)| u.clone())
            .filter(|u| seen.insert(u.clone()))
            .collect();
        out.undo = undo;
        Ok(out)
    }

    /// Takes back an applied batch (when it could not be made durable).
    pub fn rollback(&mut self, c: Committed) {
        for (u, old) in c.undo.into_iter().rev() {
            self.put(&u, old);
        }
        self.revision -= 1;
    }

    fn apply_one(
        &mut self,
        c: Change,
        undo: &mut Vec<(String, Option<Object>)>,
        out: &mut Committed,
    ) -> Result<(), Status> {
        match c {
            Change::Create(mut o) => {
                let kind =
                    kind_of(&o).ok_or_else(|| Status::invalid_argument("object: no type set"))?;
                let (uuid, fq) = meta_mut(&mut o).expect("typed");
                if uuid.is_empty() {
                    *uuid = uuid::Uuid::new_v4().to_string();
                } else if uuid::Uuid::parse_str(uuid).is_err() {
                    return Err(invalid(
                        kind.name(),
                        "uuid",
                        format!("{uuid:?} is not a UUID"),
                    ));
                }
                let uuid = uuid.clone();
                let fq = fq.clone();
                if self.objs.contains_key(&uuid) {
                    return Err(Status::already_exists(format!(
                        "{} {}: uuid {uuid} is taken",
                        kind.name(),
                        fq_string(&fq)
                    )));
                }
                if let Some(other) = self.by_fq.get(&(kind, fq.clone())) {
                    return Err(Status::already_exists(format!(
                        "{} {}: fq_name is taken (uuid {other})",
                        kind.name(),
                        fq_string(&fq)
                    )));
                }
                self.check(kind, &mut o, None)?;
                undo.push((uuid.clone(), self.put(&uuid, Some(o.clone()))));
                out.events.push(Event {
                    kind: 0,
                    object: o.clone(),
                    revision: 0,
                });
                out.objects.push(Some(o));
            }
            Change::Update(mut o) => {
                let kind =
                    kind_of(&o).ok_or_else(|| Status::invalid_argument("object: no type set"))?;
                let (uuid, fq) = meta(&o);
                let r = Ref {
                    r#type: kind.name().into(),
                    uuid: uuid.to_string(),
                    fq_name: if uuid.is_empty() { fq.to_vec() } else { vec![] },
                };
                let old = self
                    .resolve(&r, Some(kind))
                    .map_err(|e| Status::not_found(format!("{}: {e}", kind.name())))?
                    .clone();
                let (old_uuid, old_fq) = meta(&old);
                let (old_uuid, old_fq) = (old_uuid.to_string(), old_fq.to_vec());
                {
                    let (u, f) = meta_mut(&mut o).expect("typed");
                    if !f.is_empty() && *f != old_fq {
                        return Err(invalid(
                            &label(&old),
                            "fq_name",
                            "cannot change (delete and create instead)",
                        ));
                    }
                    *u = old_uuid.clone();
                    *f = old_fq;
                }
                self.check(kind, &mut o, Some(&old))?;
                undo.push((old_uuid.clone(), self.put(&old_uuid, Some(o.clone()))));
                out.events.push(Event {
                    kind: 1,
                    object: o.clone(),
                    revision: 0,
                });
                out.objects.push(Some(o));
            }
            Change::Delete(r) => {
                let o = self
                    .resolve(&r, None)
                    .map_err(|e| Status::not_found(format!("delete: {e}")))?
                    .clone();
                let uuid = meta(&o).0.to_string();
                if let Some(by) = self.referrers(&uuid).next() {
                    let by = self.objs.get(by).map_or_else(|| by.clone(), label);
                    return Err(Status::failed_precondition(format!(
                        "{}: still referred to by {by}",
                        label(&o)
                    )));
                }
                undo.push((uuid.clone(), self.put(&uuid, None)));
                out.events.push(Event {
                    kind: 2,
                    object: o,
                    revision: 0,
                });
                out.objects.push(None);
            }
        }
        Ok(())
    }

    /// Validates an object about to be stored (normalising references, filling defaults
    /// and assigned fields). `old` is the stored version for an update.
    fn check(&mut self, kind: Kind, o: &mut Object, old: Option<&Object>) -> Result<(), Status> {
        let name = label(o);
        let fq = meta(o).1.to_vec();
        if !kind.fq_lengths().contains(&fq.len()) {
            return Err(invalid(
                &name,
                "fq_name",
                format!("needs {:?} parts, has {}", kind.fq_lengths(), fq.len()),
            ));
        }
        if fq.iter().any(|p| p.is_empty() || p.contains(':')) {
            return Err(invalid(
                &name,
                "fq_name",
                "parts are non-empty and have no ':'",
            ));
        }
        if let Some(pk) = kind.parent(fq.len())
            && self.by_fq(pk, &fq[..fq.len() - 1]).is_none()
        {
            return Err(Status::not_found(format!(
                "{name}: parent {} {} does not exist",
                pk.name(),
                fq_string(&fq[..fq.len() - 1])
            )));
        }
        for (field, want, r) in refs_mut(o) {
            let target = self
                .resolve(r, Some(want))
                .map_err(|e| Status::not_found(format!("{name}: {field}: {e}")))?;
            let (u, f) = meta(target);
            r.uuid = u.to_string();
            r.fq_name = f.to_vec();
            r.r#type = want.name().to_string();
        }
        crate::store::check::kind(self, &name, o, old)
    }
}

pub mod check;
pub mod names;
pub mod tags;
