//! The control socket's server: the vrouter's side of the protocol that
//! `vrouter_api::control` describes (re-exported here), which the agent and `vrctl` use to
//! read and change the tables.
//!
//! Wire format (version 1): each message is a frame of a 4-byte big-endian length followed
//! by that many bytes of JSON (at most [`MAX_FRAME`]). A request is
//! `{"version": 1, "id": N, "request": {"op": "<op>", "args": {...}}}`; the reply carries
//! the same id: `{"version": 1, "id": N, "ok": true, "data": ...}` or
//! `{"version": 1, "id": N, "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Codes: `bad-request` (not JSON, unknown op, wrong fields), `unsupported-version`,
//! `not-found`, `in-use`, `invalid-argument`, `too-large` (the connection is closed then).
//! Every change is validated; a refused request changes nothing, and a `batch` is applied
//! all or nothing. Changes are published to the lcores when the request succeeds.
//! Dumps are paged: `cursor` in, `next` out (absent at the end).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

pub use vrouter_api::control::*;

use crate::config::{
    self, AttrCfg, ConfigError, LabelCfg, PolicyCfg, RouteCfg, SnatPortsCfg, VifCfg, VniCfg,
    parse_prefix,
};
use crate::flow::FlowTable;
use crate::policy::RuleSet;
use crate::tables::{NhId, TableError, TablesWriter, VifId, VrfId};

/// A request to the runtime to set a port up for a vif, or to tear it down.
#[derive(Debug)]
pub enum PortOp {
    /// Plug the vif's device in and give its queues to the lcores.
    Attach(Box<VifCfg>),
    /// Take the vif's queues back from the lcores, close and unplug its device.
    Detach(u32),
}

/// A [`PortOp`] with the channel its result goes back on.
#[derive(Debug)]
pub struct PortRequest {
    /// What to do.
    pub op: PortOp,
    /// Where the outcome goes.
    pub reply: std::sync::mpsc::Sender<Result<(), String>>,
}

/// What the handler needs: the tables' writer, the flow table, counters, device names.
pub struct ControlState {
    /// The single table writer.
    pub writer: Mutex<TablesWriter>,
    /// Named rule sets that vifs refer to (locked after `writer`).
    pub policies: Mutex<Policies>,
    /// The flow table.
    pub flows: Arc<FlowTable>,
    /// Counters as JSON (the runtime's report so far).
    pub stats: Box<dyn Fn() -> Value + Send + Sync>,
    /// DPDK device of each vif, for dumps.
    pub devices: Mutex<Vec<(u32, String)>>,
    /// Where port attach/detach requests go (the runtime's main thread); none without a
    /// runtime (devices are then only recorded).
    pub ports: Option<Mutex<std::sync::mpsc::Sender<PortRequest>>>,
    /// The capture slot the lcores fill; none without a runtime.
    pub capture: Option<Arc<crate::capture::Capture>>,
    /// CPUs the control threads run on, away from the polling lcores (empty: wherever
    /// they were started).
    pub cpus: Vec<usize>,
}

impl ControlState {
    /// State over `writer` without a runtime behind it.
    pub fn detached(writer: TablesWriter, flows: Arc<FlowTable>) -> ControlState {
        ControlState {
            writer: Mutex::new(writer),
            policies: Mutex::new(Policies::new()),
            flows,
            stats: Box::new(|| Value::Null),
            devices: Mutex::new(Vec::new()),
            ports: None,
            capture: None,
            cpus: Vec::new(),
        }
    }

    fn port_op(&self, op: PortOp) -> Result<(), String> {
        let Some(tx) = &self.ports else { return Ok(()) };
        let (reply, rx) = std::sync::mpsc::channel();
        tx.lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(PortRequest { op, reply })
            .map_err(|_| "the vrouter is stopping".to_string())?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "no answer from the port manager".to_string())?
    }

    fn device_of(&self, vif: u32) -> Option<String> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(v, _)| *v == vif)
            .map(|(_, d)| d.clone())
    }

    fn has_device(&self, vif: u32) -> bool {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(v, _)| *v == vif)
    }
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

fn code_of(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::Syntax(_) | ConfigError::Value { .. } => "invalid-argument",
        ConfigError::Table { source, .. } => match source {
            TableError::NoVrf(_) | TableError::NoVif(_) | TableError::NoNexthop(_) => "not-found",
            TableError::InUse { .. } => "in-use",
            _ => "invalid-argument",
        },
    }
}

fn table_err(object: String) -> impl FnOnce(TableError) -> ConfigError {
    move |source| ConfigError::Table { object, source }
}

/// A named rule set as configured (for dumps) and compiled, once: every vif that names
/// it shares the compiled rules.
#[derive(Debug, Clone)]
pub struct NamedPolicy {
    /// As configured.
    pub cfg: PolicyCfg,
    /// Compiled.
    pub compiled: RuleSet,
}

/// Named rule sets by name.
pub type Policies = std::collections::BTreeMap<String, NamedPolicy>;

/// The compiled set of that name.
fn find_in(pols: &Policies) -> impl Fn(&str) -> Option<RuleSet> + '_ {
    |n| pols.get(n).map(|p| p.compiled.clone())
}

/// Adds or replaces a rule set and recompiles the interfaces that name it.
fn set_policy(w: &mut TablesWriter, pols: &mut Policies, p: &PolicyCfg) -> Result<(), ConfigError> {
    let compiled = config::compile_policy(p)?;
    if p.name.is_empty() {
        return Err(ConfigError::Value {
            object: "policy".into(),
            why: "the name is empty".into(),
        });
    }
    pols.insert(
        p.name.clone(),
        NamedPolicy {
            cfg: p.clone(),
            compiled,
        },
    );
    let users: Vec<VifCfg> = w
        .tables()
        .vifs
        .iter()
        .filter(|(_, v)| {
            v.policy.as_ref().is_some_and(|pol| {
                pol.ingress
                    .iter()
                    .chain(pol.egress.iter())
                    .any(|r| r.name == p.name)
            })
        })
        .map(|(_, v)| config::vif_cfg(v, None))
        .collect();
    for v in &users {
        config::apply_vif_with(w, v, &find_in(pols))?;
    }
    Ok(())
}

/// Applies one change to the working tables.
fn apply(w: &mut TablesWriter, pols: &mut Policies, op: &Op) -> Result<(), ConfigError> {
    match op {
        Op::AddVrf { id } => w
            .add_vrf(VrfId(*id))
            .map_err(table_err(format!("vrf {id}"))),
        Op::DelVrf { id } => w
            .del_vrf(VrfId(*id))
            .map_err(table_err(format!("vrf {id}"))),
        Op::AddVif(v) => config::apply_vif_with(w, v, &find_in(pols)),
        Op::SetPolicy(p) => set_policy(w, pols, p),
        Op::DelPolicy { name } => {
            let object = format!("policy {name}");
            let user = w.tables().vifs.iter().find_map(|(_, v)| {
                v.policy
                    .as_ref()
                    .is_some_and(|pol| {
                        pol.ingress
                            .iter()
                            .chain(pol.egress.iter())
                            .any(|r| &r.name == name)
                    })
                    .then_some(v.id)
            });
            if let Some(vif) = user {
                return Err(ConfigError::Table {
                    object,
                    source: TableError::InUse {
                        what: format!("policy {name}"),
                        by: format!("vif {}", vif.0),
                    },
                });
            }
            pols.remove(name).map(|_| ()).ok_or(ConfigError::Value {
                object,
                why: "is not defined".into(),
            })
        }
        Op::SetAttr(a) => config::apply_attr(w, a),
        Op::DelAttr { id } => w.del_attr(*id).map_err(table_err(format!("attr {id}"))),
        Op::DelVif { id } => w
            .del_vif(VifId(*id))
            .map(|_| ())
            .map_err(table_err(format!("vif {id}"))),
        Op::SetNexthop(n) => config::apply_nexthop(w, n),
        Op::DelNexthop { id } => w
            .del_nexthop(NhId(*id))
            .map(|_| ())
            .map_err(table_err(format!("nexthop {id}"))),
        Op::AddRoute(r) => config::apply_route(w, r),
        Op::DelRoute { vrf, prefix } => {
            let object = format!("route {prefix} in vrf {vrf}");
            let (a, l) = parse_prefix(prefix).map_err(|why| ConfigError::Value {
                object: object.clone(),
                why,
            })?;
            w.del_route(VrfId(*vrf), a, l)
                .map(|_| ())
                .map_err(table_err(object))
        }
        Op::SetLabel(l) => w
            .set_label(l.label, NhId(l.nh))
            .map_err(table_err(format!("label {}", l.label))),
        Op::DelLabel { label } => w
            .del_label(*label)
            .map(|_| ())
            .map_err(table_err(format!("label {label}"))),
        Op::SetVni(v) => w
            .set_vni(v.vni, VrfId(v.vrf))
            .map_err(table_err(format!("vni {}", v.vni))),
        Op::DelVni { vni } => w
            .del_vni(*vni)
            .map(|_| ())
            .map_err(table_err(format!("vni {vni}"))),
        Op::SetSnatPorts(p) => {
            p.validate()?;
            let mut g = w.tables().global.as_ref().clone();
            g.snat_ports = Some((p.tcp, p.udp));
            w.set_global(g).map_err(table_err("global".into()))
        }
        Op::Batch { ops } => {
            for (i, o) in ops.iter().enumerate() {
                apply(w, pols, o).map_err(|e| match e {
                    ConfigError::Table { object, source } => ConfigError::Table {
                        object: format!("batch item {i}: {object}"),
                        source,
                    },
                    ConfigError::Value { object, why } => ConfigError::Value {
                        object: format!("batch item {i}: {object}"),
                        why,
                    },
                    other => other,
                })?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn page<T: Serialize>(items: Vec<T>, next: Option<u32>) -> Value {
    json!({ "items": items, "next": next })
}

/// Handles one request.
pub fn handle(state: &ControlState, req: &Request) -> Reply {
    let id = req.id;
    if req.version != VERSION {
        return Reply::err(
            id,
            "unsupported-version",
            format!("version {} (this vrouter speaks {VERSION})", req.version),
        );
    }
    match &req.request {
        Op::AddVif(v) if v.device.is_some() && !state.has_device(v.id) => {
            return attach(state, id, v);
        }
        Op::AddVif(v) if v.device.is_some() && state.device_of(v.id) != v.device => {
            return replace(state, id, v);
        }
        Op::DelVif { id: vif } if state.has_device(*vif) => return detach(state, id, *vif),
        Op::Capture {
            vif,
            count,
            file,
            timeout_ms,
        } => {
            return capture(state, id, *vif, *count, file, *timeout_ms);
        }
        Op::Batch { ops }
            if ops
                .iter()
                .any(|o| matches!(o, Op::AddVif(v) if v.device.is_some())) =>
        {
            return Reply::err(
                id,
                "invalid-argument",
                "an interface with a device is added on its own, not in a batch",
            );
        }
        _ => {}
    }
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    if req.request.changes() {
        let mut pols = state.policies.lock().unwrap_or_else(|e| e.into_inner());
        let before = pols.clone();
        return match w.transaction(|w| apply(w, &mut pols, &req.request)) {
            Ok(()) => {
                let version = w.publish();
                Reply::ok(id, json!({ "tables_version": version }))
            }
            Err(e) => {
                *pols = before;
                Reply::err(id, code_of(&e), e.to_string())
            }
        };
    }
    let t = w.tables();
    let devices = state
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let data = match &req.request {
        Op::Hello => json!({
            "version": VERSION,
            "tables_version": t.version,
            // The vif a capture is armed on, so a client can wait for one to start.
            "capturing": state.capture.as_ref().and_then(|c| c.armed()),
        }),
        Op::DumpSnatPorts => {
            let p = t
                .global
                .snat_ports
                .map_or_else(SnatPortsCfg::default, |(tcp, udp)| SnatPortsCfg {
                    tcp,
                    udp,
                });
            json!(p)
        }
        Op::DumpVrfs => json!(
            t.vrfs
                .iter()
                .map(|(i, v)| json!({"id": i, "generation": v.generation}))
                .collect::<Vec<_>>()
        ),
        Op::DumpVifs { cursor } => {
            let device = |id: u32| {
                devices
                    .iter()
                    .find(|(v, _)| *v == id)
                    .map(|(_, d)| d.clone())
            };
            let items: Vec<_> = t
                .vifs
                .iter()
                .filter(|(i, _)| i >= cursor)
                .take(PAGE + 1)
                .map(|(_, v)| config::vif_cfg(v, device(v.id.0)))
                .collect();
            paged(items, |v| v.id)
        }
        Op::DumpNexthops { cursor } => {
            let items: Vec<_> = t
                .nexthops
                .iter()
                .filter(|(i, _)| i >= cursor)
                .take(PAGE + 1)
                .map(|(i, n)| config::nexthop_cfg(NhId(i), n))
                .collect();
            paged(items, |n| n.id)
        }
        Op::DumpRoutes { vrf, cursor } => match w.routes(VrfId(*vrf)) {
            None => return Reply::err(id, "not-found", format!("vrf {vrf} does not exist")),
            Some(all) => {
                let start = *cursor as usize;
                let items: Vec<_> = all
                    .iter()
                    .skip(start)
                    .take(PAGE)
                    .map(|(a, l, e)| RouteCfg {
                        vrf: *vrf,
                        prefix: format!("{a}/{l}"),
                        nh: e.nh.0,
                        label: e.label,
                        attr: e.attr,
                    })
                    .collect();
                let next = (start + PAGE < all.len()).then_some((start + PAGE) as u32);
                page(items, next)
            }
        },
        Op::DumpLabels { cursor } => {
            let items: Vec<_> = t
                .labels
                .iter()
                .filter(|(l, _)| l >= cursor)
                .take(PAGE + 1)
                .map(|(l, nh)| LabelCfg { label: l, nh: nh.0 })
                .collect();
            paged(items, |l| l.label)
        }
        Op::DumpVnis => {
            let mut v: Vec<_> = t
                .vnis
                .iter()
                .map(|(vni, vrf)| VniCfg {
                    vni: *vni,
                    vrf: vrf.0,
                })
                .collect();
            v.sort_by_key(|x| x.vni);
            json!(v)
        }
        Op::DumpFlows { cursor } => {
            let (flows, next) = state.flows.dump(*cursor, PAGE);
            let items: Vec<_> = flows
                .iter()
                .map(|f| {
                    json!({
                        "index": f.idx.0, "rflow": f.rflow.0, "forward": f.forward,
                        "vrf": f.key.vrf.0, "proto": f.key.proto,
                        "src": f.key.src, "sport": f.key.sport, "dst": f.key.dst, "dport": f.key.dport,
                        "action": match f.action.verdict {
                            crate::flow::FlowVerdict::Forward => "forward".to_string(),
                            crate::flow::FlowVerdict::Drop(r) => format!("drop:{}", r.name()),
                        },
                        "nh": f.action.nh.0, "label": f.action.label,
                        "nat": f.action.nat.map(|n| json!({"source": n.source, "addr": n.addr, "port": n.port})),
                        "tcp": format!("{:?}", f.tcp).to_lowercase(),
                        "packets": f.packets, "bytes": f.bytes,
                    })
                })
                .collect();
            page(items, next)
        }
        Op::DumpPolicies => json!(
            state
                .policies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|p| &p.cfg)
                .collect::<Vec<_>>()
        ),
        Op::DumpAttrs => json!(
            t.attrs
                .iter()
                .map(|(id, a)| AttrCfg {
                    id,
                    vn: a.vn,
                    tags: a.tags.clone(),
                })
                .collect::<Vec<_>>()
        ),
        Op::Stats => (state.stats)(),
        _ => Value::Null,
    };
    Reply::ok(id, data)
}

/// Arms a capture, waits for the frames (or the timeout), writes the pcap file.
fn capture(
    state: &ControlState,
    id: u64,
    vif: u32,
    count: u32,
    file: &str,
    timeout_ms: u64,
) -> Reply {
    let Some(cap) = &state.capture else {
        return Reply::err(
            id,
            "invalid-argument",
            "no forwarding runtime to capture from",
        );
    };
    if !state.has_device(vif) {
        return Reply::err(
            id,
            "not-found",
            format!("vif {vif} has no port to capture on"),
        );
    }
    if count == 0 || count > crate::capture::MAX_FRAMES {
        return Reply::err(
            id,
            "invalid-argument",
            format!("count {count} not in 1..={}", crate::capture::MAX_FRAMES),
        );
    }
    if !cap.arm(vif, count) {
        return Reply::err(id, "in-use", "another capture is running");
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms.min(600_000));
    while !cap.full() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let frames = cap.take();
    match crate::pcap::write(file, &frames) {
        Ok(()) => Reply::ok(id, json!({ "frames": frames.len(), "file": file })),
        Err(e) => Reply::err(id, "invalid-argument", format!("writing {file}: {e}")),
    }
}

/// Adds a vif with a device: the tables first (validated), then the port; if the port
/// cannot be set up the vif is taken out of the tables again.
fn attach(state: &ControlState, id: u64, v: &VifCfg) -> Reply {
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    let pols = state.policies.lock().unwrap_or_else(|e| e.into_inner());
    let applied = w.transaction(|w| config::apply_vif_with(w, v, &find_in(&pols)));
    drop(pols);
    if let Err(e) = applied {
        return Reply::err(id, code_of(&e), e.to_string());
    }
    drop(w);
    if let Err(why) = state.port_op(PortOp::Attach(Box::new(v.clone()))) {
        let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.del_vif(VifId(v.id));
        return Reply::err(
            id,
            "invalid-argument",
            format!("vif {} ({}): {why}", v.id, v.name),
        );
    }
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    let version = w.publish();
    if let Some(dev) = &v.device {
        state
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((v.id, dev.clone()));
    }
    Reply::ok(id, json!({ "tables_version": version }))
}

/// Gives a vif with a port another device (a pod's new sandbox, the same interface): its
/// table entry is updated in place, so the nexthops, routes and flows that use it stay;
/// the old device's queues are taken back and closed, then the new one is attached. If
/// the new device cannot be set up the vif stays in the tables without a port, and the
/// error says so (the agent drops the port, and the vif with it once nothing uses it).
fn replace(state: &ControlState, id: u64, v: &VifCfg) -> Reply {
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    let pols = state.policies.lock().unwrap_or_else(|e| e.into_inner());
    let applied = w.transaction(|w| config::apply_vif_with(w, v, &find_in(&pols)));
    drop(pols);
    if let Err(e) = applied {
        return Reply::err(id, code_of(&e), e.to_string());
    }
    drop(w);
    state
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(x, _)| *x != v.id);
    let ported = state
        .port_op(PortOp::Detach(v.id))
        .map_err(|why| format!("the old device: {why}"))
        .and_then(|()| state.port_op(PortOp::Attach(Box::new(v.clone()))));
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    let version = w.publish();
    if let Err(why) = ported {
        return Reply::err(
            id,
            "invalid-argument",
            format!("vif {} ({}): {why}; it has no port now", v.id, v.name),
        );
    }
    if let Some(dev) = &v.device {
        state
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((v.id, dev.clone()));
    }
    Reply::ok(id, json!({ "tables_version": version }))
}

/// Deletes a vif with a port: out of the tables (refused while a nexthop uses it), then
/// its queues are taken back from the lcores and the device is closed.
fn detach(state: &ControlState, id: u64, vif: u32) -> Reply {
    let mut w = state.writer.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = w.del_vif(VifId(vif)) {
        let e = ConfigError::Table {
            object: format!("vif {vif}"),
            source: e,
        };
        return Reply::err(id, code_of(&e), e.to_string());
    }
    let version = w.publish();
    drop(w);
    state
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(v, _)| *v != vif);
    match state.port_op(PortOp::Detach(vif)) {
        Ok(()) => Reply::ok(id, json!({ "tables_version": version })),
        Err(why) => Reply::err(
            id,
            "invalid-argument",
            format!("vif {vif}: removed from the tables, but {why}"),
        ),
    }
}

/// A page of at most PAGE items fetched as PAGE + 1: the extra one gives the next cursor.
fn paged<T: Serialize>(mut items: Vec<T>, key: impl Fn(&T) -> u32) -> Value {
    let next = if items.len() > PAGE {
        items.pop().map(|x| key(&x))
    } else {
        None
    };
    page(items, next)
}

/// Handles one raw frame: a reply for anything, also bytes that are not a request.
pub fn handle_frame(state: &ControlState, body: &[u8]) -> Reply {
    match serde_json::from_slice::<Request>(body) {
        Ok(req) => handle(state, &req),
        Err(e) => {
            // Echo the id if the frame is JSON with one.
            let id = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["id"].as_u64())
                .unwrap_or(0);
            Reply::err(id, "bad-request", e.to_string())
        }
    }
}

fn serve_client(state: &ControlState, mut s: UnixStream, stop: &AtomicBool) {
    // The timeout only lets the thread see `stop`; the reader keeps partial frames.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = FrameReader::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let body = match reader.poll(&mut s) {
            Ok(Polled::Frame(b)) => b,
            Ok(Polled::Closed) => return,
            Ok(Polled::Pending) => continue,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let r = Reply::err(0, "too-large", e.to_string());
                let _ = write_frame(&mut s, &serde_json::to_vec(&r).unwrap_or_default());
                return;
            }
            Err(_) => return,
        };
        let reply = handle_frame(state, &body);
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        if write_frame(&mut s, &bytes).is_err() {
            return;
        }
    }
}

/// Clients served at once; one more is told `busy` and closed.
pub const MAX_CLIENTS: usize = 64;

/// Binds a Unix socket at `path` that is mode 0600 from the moment it exists: it is made
/// in a fresh directory only its owner can enter, set to 0600 there, then renamed into
/// place (the umask never decides who can reach it, and there is no window before the
/// chmod).
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = dir.join(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("sock");
    let r = UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&private);
    r
}

/// Listens on `path` (mode 0600: root only) until `stop`; one thread per client.
pub fn serve(
    path: &Path,
    state: Arc<ControlState>,
    stop: Arc<AtomicBool>,
) -> io::Result<std::thread::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by an earlier run is replaced; a live vrouter's socket, or
    // anything that is not a socket, is not touched.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another vrouter is listening on {}", path.display()),
            ));
        }
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = bind_private(path)?;
    listener.set_nonblocking(true)?;
    let path: PathBuf = path.to_owned();
    std::thread::Builder::new()
        .name("vr-control".into())
        .spawn(move || {
            if let Err(e) = dpdk_bindings::pin_current_thread(&state.cpus) {
                eprintln!("control socket: could not move off the lcores' CPUs: {e}");
            }
            let mut clients = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        clients.retain(|c: &std::thread::JoinHandle<()>| !c.is_finished());
                        if clients.len() >= MAX_CLIENTS {
                            let r = Reply::err(
                                0,
                                "busy",
                                format!("{MAX_CLIENTS} clients are connected; try again later"),
                            );
                            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                            let _ =
                                write_frame(&mut s, &serde_json::to_vec(&r).unwrap_or_default());
                            continue;
                        }
                        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
                        clients.push(std::thread::spawn(move || serve_client(&st, s, &sp)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
                clients.retain(|c| !c.is_finished());
            }
            for c in clients {
                let _ = c.join();
            }
            let _ = std::fs::remove_file(&path);
        })
}
