//! The DPDK runtime: ports for the configured vifs, forwarding lcores running the
//! pipeline over their RX queues, and the control loop (aging, stats, stop).
//!
//! Layout as in DPDK's l3fwd: with N forwarding lcores every port gets N RX and N TX
//! queues; lcore i owns RX queue i of every port (RSS spreads flows over them) and TX queue
//! i of every port, so nothing on the fast path is shared but the flow table and the
//! read-only table snapshot. Each lcore publishes its counters every few thousand polls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dpdk_bindings::{
    Burst, DEFAULT_DATA_ROOM, Eal, Mempool, Port, PortConfig, PortStats, RxQueue, SocketId,
    TxQueue, port_info,
};
use serde::Serialize;

use crate::config::Config;
use crate::flow::{AgingConfig, FlowTable, FlowTableStats};
use crate::nat::SnatPools;
use crate::pipeline::{Disposition, DropReason, LcoreStats, MAX_BURST, Pipeline};
use crate::tables::{TableReader, TableSizes, TablesWriter, VifId};

/// Run-time options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Flow table entries.
    pub flows: u32,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// RX/TX descriptors per queue.
    pub descriptors: u16,
    /// Stop after this long without a received packet (tests, replays).
    pub exit_idle: Option<Duration>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Control socket path (none: no socket).
    pub socket: Option<std::path::PathBuf>,
    /// Packets one RX call takes at most (1..=64).
    pub burst: usize,
    /// Stop once this many packets were received (spread evenly over the lcores; each
    /// lcore stops at its share).
    pub max_packets: Option<u64>,
    /// Counters are also taken after this long: the report's `window` covers the rest of
    /// the run (the steady state, without start-up and first-packet flow setup).
    pub warmup: Option<Duration>,
    /// Set once every forwarding lcore polls its queues: a caller that offers traffic
    /// itself (a generator in the same process) waits for it, so nothing it sends sits in
    /// a queue while the tables, pools and ports are still being set up.
    pub ready: Option<Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flows: 1 << 19,
            mbufs: 16_383,
            descriptors: 1024,
            exit_idle: None,
            duration: None,
            socket: None,
            burst: 32,
            max_packets: None,
            warmup: None,
            ready: None,
        }
    }
}

/// Counters of one vif.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct VifCounters {
    /// Packets received.
    pub rx: u64,
    /// Packets sent.
    pub tx: u64,
    /// Packets the TX queue did not take.
    pub tx_dropped: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Forwarding lcores.
    pub lcores: usize,
    /// Seconds run.
    pub seconds: f64,
    /// Packets received.
    pub rx: u64,
    /// Packets sent or flooded.
    pub tx: u64,
    /// Drops by reason name (non-zero only).
    pub drops: HashMap<String, u64>,
    /// Flow counters.
    pub flows_created: u64,
    /// Flows decided again after a policy change.
    pub flows_reevaluated: u64,
    /// Flow hits.
    pub flow_hits: u64,
    /// ARP answers.
    pub arp_replies: u64,
    /// Tunnel packets decapsulated.
    pub decap: u64,
    /// Packets encapsulated.
    pub encap: u64,
    /// TCP SYNs whose MSS was lowered to fit the tunnel.
    pub mss_clamped: u64,
    /// ICMP errors sent (fragmentation needed).
    pub icmp_errors: u64,
    /// Per vif, by name.
    pub vifs: HashMap<String, VifCounters>,
    /// Flow table.
    pub flow_table: FlowTableSummary,
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// TSC ticks the lcores spent in poll rounds that received packets (summed over
    /// lcores): divided by `rx`, the cycles per packet.
    pub busy_cycles: u64,
    /// RX burst size.
    pub burst: usize,
    /// The run after the warm-up (`Options::warmup`), when it lasted that long.
    pub window: Option<Window>,
}

/// Counters over the steady part of a run.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Window {
    /// Seconds.
    pub seconds: f64,
    /// Packets received.
    pub rx: u64,
    /// Packets sent or flooded.
    pub tx: u64,
    /// Flow pairs created.
    pub flows_created: u64,
    /// TSC ticks in poll rounds that received packets.
    pub busy_cycles: u64,
}

/// Flow table counters for the report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FlowTableSummary {
    /// Active entries.
    pub active: u64,
    /// Pairs refused (table full).
    pub refused: u64,
    /// Pairs evicted.
    pub evicted: u64,
    /// Pairs aged out.
    pub aged: u64,
    /// Entries the table holds.
    pub capacity: u64,
    /// Bytes the table takes (entries and bucket index).
    pub memory_bytes: u64,
}

impl FlowTableSummary {
    fn new(s: FlowTableStats, t: &FlowTable) -> Self {
        FlowTableSummary {
            active: s.active,
            refused: s.refused,
            evicted: s.evicted,
            aged: s.aged,
            capacity: t.capacity() as u64,
            memory_bytes: t.memory_bytes() as u64,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Published {
    stats: LcoreStats,
    vifs: Vec<VifCounters>,
    busy_cycles: u64,
}

/// Reads the lcores' published counters into a [`Report`] (live, for the control
/// socket's `stats`, and at the end of the run).
#[derive(Clone)]
struct StatsView {
    shared: Vec<Arc<Mutex<Published>>>,
    names: Arc<Mutex<Vec<(VifId, String)>>>,
    flows: Arc<FlowTable>,
    start: Instant,
    lcores: usize,
    tsc_hz: u64,
    burst: usize,
}

impl StatsView {
    fn report(&self) -> Report {
        let mut stats = LcoreStats::default();
        let mut busy_cycles = 0;
        let mut per_vif: HashMap<u32, VifCounters> = HashMap::new();
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for s in &self.shared {
            let p = s.lock().unwrap_or_else(|e| e.into_inner());
            stats.rx += p.stats.rx;
            stats.tx += p.stats.tx;
            stats.drops.add(&p.stats.drops);
            stats.flows_created += p.stats.flows_created;
            stats.flows_reevaluated += p.stats.flows_reevaluated;
            stats.flow_hits += p.stats.flow_hits;
            stats.arp_replies += p.stats.arp_replies;
            stats.decap += p.stats.decap;
            stats.encap += p.stats.encap;
            stats.mss_clamped += p.stats.mss_clamped;
            stats.icmp_errors += p.stats.icmp_errors;
            busy_cycles += p.busy_cycles;
            for (v, _) in &names {
                if let Some(c) = p.vifs.get(v.0 as usize) {
                    let a = per_vif.entry(v.0).or_default();
                    a.rx += c.rx;
                    a.tx += c.tx;
                    a.tx_dropped += c.tx_dropped;
                }
            }
        }
        Report {
            lcores: self.lcores,
            seconds: self.start.elapsed().as_secs_f64(),
            rx: stats.rx,
            tx: stats.tx,
            drops: stats
                .drops
                .nonzero()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
            flows_created: stats.flows_created,
            flows_reevaluated: stats.flows_reevaluated,
            flow_hits: stats.flow_hits,
            arp_replies: stats.arp_replies,
            decap: stats.decap,
            encap: stats.encap,
            mss_clamped: stats.mss_clamped,
            icmp_errors: stats.icmp_errors,
            vifs: names
                .iter()
                .map(|(v, n)| (n.clone(), per_vif.get(&v.0).copied().unwrap_or_default()))
                .collect(),
            flow_table: FlowTableSummary::new(self.flows.stats(), &self.flows),
            tsc_hz: self.tsc_hz,
            busy_cycles,
            burst: self.burst,
            window: None,
        }
    }
}

/// Commands to a forwarding lcore.
enum LcoreCmd {
    /// Start polling `rx` and sending on `tx` for `vif`.
    Attach {
        vif: VifId,
        rx: RxQueue,
        tx: TxQueue,
    },
    /// Stop using `vif`'s queues (drop them) and say so.
    Detach {
        vif: VifId,
        ack: std::sync::mpsc::Sender<()>,
    },
}

/// What one forwarding lcore owns.
struct LcoreCtx {
    cmds: std::sync::mpsc::Receiver<LcoreCmd>,
    capture: Arc<crate::capture::Capture>,
    pipeline: Pipeline,
    reader: TableReader,
    rx: Vec<(VifId, RxQueue)>,
    /// TX queue by vif index.
    tx: Vec<Option<TxQueue>>,
    out: Vec<Burst>,
    /// Vifs whose output burst holds packets (flush visits only these).
    pending: Vec<usize>,
    vifs: Vec<VifCounters>,
    shared: Arc<Mutex<Published>>,
    stop: Arc<AtomicBool>,
    tsc_per_ms: u64,
    burst: usize,
    /// Stop after receiving this many packets.
    max_rx: Option<u64>,
    busy_cycles: u64,
    /// Lcores that have left their loop.
    finished: Arc<std::sync::atomic::AtomicUsize>,
    /// Lcores that have entered their loop, and the flag the last of them sets.
    polling: Arc<std::sync::atomic::AtomicUsize>,
    ready: Option<(usize, Arc<AtomicBool>)>,
}

impl LcoreCtx {
    fn run(mut self) {
        let mut burst = Burst::new();
        let mut disp = [Disposition::Drop(DropReason::InvalidPacket); MAX_BURST];
        let mut polls: u64 = 0;
        let mut received: u64 = 0;
        let entered = self.polling.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some((lcores, ready)) = &self.ready {
            if entered == *lcores {
                ready.store(true, Ordering::Release);
            }
        }
        while !self.stop.load(Ordering::Relaxed) {
            // One snapshot per poll round: every packet of the round sees one configuration.
            let snap = Arc::clone(self.reader.load());
            let t0 = dpdk_bindings::rdtsc();
            let now = t0 / self.tsc_per_ms;
            let capturing = self.capture.armed();
            let mut round = 0;
            for (vif, rxq) in self.rx.iter_mut() {
                let n = rxq.rx_burst_max(&mut burst, self.burst);
                if n == 0 {
                    continue;
                }
                round += n;
                if capturing == Some(vif.0) {
                    for m in burst.as_slice() {
                        self.capture.offer(m.data());
                    }
                }
                self.vifs[vif.0 as usize].rx += n as u64;
                self.pipeline
                    .process(&snap, *vif, burst.as_mut_slice(), &mut disp[..n], now);
                for (m, d) in burst.drain().zip(disp.iter()) {
                    if let Disposition::Tx(out) = d {
                        let o = out.0 as usize;
                        if let Some(b) = self.out.get_mut(o) {
                            if b.is_empty() {
                                self.pending.push(o);
                            }
                            if let Err(m) = b.push(m) {
                                drop(m);
                            }
                        }
                    }
                    // Drops were counted by the pipeline. Flooding needs copies of the
                    // mbuf, which the runtime does not make yet: count it, never lose it
                    // silently.
                    if let Disposition::Flood(_) = d {
                        self.pipeline.stats.tx -= 1;
                        self.pipeline
                            .stats
                            .drops
                            .count(DropReason::FloodUnsupported);
                    }
                }
                if let Some(c) = capturing {
                    if let Some(b) = self.out.get(c as usize) {
                        for m in b.as_slice() {
                            self.capture.offer(m.data());
                        }
                    }
                }
                flush(
                    &mut self.out,
                    &mut self.pending,
                    &mut self.tx,
                    &mut self.vifs,
                    &mut self.pipeline.stats,
                );
            }
            if round > 0 {
                // Cycles of rounds that moved packets, as testpmd's --record-core-cycles.
                self.busy_cycles += dpdk_bindings::rdtsc() - t0;
                received += round as u64;
                if self.max_rx.is_some_and(|m| received >= m) {
                    break;
                }
            }
            polls += 1;
            if polls % 256 == 0 {
                self.commands();
            }
            if polls % 4096 == 0 {
                self.publish();
            }
        }
        flush(
            &mut self.out,
            &mut self.pending,
            &mut self.tx,
            &mut self.vifs,
            &mut self.pipeline.stats,
        );
        self.publish();
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Applies attach/detach commands (between poll rounds, so no burst is in flight).
    fn commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                LcoreCmd::Attach { vif, rx, tx } => {
                    self.rx.push((vif, rx));
                    if let Some(slot) = self.tx.get_mut(vif.0 as usize) {
                        *slot = Some(tx);
                    }
                }
                LcoreCmd::Detach { vif, ack } => {
                    self.rx.retain(|(v, _)| *v != vif);
                    if let Some(slot) = self.tx.get_mut(vif.0 as usize) {
                        *slot = None;
                    }
                    if let Some(b) = self.out.get_mut(vif.0 as usize) {
                        b.clear();
                    }
                    self.pending.retain(|p| *p != vif.0 as usize);
                    let _ = ack.send(());
                }
            }
        }
    }

    fn publish(&self) {
        let mut p = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        p.stats = self.pipeline.stats.clone();
        p.vifs = self.vifs.clone();
        p.busy_cycles = self.busy_cycles;
    }
}

/// Sends every pending output burst on its vif's TX queue; what a queue does not take is
/// freed and counted (`tx_queue_full`), and packets for a vif without a port likewise.
fn flush(
    out: &mut [Burst],
    pending: &mut Vec<usize>,
    tx: &mut [Option<TxQueue>],
    vifs: &mut [VifCounters],
    stats: &mut LcoreStats,
) {
    for i in pending.drain(..) {
        let b = &mut out[i];
        let want = b.len() as u64;
        let sent = match tx.get_mut(i).and_then(Option::as_mut) {
            Some(q) => q.tx_burst(b) as u64,
            None => 0,
        };
        vifs[i].tx += sent;
        vifs[i].tx_dropped += want - sent;
        for _ in 0..b.len() {
            stats.drops.count(DropReason::TxFull);
        }
        b.clear();
    }
}

/// The port name of a device spec: what comes before the first comma.
pub fn port_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// Runs the vrouter until `stop` is set or an option ends the run.
pub fn run(eal: &Eal, cfg: &Config, opts: &Options, stop: Arc<AtomicBool>) -> Result<Report> {
    let max_vif = cfg.vifs.iter().map(|v| v.id).max().unwrap_or(0);
    let sizes = TableSizes {
        vifs: (max_vif + 1)
            .max(TableSizes::default().vifs)
            .max(cfg.global.max_vifs.unwrap_or(0)),
        ..TableSizes::default()
    };
    let mut writer = TablesWriter::new(sizes);
    cfg.apply(&mut writer)
        .context("applying the configuration")?;
    writer.publish();

    let workers = eal.worker_lcores();
    let nq = workers.len().max(1);
    let pool = Mempool::new(
        eal,
        "vr_mbufs",
        opts.mbufs,
        256.min(opts.mbufs / 4),
        DEFAULT_DATA_ROOM,
        SocketId::ANY,
    )
    .context(
        "creating the mbuf pool (try --mbufs with a smaller number, or more memory with -m)",
    )?;

    // A port per vif with a device.
    let mut ports: Vec<(VifId, String, Port)> = Vec::new();
    for v in &cfg.vifs {
        let Some(dev) = &v.device else { continue };
        let name = port_name(dev);
        let id = eal.port_by_name(name).with_context(|| {
            format!(
                "vif {} ({}): no DPDK port {name:?} (is it in the EAL arguments?)",
                v.id, v.name
            )
        })?;
        let pc = PortConfig {
            rx_queues: nq as u16,
            tx_queues: nq as u16,
            rx_desc: opts.descriptors,
            tx_desc: opts.descriptors,
            ..PortConfig::default()
        };
        let port = Port::configure(eal, id, &pc, &pool)
            .with_context(|| format!("vif {} ({}): port {name}", v.id, v.name))?;
        ports.push((VifId(v.id), v.name.clone(), port));
    }
    if ports.is_empty() {
        bail!("no vif has a device: nothing to forward");
    }

    let snat = Arc::new(SnatPools::default());
    let flows = Arc::new(FlowTable::with_snat(opts.flows, Arc::clone(&snat)));
    let aging = AgingConfig::millis();
    let nvifs = sizes.vifs as usize;
    let capture = Arc::new(crate::capture::Capture::default());
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let polling = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut cmd_tx = Vec::new();
    let mut ctxs: Vec<LcoreCtx> = (0..nq)
        .map(|_| {
            let (tx, cmds) = std::sync::mpsc::channel();
            cmd_tx.push(tx);
            (cmds, ())
        })
        .map(|(cmds, ())| LcoreCtx {
            cmds,
            capture: Arc::clone(&capture),
            pipeline: Pipeline::new(Arc::clone(&flows), Arc::clone(&snat), aging),
            reader: writer.reader(),
            rx: Vec::new(),
            tx: (0..nvifs).map(|_| None).collect(),
            out: (0..nvifs).map(|_| Burst::new()).collect(),
            pending: Vec::with_capacity(nvifs),
            vifs: vec![VifCounters::default(); nvifs],
            shared: Arc::new(Mutex::new(Published::default())),
            stop: Arc::clone(&stop),
            tsc_per_ms: (eal.tsc_hz() / 1000).max(1),
            burst: opts.burst.clamp(1, MAX_BURST),
            max_rx: opts.max_packets.map(|m| m.div_ceil(nq as u64).max(1)),
            busy_cycles: 0,
            finished: Arc::clone(&finished),
            polling: Arc::clone(&polling),
            ready: opts.ready.clone().map(|r| (nq, r)),
        })
        .collect();
    for (vif, _, port) in ports.iter_mut() {
        let (rxqs, txqs) = port.take_queues().context("port queues")?;
        for (q, (rx, tx)) in rxqs.into_iter().zip(txqs).enumerate() {
            ctxs[q].rx.push((*vif, rx));
            ctxs[q].tx[vif.0 as usize] = Some(tx);
        }
    }
    let shared: Vec<_> = ctxs.iter().map(|c| Arc::clone(&c.shared)).collect();
    let cfg_devices: Vec<(u32, String)> = cfg
        .vifs
        .iter()
        .filter_map(|v| v.device.clone().map(|d| (v.id, d)))
        .collect();
    let view = StatsView {
        shared: shared.clone(),
        names: Arc::new(Mutex::new(
            ports.iter().map(|(v, n, _)| (*v, n.clone())).collect(),
        )),
        flows: Arc::clone(&flows),
        start: Instant::now(),
        lcores: nq,
        tsc_hz: eal.tsc_hz(),
        burst: opts.burst.clamp(1, MAX_BURST),
    };
    let live = view.clone();
    let (port_tx, port_rx) = std::sync::mpsc::channel::<crate::control::PortRequest>();
    let pc = PortConfig {
        rx_queues: nq as u16,
        tx_queues: nq as u16,
        rx_desc: opts.descriptors,
        tx_desc: opts.descriptors,
        ..PortConfig::default()
    };
    let control = Arc::new(crate::control::ControlState {
        writer: Mutex::new(writer),
        policies: Mutex::new(
            cfg.policies
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
        ),
        flows: Arc::clone(&flows),
        stats: Box::new(move || serde_json::to_value(live.report()).unwrap_or_default()),
        devices: Mutex::new(cfg_devices.clone()),
        ports: Some(Mutex::new(port_tx)),
        capture: Some(Arc::clone(&capture)),
        cpus: eal.control_cpus(),
    });
    let server = match &opts.socket {
        Some(path) => Some(
            crate::control::serve(path, Arc::clone(&control), Arc::clone(&stop))
                .with_context(|| format!("control socket {}", path.display()))?,
        ),
        None => None,
    };

    // Forwarding lcores: EAL workers, or one plain thread when EAL runs a single lcore.
    let start = Instant::now();
    let mut joins = Vec::new();
    let mut thread = None;
    if workers.is_empty() {
        let c = ctxs.pop().expect("one context");
        thread = Some(
            std::thread::Builder::new()
                .name("vr-fwd".into())
                .spawn(move || c.run())?,
        );
    } else {
        for (c, l) in ctxs.into_iter().zip(&workers) {
            joins.push(eal.launch(*l, move || c.run())?);
        }
    }

    // Control loop: stop conditions and aging.
    let total_rx = |shared: &[Arc<Mutex<Published>>]| -> u64 {
        shared
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).stats.rx)
            .sum()
    };
    let (mut last_rx, mut last_change, mut last_age) = (0, Instant::now(), Instant::now());
    let tsc_per_ms = (eal.tsc_hz() / 1000).max(1);
    let mut warm: Option<(Instant, Report)> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if finished.load(Ordering::Acquire) == nq {
            break;
        }
        if warm.is_none() && opts.warmup.is_some_and(|w| start.elapsed() >= w) {
            warm = Some((Instant::now(), view.report()));
        }
        let rx = total_rx(&shared);
        if rx != last_rx {
            (last_rx, last_change) = (rx, Instant::now());
        }
        if opts.exit_idle.is_some_and(|d| last_change.elapsed() >= d)
            || opts.duration.is_some_and(|d| start.elapsed() >= d)
        {
            stop.store(true, Ordering::Relaxed);
        }
        while let Ok(req) = port_rx.try_recv() {
            let r = match req.op {
                crate::control::PortOp::Attach(v) => {
                    attach_port(eal, &v, &pc, &pool, &cmd_tx, &mut ports).map(|name| {
                        view.names
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((VifId(v.id), name));
                    })
                }
                crate::control::PortOp::Detach(vif) => {
                    view.names
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(v, _)| v.0 != vif);
                    detach_port(eal, VifId(vif), &cmd_tx, &mut ports, &cfg_devices)
                }
            };
            let _ = req.reply.send(r);
        }
        if last_age.elapsed() >= Duration::from_secs(1) {
            flows.age(dpdk_bindings::rdtsc() / tsc_per_ms, &aging);
            last_age = Instant::now();
            control
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reclaim();
        }
    }
    let stopped_at = Instant::now();
    for j in joins {
        if j.join().is_err() {
            bail!("a forwarding lcore panicked");
        }
    }
    if let Some(t) = thread {
        t.join()
            .map_err(|_| anyhow::anyhow!("the forwarding thread panicked"))?;
    }
    if let Some(t) = server {
        let _ = t.join();
    }
    let mut report = view.report();
    if let Some((at, w)) = warm {
        report.window = Some(Window {
            seconds: stopped_at.duration_since(at).as_secs_f64(),
            rx: report.rx - w.rx,
            tx: report.tx - w.tx,
            flows_created: report.flows_created - w.flows_created,
            busy_cycles: report.busy_cycles - w.busy_cycles,
        });
    }
    // Ports close here (net_pcap flushes its output files on close).
    drop(ports);
    Ok(report)
}

/// Sets a port up for a vif added while running: plugs its device in (unless it was
/// probed at start), configures its queues and hands one pair to each lcore.
fn attach_port(
    eal: &Eal,
    v: &crate::config::VifCfg,
    pc: &PortConfig,
    pool: &Mempool,
    cmds: &[std::sync::mpsc::Sender<LcoreCmd>],
    ports: &mut Vec<(VifId, String, Port)>,
) -> Result<String, String> {
    let dev = v.device.as_deref().ok_or("no device")?;
    if ports.iter().any(|(x, _, _)| x.0 == v.id) {
        return Err(format!("vif {} already has a port", v.id));
    }
    let name = port_name(dev);
    let id = match eal.port_by_name(name) {
        Ok(id) => id,
        Err(_) => eal.hotplug_vdev(dev).map_err(|e| e.to_string())?,
    };
    // A device already serving another vif (the fabric, vhost0, a pod) is never taken
    // over: configuring it again would take its queues from under that vif.
    if let Some((owner, owner_name, _)) = ports.iter().find(|(_, _, p)| p.id() == id) {
        return Err(format!(
            "port {name} already serves vif {} ({owner_name})",
            owner.0
        ));
    }
    let mut port = Port::configure(eal, id, pc, pool).map_err(|e| e.to_string())?;
    let (rxqs, txqs) = port.take_queues().ok_or("port queues already taken")?;
    for ((rx, tx), c) in rxqs.into_iter().zip(txqs).zip(cmds) {
        c.send(LcoreCmd::Attach {
            vif: VifId(v.id),
            rx,
            tx,
        })
        .map_err(|_| "a forwarding lcore has stopped")?;
    }
    ports.push((VifId(v.id), v.name.clone(), port));
    Ok(v.name.clone())
}

/// Takes a vif's queues back from every lcore (waiting for each to let go), closes the
/// port and unplugs a virtual device.
fn detach_port(
    eal: &Eal,
    vif: VifId,
    cmds: &[std::sync::mpsc::Sender<LcoreCmd>],
    ports: &mut Vec<(VifId, String, Port)>,
    _start_devices: &[(u32, String)],
) -> Result<(), String> {
    let Some(i) = ports.iter().position(|(v, _, _)| *v == vif) else {
        return Err(format!("{vif} has no port"));
    };
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    for c in cmds {
        c.send(LcoreCmd::Detach {
            vif,
            ack: ack_tx.clone(),
        })
        .map_err(|_| "a forwarding lcore has stopped")?;
    }
    for _ in cmds {
        ack_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "a forwarding lcore did not let go of the port")?;
    }
    let (_, _, port) = ports.remove(i);
    let name = port_info(eal, port.id())
        .map(|i| i.name)
        .unwrap_or_default();
    drop(port); // last handle: stop and close
    if name.starts_with("net_") {
        eal.unplug_vdev(&name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Port counters, for callers that keep ports (not used by `run`, which closes them).
pub fn port_stats(p: &Port) -> Result<PortStats> {
    Ok(p.stats()?)
}
