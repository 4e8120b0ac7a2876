//! The reconcile loop: whenever the configuration, the local ports or the remote routes
//! change (and every few seconds regardless), compute the desired vrouter objects, read
//! what the vrouter holds of the agent's (ids from the [`Bases`] up, rule sets named
//! `agent/...`), and apply the difference in dependency order. Nothing else is touched:
//! objects of the vrouter's own start-up configuration stay, and a reconcile after a
//! restart of either process changes only what differs, so established flows keep their
//! nexthops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use vrouter_api::config::{
    AttrCfg, NexthopCfg, NexthopKind, PolicyCfg, RouteCfg, SnatPortsCfg, VifCfg, VifKindCfg, VniCfg,
};
use vrouter_api::control::{Client, Op};

use crate::oper::{self, Bases, Desired, Ids, Node, POLICY_PREFIX, RemoteRoute};
use crate::persist::{PortRec, Store};
use crate::store::Db;

/// Largest batch sent in one request.
const BATCH: usize = 2000;

/// Counters and state of the loop, for the status call and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connected to the vrouter now.
    pub connected: AtomicBool,
    /// Config revision the vrouter reflects.
    pub programmed_revision: AtomicU64,
    /// Change generation the vrouter reflects.
    pub programmed_generation: AtomicU64,
    /// Reconciles done.
    pub reconciles: AtomicU64,
    /// Operations sent to the vrouter.
    pub ops: AtomicU64,
    /// Reconciles that failed.
    pub failures: AtomicU64,
    /// The last error.
    pub last_error: Mutex<String>,
    /// AddPort requests refused for their device (off the allow-list).
    pub refused_devices: AtomicU64,
    /// Route values from etcd refused (malformed, under another node's key, out of range).
    pub refused_routes: AtomicU64,
    /// Configuration values from etcd refused (not an object, under another key).
    pub refused_config: AtomicU64,
    /// Commits to the cluster's configuration checked again after losing a race.
    pub config_retries: AtomicU64,
    /// Routes of nodes whose agent went away, kept for the graceful period.
    pub stale_routes: AtomicU64,
}

/// State shared by the API, the loop and the route exchange.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub db: RwLock<Db>,
    /// The on-disk store.
    pub store: Store,
    /// Local ports by VMI.
    pub ports: Mutex<BTreeMap<String, PortRec>>,
    /// Routes other nodes publish.
    pub remote: Mutex<Vec<RemoteRoute>>,
    /// Whether the route exchange has read the other nodes' routes once (the loop's
    /// first reconcile waits for it: a restarted agent must not take out of its vrouter
    /// the routes that carry established flows before it knows them again).
    pub routes_learned: AtomicBool,
    /// The last desired state computed (ports for the API, routes to publish).
    pub desired: Mutex<Desired>,
    /// Bumped by every change; the loop runs when it moves.
    pub generation: Mutex<u64>,
    wake: Condvar,
    /// Loop counters.
    pub stats: Stats,
    /// Ports the vrouter refused (the device could not be set up), with why; such a port
    /// is dropped from the local ports.
    pub port_errors: Mutex<BTreeMap<String, String>>,
    /// Set to end the loop.
    pub stop: AtomicBool,
    /// The SNAT ranges reserved in the host's kernel last.
    pub reserved: Mutex<Option<SnatPortsCfg>>,
    /// Who may call what on the API (and how many calls it refused).
    pub auth: Arc<crate::auth::Policy>,
}

impl Shared {
    /// Shared state over a loaded store.
    pub fn new(store: Store) -> Result<Shared> {
        let db = store.load().context("loading the configuration")?;
        let ports = store.ports().context("loading the ports")?;
        Ok(Shared {
            db: RwLock::new(db),
            store,
            ports: Mutex::new(ports),
            remote: Mutex::new(Vec::new()),
            routes_learned: AtomicBool::new(false),
            desired: Mutex::new(Desired::default()),
            generation: Mutex::new(0),
            wake: Condvar::new(),
            stats: Stats::default(),
            port_errors: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            auth: Arc::new(crate::auth::Policy::new(Vec::new(), crate::auth::own_uid())),
            reserved: Mutex::new(None),
        })
    }

    /// Something changed: run the loop. Returns the change's generation.
    pub fn kick(&self) -> u64 {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
        self.wake.notify_all();
        *g
    }

    /// Waits until the loop has programmed generation `g` (or `timeout` passes).
    pub fn wait_programmed(&self, g: u64, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if self.stats.programmed_generation.load(Ordering::Acquire) >= g {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The vrouter's control socket.
    pub socket: PathBuf,
    /// Id bases.
    pub bases: Bases,
    /// The vrouter MAC VMs see.
    pub vrouter_mac: String,
    /// Node address when the vrouter has no fabric vif.
    pub node_ip: Option<Ipv4Addr>,
    /// The fabric gateway's MAC (ip-fabric SNAT).
    pub gateway_mac: Option<String>,
    /// Full resync period.
    pub resync: Duration,
    /// The host's reserved-ports list the SNAT ranges go into (`None`: left alone).
    pub reserved_ports: Option<PathBuf>,
    /// With a route exchange: how long the first reconcile waits for it to have read
    /// the other nodes' routes ([`Shared::routes_learned`]).
    pub first_routes: Option<Duration>,
}

/// Runs the loop until `shared.stop`.
pub fn run(shared: Arc<Shared>, opts: Options) {
    let stored = shared.store.ids().unwrap_or_default();
    let mut ids = Ids::new(opts.bases, stored);
    let mut client: Option<Client> = None;
    let mut seen = u64::MAX;
    // What the vrouter holds after the last successful reconcile; read again after a
    // reconnect, an error, or a quiet resync period (to repair drift).
    let mut cache: Option<(Node, Actual)> = None;
    if let Some(limit) = opts.first_routes {
        let t = std::time::Instant::now();
        while !shared.routes_learned.load(Ordering::Acquire) && !shared.stop.load(Ordering::Relaxed)
        {
            if t.elapsed() >= limit {
                tracing::warn!(
                    "the other nodes' routes are not known after {limit:?} (etcd away?): programming without them"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    while !shared.stop.load(Ordering::Relaxed) {
        let generation = {
            let mut g = shared.generation.lock().unwrap_or_else(|e| e.into_inner());
            if *g == seen {
                let (ng, t) = shared
                    .wake
                    .wait_timeout(g, opts.resync)
                    .unwrap_or_else(|e| e.into_inner());
                g = ng;
                if t.timed_out() {
                    cache = None;
                }
            }
            *g
        };
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if client.is_none() {
            match Client::connect(&opts.socket) {
                Ok(c) => {
                    tracing::info!(socket = %opts.socket.display(), "connected to the vrouter");
                    client = Some(c);
                    cache = None;
                }
                Err(e) => {
                    fail(&shared, format!("vrouter {}: {e}", opts.socket.display()));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected");
        match reconcile(&shared, c, &opts, &mut ids, &mut cache) {
            Ok(n) => {
                seen = generation;
                shared
                    .stats
                    .programmed_generation
                    .store(generation, Ordering::Release);
                shared.stats.connected.store(true, Ordering::Release);
                shared.stats.reconciles.fetch_add(1, Ordering::Relaxed);
                shared.stats.ops.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(ops = n, "vrouter reconciled");
                }
            }
            Err(e) => {
                fail(&shared, format!("{e:#}"));
                client = None;
                cache = None;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn fail(shared: &Shared, why: String) {
    tracing::warn!("{why}");
    shared.stats.connected.store(false, Ordering::Release);
    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
    *shared
        .stats
        .last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = why;
}

fn call(c: &mut Client, op: Op) -> Result<Value> {
    let r = c.call(op).context("vrouter control socket")?;
    if r.ok {
        Ok(r.data.unwrap_or(Value::Null))
    } else {
        let e = r.error.unwrap_or_else(|| vrouter_api::control::ErrorBody {
            code: "unknown".into(),
            message: String::new(),
        });
        Err(anyhow!("vrouter refused: {}: {}", e.code, e.message))
    }
}

fn items<T: serde::de::DeserializeOwned>(v: Vec<Value>) -> Result<Vec<T>> {
    v.into_iter()
        .map(|x| serde_json::from_value(x).context("decoding a vrouter dump"))
        .collect()
}

/// The node's facts from the vrouter: the physical vif.
fn node(c: &mut Client, opts: &Options) -> Result<Node> {
    let vifs: Vec<VifCfg> = items(c.dump_all(|cursor| Op::DumpVifs { cursor })?)?;
    let fabric = vifs.iter().find(|v| v.kind == VifKindCfg::Physical);
    let host = vifs.iter().find(|v| v.kind == VifKindCfg::Host);
    let host_vif = host.map(|h| h.id);
    let fabric_vrf = host.or(fabric).map_or(0, |v| v.vrf);
    let mac: vrouter_api::MacAddr = opts
        .vrouter_mac
        .parse()
        .map_err(|e| anyhow!("vrouter MAC: {e}"))?;
    Ok(match fabric {
        Some(f) => Node {
            fabric_vif: f.id,
            ip: f
                .ip4
                .or(opts.node_ip)
                .ok_or_else(|| anyhow!("the fabric vif has no address and --node-ip is not set"))?,
            mac: f.mac.clone(),
            vrouter_mac: mac.to_string(),
            host_vif,
            fabric_vrf,
            gateway_mac: opts.gateway_mac.clone(),
        },
        None => Node {
            fabric_vif: 0,
            ip: opts.node_ip.unwrap_or(Ipv4Addr::LOCALHOST),
            mac: "00:00:00:00:00:00".into(),
            vrouter_mac: mac.to_string(),
            host_vif,
            fabric_vrf,
            gateway_mac: None,
        },
    })
}

/// What the vrouter holds of the agent's.
#[derive(Debug, Default, Clone)]
pub struct Actual {
    vrfs: BTreeSet<u32>,
    attrs: BTreeMap<u32, AttrCfg>,
    policies: BTreeMap<String, PolicyCfg>,
    vifs: BTreeMap<u32, VifCfg>,
    nexthops: BTreeMap<u32, NexthopCfg>,
    routes: BTreeMap<(u32, String), RouteCfg>,
    labels: BTreeMap<u32, u32>,
    vnis: BTreeMap<u32, u32>,
    snat_ports: Option<SnatPortsCfg>,
}

fn actual(c: &mut Client, b: &Bases, fabric_vrf: u32) -> Result<Actual> {
    let mut a = Actual {
        snat_ports: serde_json::from_value(call(c, Op::DumpSnatPorts)?).ok(),
        ..Actual::default()
    };
    for v in call(c, Op::DumpVrfs)?.as_array().into_iter().flatten() {
        let id = v["id"].as_u64().unwrap_or(0) as u32;
        if id >= b.vrf {
            a.vrfs.insert(id);
        }
    }
    for x in items::<AttrCfg>(
        call(c, Op::DumpAttrs)?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )? {
        if x.id >= b.attr {
            a.attrs.insert(x.id, x);
        }
    }
    for p in items::<PolicyCfg>(
        call(c, Op::DumpPolicies)?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )? {
        if p.name.starts_with(POLICY_PREFIX) {
            a.policies.insert(p.name.clone(), p);
        }
    }
    for v in items::<VifCfg>(c.dump_all(|cursor| Op::DumpVifs { cursor })?)? {
        if v.id >= b.vif {
            a.vifs.insert(v.id, v);
        }
    }
    for n in items::<NexthopCfg>(c.dump_all(|cursor| Op::DumpNexthops { cursor })?)? {
        if n.id >= b.nh {
            a.nexthops.insert(n.id, n);
        }
    }
    for l in
        items::<vrouter_api::config::LabelCfg>(c.dump_all(|cursor| Op::DumpLabels { cursor })?)?
    {
        if l.label >= b.label {
            a.labels.insert(l.label, l.nh);
        }
    }
    for v in items::<VniCfg>(
        call(c, Op::DumpVnis)?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )? {
        if a.vrfs.contains(&v.vrf) {
            a.vnis.insert(v.vni, v.vrf);
        }
    }
    for vrf in a.vrfs.clone() {
        for r in items::<RouteCfg>(c.dump_all(|cursor| Op::DumpRoutes { vrf, cursor })?)? {
            a.routes.insert((vrf, r.prefix.clone()), r);
        }
    }
    // The fabric VRF is the vrouter's own; the agent's routes there (the ip-fabric
    // network's) are those through its nexthops.
    if !a.vrfs.contains(&fabric_vrf) {
        let vrf = fabric_vrf;
        for r in items::<RouteCfg>(c.dump_all(|cursor| Op::DumpRoutes { vrf, cursor })?)? {
            if r.nh >= b.nh {
                a.routes.insert((vrf, r.prefix.clone()), r);
            }
        }
    }
    Ok(a)
}

impl Actual {
    /// The state the vrouter is in once `d` is applied.
    fn from_desired(d: &Desired) -> Actual {
        Actual {
            vrfs: d.vrfs.clone(),
            attrs: d.attrs.clone(),
            policies: d.policies.clone(),
            vifs: d.vifs.clone(),
            nexthops: d.nexthops.clone(),
            routes: d.routes.clone(),
            labels: d.labels.clone(),
            vnis: d.vnis.clone(),
            snat_ports: d.snat_ports,
        }
    }
}

fn same_nh(a: &NexthopCfg, b: &NexthopCfg) -> bool {
    match (&a.kind, &b.kind) {
        (NexthopKind::Composite { members: x }, NexthopKind::Composite { members: y }) => {
            let key = |m: &vrouter_api::config::MemberCfg| (m.nh, m.label, m.weight);
            let mut x: Vec<_> = x.iter().map(key).collect();
            let mut y: Vec<_> = y.iter().map(key).collect();
            x.sort_unstable();
            y.sort_unstable();
            x == y
        }
        _ => a == b,
    }
}

/// The operations that take the vrouter from `a` to `d`, in five phases.
fn plan(d: &Desired, a: &Actual) -> [Vec<Op>; 5] {
    let mut pre = Vec::new();
    if let Some(p) = d.snat_ports.filter(|p| a.snat_ports.as_ref() != Some(p)) {
        pre.push(Op::SetSnatPorts(p));
    }
    for v in d.vrfs.difference(&a.vrfs) {
        pre.push(Op::AddVrf { id: *v });
    }
    for (id, x) in &d.attrs {
        if a.attrs.get(id) != Some(x) {
            pre.push(Op::SetAttr(x.clone()));
        }
    }
    for (n, p) in &d.policies {
        if a.policies.get(n) != Some(p) {
            pre.push(Op::SetPolicy(p.clone()));
        }
    }
    let mut vifs = Vec::new();
    for (id, v) in &d.vifs {
        match a.vifs.get(id) {
            Some(cur) if cur == v => {}
            // A new device for the same interface (a pod's new sandbox) is one AddVif: the
            // vrouter swaps the port under the vif, whose nexthops and flows stay (a
            // DelVif would be refused while the pod's nexthop uses it).
            _ => vifs.push(Op::AddVif(v.clone())),
        }
    }
    let mut main = Vec::new();
    // Nexthops after those they refer to; deleted before them.
    let mut set: Vec<_> = d.nexthops.values().collect();
    set.sort_by_key(|n| n.kind.depth());
    for n in set {
        if !a.nexthops.get(&n.id).is_some_and(|cur| same_nh(cur, n)) {
            main.push(Op::SetNexthop(n.clone()));
        }
    }
    for (k, r) in &d.routes {
        if a.routes.get(k) != Some(r) {
            main.push(Op::AddRoute(r.clone()));
        }
    }
    for (l, nh) in &d.labels {
        if a.labels.get(l) != Some(nh) {
            main.push(Op::SetLabel(vrouter_api::config::LabelCfg {
                label: *l,
                nh: *nh,
            }));
        }
    }
    for (vni, vrf) in &d.vnis {
        if a.vnis.get(vni) != Some(vrf) {
            main.push(Op::SetVni(VniCfg {
                vni: *vni,
                vrf: *vrf,
            }));
        }
    }
    for (vrf, prefix) in a.routes.keys() {
        if !d.routes.contains_key(&(*vrf, prefix.clone())) {
            main.push(Op::DelRoute {
                vrf: *vrf,
                prefix: prefix.clone(),
            });
        }
    }
    for l in a.labels.keys() {
        if !d.labels.contains_key(l) {
            main.push(Op::DelLabel { label: *l });
        }
    }
    for vni in a.vnis.keys() {
        if !d.vnis.contains_key(vni) {
            main.push(Op::DelVni { vni: *vni });
        }
    }
    let mut gone: Vec<_> = a
        .nexthops
        .values()
        .filter(|n| !d.nexthops.contains_key(&n.id))
        .collect();
    gone.sort_by_key(|n| std::cmp::Reverse(n.kind.depth()));
    for n in gone {
        main.push(Op::DelNexthop { id: n.id });
    }
    let mut vif_dels = Vec::new();
    for id in a.vifs.keys() {
        if !d.vifs.contains_key(id) {
            vif_dels.push(Op::DelVif { id: *id });
        }
    }
    let mut post = Vec::new();
    for n in a.policies.keys() {
        if !d.policies.contains_key(n) {
            post.push(Op::DelPolicy { name: n.clone() });
        }
    }
    for id in a.attrs.keys() {
        if !d.attrs.contains_key(id) {
            post.push(Op::DelAttr { id: *id });
        }
    }
    for v in a.vrfs.difference(&d.vrfs) {
        post.push(Op::DelVrf { id: *v });
    }
    [pre, vifs, main, vif_dels, post]
}

fn send_batches(c: &mut Client, ops: Vec<Op>) -> Result<()> {
    let mut ops = ops;
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(BATCH));
        call(c, Op::Batch { ops })?;
        ops = rest;
    }
    Ok(())
}

/// One reconcile; returns the number of operations sent.
/// Reserves the vrouter's SNAT ranges in the host's kernel once they change (retried
/// on the next round if the list cannot be written).
fn reserve_host_ports(shared: &Shared, path: &Path, now: SnatPortsCfg) {
    let mut last = shared.reserved.lock().unwrap_or_else(|e| e.into_inner());
    if *last == Some(now) {
        return;
    }
    match crate::reserve::reserve(path, last.as_ref(), &now) {
        Ok(()) => {
            tracing::info!(tcp = ?now.tcp, udp = ?now.udp, list = %path.display(), "SNAT ports reserved on the host");
            *last = Some(now);
        }
        Err(e) => tracing::warn!(list = %path.display(), "reserving the SNAT ports: {e}"),
    }
}

fn reconcile(
    shared: &Shared,
    c: &mut Client,
    opts: &Options,
    ids: &mut Ids,
    cache: &mut Option<(Node, Actual)>,
) -> Result<usize> {
    call(c, Op::Hello)?;
    let (node, a) = match cache.take() {
        Some(x) => x,
        None => {
            let n = node(c, opts)?;
            let a = actual(c, &opts.bases, n.fabric_vrf)?;
            (n, a)
        }
    };
    let (d, revision) = {
        let db = shared.db.read().unwrap_or_else(|e| e.into_inner());
        let ports = shared
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let remote = shared
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (
            oper::desired(&db, &node, &ports, &remote, ids),
            db.revision(),
        )
    };
    let [pre, vifs, main, vif_dels, post] = plan(&d, &a);
    let n = pre.len() + vifs.len() + main.len() + vif_dels.len() + post.len();
    if tracing::enabled!(tracing::Level::DEBUG) {
        for op in pre
            .iter()
            .chain(&vifs)
            .chain(&main)
            .chain(&vif_dels)
            .chain(&post)
        {
            tracing::debug!(?op, "vrouter op");
        }
    }
    send_batches(c, pre)?;
    if let (Some(path), Some(now)) = (&opts.reserved_ports, d.snat_ports.or(a.snat_ports)) {
        reserve_host_ports(shared, path, now);
    }
    // Interfaces with a device are plugged one by one; the others go in batches.
    let (dev, plain): (Vec<Op>, Vec<Op>) = vifs.into_iter().partition(|o| {
        matches!(o, Op::AddVif(v) if v.device.is_some()) || matches!(o, Op::DelVif { .. })
    });
    for op in dev {
        let vif = match &op {
            Op::AddVif(v) => Some(v.id),
            _ => None,
        };
        if let Err(e) = call(c, op) {
            let vmi = vif.and_then(|id| d.ports.values().find(|p| p.vif == id));
            if let Some(p) = vmi {
                // A device the vrouter cannot set up: drop the port, keep the rest going.
                let vmi = p.vmi_uuid.clone();
                shared
                    .ports
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&vmi);
                let _ = shared.store.set_port(&vmi, None);
                shared
                    .port_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(vmi.clone(), format!("{e:#}"));
                bail!("port of {vmi} refused, dropped: {e:#}");
            }
            return Err(e);
        }
    }
    send_batches(c, plain)?;
    send_batches(c, main)?;
    for op in vif_dels {
        call(c, op)?;
    }
    send_batches(c, post)?;
    // Everything not desired is gone from the vrouter now: its ids can be reused.
    let unused = ids.unused();
    ids.release(&unused);
    let added = ids.take_changes();
    if let Err(e) = shared.store.save_ids(&added, &unused) {
        bail!("saving ids: {e:#}");
    }
    *cache = Some((node, Actual::from_desired(&d)));
    *shared.desired.lock().unwrap_or_else(|e| e.into_inner()) = d;
    shared
        .stats
        .programmed_revision
        .store(revision, Ordering::Release);
    Ok(n)
}
