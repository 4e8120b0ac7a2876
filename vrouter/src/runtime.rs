//! The DPDK runtime: ports for the configured vifs, forwarding lcores running the
//! pipeline over their RX queues, and the control loop (aging, stats, stop).
//!
//! Layout as in DPDK's l3fwd: with N forwarding lcores every port gets N RX and N TX
//! queues; lcore i owns RX queue i of every port (RSS spreads flows over them) and TX queue
//! i of every port, so nothing on the fast path is shared but the flow table and the
//! read-only table snapshot. Each lcore publishes its counters every few thousand polls.
//!
//! Host interfaces (`packet:<ifname>`: a pod's veth, an HAProxy instance's) are no ethdev:
//! the vrouter serves them itself with `rawsock`, so their number is not bounded by
//! `RTE_MAX_ETHPORTS`. Each has one receive ring, polled by one lcore (the one serving the
//! fewest); every lcore sends to any of them through its own batch socket. An interface
//! that has been quiet for a while is polled a few per round instead of every round, so
//! idle interfaces cost the busy ones next to nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dpdk_bindings::{
    Burst, Eal, Mbuf, Mempool, Port, PortConfig, PortStats, RxQueue, SocketId, TxQueue, port_info,
};
use rawsock::{RxRing, TxSocket};
use serde::Serialize;

use crate::config::Config;
use crate::flow::{AgingConfig, FlowTable, FlowTableStats};
use crate::nat::SnatPools;
use crate::pipeline::{Counters, Disposition, DropReason, MAX_BURST, Pipeline};
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
    /// Frames in each host interface's receive ring (2 KiB each).
    pub ring_frames: u32,
    /// Sleep this long after [`IDLE_ROUNDS_BEFORE_SLEEP`] empty rounds in a row (none:
    /// poll without pause, as a dedicated core should).
    pub idle_sleep: Option<Duration>,
}

/// Empty poll rounds in a row before an lcore with [`Options::idle_sleep`] sleeps.
pub const IDLE_ROUNDS_BEFORE_SLEEP: u32 = 1024;

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
            ring_frames: 512,
            idle_sleep: None,
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
    /// Frames the kernel dropped because the vif's receive ring was full (host
    /// interfaces only).
    pub rx_dropped: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Forwarding lcores.
    pub lcores: usize,
    /// Seconds run.
    pub seconds: f64,
    /// The packet counters (each at the top level of the JSON form, by its name, and
    /// `drops`: every reason by name).
    #[serde(flatten)]
    pub counters: Counters,
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
    stats: Counters,
    vifs: Vec<VifCounters>,
    busy_cycles: u64,
    /// The last [`StatsView::wanted`] request this publication answers.
    answered: u64,
}

/// Longest a live `stats` request waits for the lcores to publish (an idle-sleeping lcore
/// answers within its sleep; one that does not answer in time is reported as last
/// published).
const FRESH_STATS_WAIT: Duration = Duration::from_millis(500);

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
    /// Bumped by a live `stats` request; every lcore publishes once it sees a new value
    /// (one relaxed load per poll round of a line written only by such requests).
    wanted: Arc<AtomicU64>,
    finished: Arc<std::sync::atomic::AtomicUsize>,
}

impl StatsView {
    /// The counters as of now: asks every lcore to publish and waits (bounded) until each
    /// has, so a reader right after traffic sees all of it, not the last periodic
    /// publication.
    fn fresh_report(&self) -> Report {
        // AcqRel: the request is ordered after whatever the caller did before asking.
        let want = self.wanted.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + FRESH_STATS_WAIT;
        loop {
            let answered = self
                .shared
                .iter()
                .all(|s| s.lock().unwrap_or_else(|e| e.into_inner()).answered >= want);
            // Lcores that left their loop published for the last time as they left.
            if answered
                || self.finished.load(Ordering::Acquire) == self.lcores
                || Instant::now() >= deadline
            {
                return self.report();
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn report(&self) -> Report {
        let mut stats = Counters::default();
        let mut busy_cycles = 0;
        let mut per_vif: HashMap<u32, VifCounters> = HashMap::new();
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for s in &self.shared {
            let p = s.lock().unwrap_or_else(|e| e.into_inner());
            stats.add(&p.stats);
            busy_cycles += p.busy_cycles;
            for (v, _) in &names {
                if let Some(c) = p.vifs.get(v.0 as usize) {
                    let a = per_vif.entry(v.0).or_default();
                    a.rx += c.rx;
                    a.tx += c.tx;
                    a.tx_dropped += c.tx_dropped;
                    a.rx_dropped += c.rx_dropped;
                }
            }
        }
        Report {
            lcores: self.lcores,
            seconds: self.start.elapsed().as_secs_f64(),
            counters: stats,
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
    /// Start sending to host interface `ifindex` for `vif`, and receiving from `ring` when
    /// this lcore is the one serving it. `sock` is the lcore's send socket, handed over
    /// with the first host interface.
    AttachHost {
        vif: VifId,
        ifindex: u32,
        ring: Option<RxRing>,
        sock: Option<TxSocket>,
    },
    /// Stop using `vif`'s queues or ring (drop them) and say so.
    Detach {
        vif: VifId,
        ack: std::sync::mpsc::Sender<()>,
    },
}

/// Where an lcore sends a vif's packets.
enum Sink {
    /// An ethdev TX queue.
    Eth(TxQueue),
    /// A host interface, through the lcore's send socket.
    Host(u32),
}

/// A host interface's receive ring, as one lcore polls it.
struct HostRx {
    vif: VifId,
    ring: RxRing,
    /// Rounds in a row it had nothing.
    idle: u32,
}

/// Rounds without a frame after which a host interface is polled as a quiet one.
const HOT_IDLE_ROUNDS: u32 = 1024;
/// Quiet host interfaces looked at per round (round robin): with 256 of them, each is seen
/// every 32 rounds, a few microseconds when the lcore is idle.
const COLD_PER_ROUND: usize = 8;

/// What one forwarding lcore owns.
struct LcoreCtx {
    cmds: std::sync::mpsc::Receiver<LcoreCmd>,
    capture: Arc<crate::capture::Capture>,
    pipeline: Pipeline,
    reader: TableReader,
    rx: Vec<(VifId, RxQueue)>,
    /// Host interfaces with recent traffic: polled every round.
    hot: Vec<HostRx>,
    /// Quiet host interfaces: [`COLD_PER_ROUND`] of them a round.
    cold: Vec<HostRx>,
    cold_next: usize,
    /// Output by vif index.
    tx: Vec<Option<Sink>>,
    /// Sends to host interfaces (none until the first is attached).
    host_tx: Option<TxSocket>,
    /// Mbufs for frames from host interfaces.
    pool: Arc<Mempool>,
    out: Vec<Burst>,
    /// Vifs whose output burst holds packets (flush visits only these).
    pending: Vec<usize>,
    vifs: Vec<VifCounters>,
    shared: Arc<Mutex<Published>>,
    /// Live `stats` requests ([`StatsView::wanted`]) and the last one answered.
    wanted: Arc<AtomicU64>,
    answered: u64,
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
    idle_sleep: Option<Duration>,
}

impl LcoreCtx {
    fn run(mut self) {
        let mut burst = Burst::new();
        let mut disp = [Disposition::Drop(DropReason::InvalidPacket); MAX_BURST];
        let mut polls: u64 = 0;
        let mut received: u64 = 0;
        let mut empty_rounds: u32 = 0;
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
            for i in 0..self.rx.len() {
                let vif = self.rx[i].0;
                let n = self.rx[i].1.rx_burst_max(&mut burst, self.burst);
                if n > 0 {
                    round += n;
                    self.vifs[vif.0 as usize].rx += n as u64;
                    self.forward(vif, &mut burst, &mut disp, &snap, now, capturing);
                }
            }
            let mut i = 0;
            while i < self.hot.len() {
                let vif = self.hot[i].vif;
                let n = self.host_rx(i, &mut burst);
                if n == 0 {
                    self.hot[i].idle += 1;
                    if self.hot[i].idle >= HOT_IDLE_ROUNDS {
                        let h = self.hot.swap_remove(i);
                        self.cold.push(h);
                        continue;
                    }
                } else {
                    self.hot[i].idle = 0;
                    round += n;
                    self.vifs[vif.0 as usize].rx += n as u64;
                    if !burst.is_empty() {
                        self.forward(vif, &mut burst, &mut disp, &snap, now, capturing);
                    }
                }
                i += 1;
            }
            for _ in 0..COLD_PER_ROUND.min(self.cold.len()) {
                if self.cold_next >= self.cold.len() {
                    self.cold_next = 0;
                }
                if self.cold[self.cold_next].ring.ready() {
                    // Served every round from the next one on.
                    let mut h = self.cold.swap_remove(self.cold_next);
                    h.idle = 0;
                    self.hot.push(h);
                } else {
                    self.cold_next += 1;
                }
            }
            if round > 0 {
                // Cycles of rounds that moved packets, as testpmd's --record-core-cycles.
                self.busy_cycles += dpdk_bindings::rdtsc() - t0;
                received += round as u64;
                empty_rounds = 0;
                if self.max_rx.is_some_and(|m| received >= m) {
                    break;
                }
            } else if let Some(d) = self.idle_sleep {
                empty_rounds = empty_rounds.saturating_add(1);
                if empty_rounds >= IDLE_ROUNDS_BEFORE_SLEEP {
                    std::thread::sleep(d);
                }
            }
            polls += 1;
            if polls % 256 == 0 {
                self.commands();
            }
            // Relaxed: a request only asks for a publication, which the mutex orders.
            let wanted = self.wanted.load(Ordering::Relaxed);
            if polls % 4096 == 0 {
                // Fragments whose first one never came.
                self.pipeline.expire_fragments(now);
            }
            if polls % 4096 == 0 || wanted != self.answered {
                self.answered = wanted;
                self.publish();
            }
        }
        self.flush();
        self.publish();
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Copies up to a burst of frames from hot host interface `i` into mbufs in `burst`.
    /// Returns the frames taken from the ring: those that could not become a packet (cut
    /// short, no mbuf) are counted as received and dropped here.
    fn host_rx(&mut self, i: usize, burst: &mut Burst) -> usize {
        let (pool, stats) = (&self.pool, &mut self.pipeline.stats);
        self.hot[i].ring.recv(self.burst, |f| {
            let reason = if f.truncated {
                Some(DropReason::RxTruncated)
            } else {
                match pool.alloc() {
                    Some(mut m) => {
                        let ok = match f.vlan {
                            None => m.extend_from_slice(f.data),
                            // The kernel took the tag out: put it back where it was.
                            Some((tpid, tci)) => {
                                f.data.len() >= 12
                                    && m.extend_from_slice(&f.data[..12])
                                    && m.extend_from_slice(&tpid.to_be_bytes())
                                    && m.extend_from_slice(&tci.to_be_bytes())
                                    && m.extend_from_slice(&f.data[12..])
                            }
                        };
                        match ok {
                            true => burst.push(m).err().map(|_| DropReason::NoMbuf),
                            false => Some(DropReason::RxTruncated),
                        }
                    }
                    None => Some(DropReason::NoMbuf),
                }
            };
            if let Some(r) = reason {
                stats.rx += 1;
                stats.drops.count(r);
            }
        })
    }

    /// Runs a received burst from `vif` through the pipeline and sends what it gives out.
    fn forward(
        &mut self,
        vif: VifId,
        burst: &mut Burst,
        disp: &mut [Disposition; MAX_BURST],
        snap: &crate::tables::Snapshot,
        now: u64,
        capturing: Option<u32>,
    ) {
        let n = burst.len();
        if capturing == Some(vif.0) {
            for m in burst.as_slice() {
                self.capture.offer(m.data());
            }
        }
        self.pipeline
            .process(snap, vif, burst.as_mut_slice(), &mut disp[..n], now);
        for (m, d) in burst.drain().zip(disp.iter()) {
            self.dispatch(m, *d);
        }
        // Fragments held for a first fragment of this burst go on now, after it.
        while let Some(h) = self.pipeline.next_released() {
            let Some(mut m) = self.pool.alloc() else {
                self.pipeline.stats.drops.count(DropReason::NoMbuf);
                continue;
            };
            if !m.extend_from_slice(h.bytes()) {
                self.pipeline.stats.drops.count(DropReason::NoMbuf);
                continue;
            }
            let d = self.pipeline.resume(snap, h, &mut m, now);
            self.dispatch(m, d);
        }
        if let Some(c) = capturing {
            if let Some(b) = self.out.get(c as usize) {
                for m in b.as_slice() {
                    self.capture.offer(m.data());
                }
            }
        }
        self.flush();
    }

    /// Queues a processed packet for its output, where [`Self::flush`] counts it sent or
    /// dropped; drops and holds were counted by the pipeline (the mbuf is freed). A
    /// packet that cannot be queued is counted dropped here: every packet is counted once.
    fn dispatch(&mut self, m: Mbuf, d: Disposition) {
        let lost = match d {
            Disposition::Tx(out) => {
                let o = out.0 as usize;
                match self.out.get_mut(o) {
                    Some(b) => {
                        if b.is_empty() {
                            self.pending.push(o);
                        }
                        // A full output burst (fragments cut from one burst's packets can
                        // outnumber it): what the queue would not take.
                        b.push(m).err().map(|m| {
                            drop(m);
                            DropReason::TxFull
                        })
                    }
                    // A vif id past this lcore's outputs: no interface to send on.
                    None => Some(DropReason::InvalidVif),
                }
            }
            // Flooding needs copies of the mbuf, which the runtime does not make yet:
            // count it, never lose it silently.
            Disposition::Flood(_) => Some(DropReason::FloodUnsupported),
            Disposition::Drop(_) | Disposition::Hold => None,
        };
        if let Some(r) = lost {
            self.pipeline.stats.drops.count(r);
        }
    }

    /// Sends every pending output burst on its vif's TX queue or host interface, counting
    /// what was taken as sent (`tx`); what is not taken is freed and counted
    /// (`interface_tx_discard`), and packets for a vif without an output likewise.
    fn flush(&mut self) {
        for i in self.pending.drain(..) {
            let b = &mut self.out[i];
            let want = b.len() as u64;
            let sent = match self.tx.get_mut(i).and_then(Option::as_mut) {
                Some(Sink::Eth(q)) => q.tx_burst(b) as u64,
                Some(Sink::Host(ifindex)) => match self.host_tx.as_mut() {
                    Some(sock) => sock.send(
                        *ifindex,
                        b.as_slice()
                            .iter()
                            .filter(|m| m.is_contiguous())
                            .map(|m| m.data()),
                    ) as u64,
                    None => 0,
                },
                None => 0,
            };
            self.vifs[i].tx += sent;
            self.vifs[i].tx_dropped += want - sent;
            self.pipeline.stats.tx += sent;
            for _ in sent..want {
                self.pipeline.stats.drops.count(DropReason::TxFull);
            }
            b.clear();
        }
    }

    /// Applies attach/detach commands (between poll rounds, so no burst is in flight).
    fn commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                LcoreCmd::Attach { vif, rx, tx } => {
                    self.rx.push((vif, rx));
                    if let Some(slot) = self.tx.get_mut(vif.0 as usize) {
                        *slot = Some(Sink::Eth(tx));
                    }
                }
                LcoreCmd::AttachHost {
                    vif,
                    ifindex,
                    ring,
                    sock,
                } => {
                    if sock.is_some() {
                        self.host_tx = sock;
                    }
                    if let Some(ring) = ring {
                        self.hot.push(HostRx { vif, ring, idle: 0 });
                    }
                    if let Some(slot) = self.tx.get_mut(vif.0 as usize) {
                        *slot = Some(Sink::Host(ifindex));
                    }
                }
                LcoreCmd::Detach { vif, ack } => {
                    self.rx.retain(|(v, _)| *v != vif);
                    self.hot.retain(|h| h.vif != vif);
                    self.cold.retain(|h| h.vif != vif);
                    if let Some(slot) = self.tx.get_mut(vif.0 as usize) {
                        *slot = None;
                    }
                    if let Some(b) = self.out.get_mut(vif.0 as usize) {
                        for _ in 0..b.len() {
                            self.pipeline.stats.drops.count(DropReason::TxFull);
                        }
                        b.clear();
                    }
                    self.pending.retain(|p| *p != vif.0 as usize);
                    let _ = ack.send(());
                }
            }
        }
    }

    fn publish(&mut self) {
        // The kernel's ring-full drops, read (and reset) per ring.
        for h in self.hot.iter().chain(self.cold.iter()) {
            if let Ok(s) = h.ring.stats() {
                if let Some(c) = self.vifs.get_mut(h.vif.0 as usize) {
                    c.rx_dropped += u64::from(s.drops);
                }
            }
        }
        let mut p = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        p.stats = self.pipeline.stats.clone();
        p.vifs = self.vifs.clone();
        p.busy_cycles = self.busy_cycles;
        p.answered = self.answered;
    }
}

pub use vrouter_api::port_name;

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
    let mut compiled = cfg
        .apply(&mut writer)
        .context("applying the configuration")?;
    writer.publish();

    let workers = eal.worker_lcores();
    let nq = workers.len().max(1);
    // Each frame in one segment: the data room holds the largest MTU configured (jumbo
    // fabrics and the pods behind them) plus its Ethernet and VLAN headers.
    let largest = cfg
        .vifs
        .iter()
        .map(|v| usize::from(v.mtu))
        .max()
        .unwrap_or(1500);
    let room = dpdk_bindings::data_room_for(largest + 18);
    // The largest MTU a vif added later may have: what one mbuf of the pool holds.
    let pool_mtu =
        u16::try_from(usize::from(room).saturating_sub(usize::from(dpdk_bindings::HEADROOM) + 18))
            .unwrap_or(u16::MAX);
    let pool = Arc::new(
        Mempool::new(
            eal,
            "vr_mbufs",
            opts.mbufs,
            256.min(opts.mbufs / 4),
            room,
            SocketId::ANY,
        )
        .context(
            "creating the mbuf pool (try --mbufs with a smaller number, or more memory with -m)",
        )?,
    );

    // A port per vif with a device; host interfaces are opened once the lcores exist.
    let mut ports: Vec<(VifId, String, Port)> = Vec::new();
    for v in &cfg.vifs {
        let Some(dev) = &v.device else { continue };
        if host_iface(dev).is_some() {
            continue;
        }
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
            mtu: v.mtu,
            ..PortConfig::default()
        };
        let port = Port::configure(eal, id, &pc, &pool)
            .with_context(|| format!("vif {} ({}): port {name}", v.id, v.name))?;
        ports.push((VifId(v.id), v.name.clone(), port));
    }
    if cfg.vifs.iter().all(|v| v.device.is_none()) {
        bail!("no vif has a device: nothing to forward");
    }

    // Before the flow table exists: its buckets depend on the seed.
    crate::flow::seed_hash(crate::flow::random_seed());
    let snat = Arc::new(SnatPools::default());
    let flows = Arc::new(FlowTable::with_snat(opts.flows, Arc::clone(&snat)));
    let aging = AgingConfig::millis();
    // One fragment table for every lcore: RSS may spread a datagram's fragments (the
    // first one hashed on ports, the others on addresses only) over several queues.
    let frags = Arc::new(crate::flow::frag::FragTable::new());
    let nvifs = sizes.vifs as usize;
    let capture = Arc::new(crate::capture::Capture::default());
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let polling = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wanted = Arc::new(AtomicU64::new(0));
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
            pipeline: Pipeline::new(Arc::clone(&flows), Arc::clone(&snat), aging)
                .with_fragments(Arc::clone(&frags)),
            reader: writer.reader(),
            rx: Vec::new(),
            hot: Vec::new(),
            cold: Vec::new(),
            cold_next: 0,
            tx: (0..nvifs).map(|_| None).collect(),
            host_tx: None,
            pool: Arc::clone(&pool),
            out: (0..nvifs).map(|_| Burst::new()).collect(),
            pending: Vec::with_capacity(nvifs),
            vifs: vec![VifCounters::default(); nvifs],
            shared: Arc::new(Mutex::new(Published::default())),
            wanted: Arc::clone(&wanted),
            answered: 0,
            stop: Arc::clone(&stop),
            tsc_per_ms: (eal.tsc_hz() / 1000).max(1),
            burst: opts.burst.clamp(1, MAX_BURST),
            max_rx: opts.max_packets.map(|m| m.div_ceil(nq as u64).max(1)),
            busy_cycles: 0,
            finished: Arc::clone(&finished),
            polling: Arc::clone(&polling),
            ready: opts.ready.clone().map(|r| (nq, r)),
            idle_sleep: opts.idle_sleep,
        })
        .collect();
    for (vif, _, port) in ports.iter_mut() {
        let (rxqs, txqs) = port.take_queues().context("port queues")?;
        for (q, (rx, tx)) in rxqs.into_iter().zip(txqs).enumerate() {
            ctxs[q].rx.push((*vif, rx));
            ctxs[q].tx[vif.0 as usize] = Some(Sink::Eth(tx));
        }
    }
    let mut hosts = Hosts::new(nq, opts.ring_frames, pool_mtu);
    for v in &cfg.vifs {
        let Some(ifname) = v.device.as_deref().and_then(host_iface) else {
            continue;
        };
        let (ifindex, ring, lcore, socks) = hosts
            .open(v.id, ifname, v.mtu)
            .map_err(|e| anyhow::anyhow!("vif {} ({}): {e}", v.id, v.name))?;
        for (q, sock) in socks.into_iter().enumerate() {
            ctxs[q].host_tx = Some(sock);
        }
        ctxs[lcore].hot.push(HostRx {
            vif: VifId(v.id),
            ring,
            idle: 0,
        });
        for c in ctxs.iter_mut() {
            c.tx[v.id as usize] = Some(Sink::Host(ifindex));
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
            ports
                .iter()
                .map(|(v, n, _)| (*v, n.clone()))
                .chain(
                    cfg.vifs
                        .iter()
                        .filter(|v| v.device.as_deref().and_then(host_iface).is_some())
                        .map(|v| (VifId(v.id), v.name.clone())),
                )
                .collect(),
        )),
        flows: Arc::clone(&flows),
        start: Instant::now(),
        lcores: nq,
        tsc_hz: eal.tsc_hz(),
        burst: opts.burst.clamp(1, MAX_BURST),
        wanted,
        finished: Arc::clone(&finished),
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
            // The sets `cfg.apply` compiled, which the start-up vifs hold: one copy each.
            cfg.policies
                .iter()
                .filter_map(|p| {
                    let compiled = compiled.remove(&p.name)?;
                    let cfg = p.clone();
                    Some((
                        p.name.clone(),
                        crate::control::NamedPolicy { cfg, compiled },
                    ))
                })
                .collect(),
        ),
        flows: Arc::clone(&flows),
        stats: Box::new(move || serde_json::to_value(live.fresh_report()).unwrap_or_default()),
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
                    let r = match v.device.as_deref().and_then(host_iface) {
                        Some(ifname) => attach_host(&v, ifname, &mut hosts, &cmd_tx),
                        None => fits_pool(&v, pool_mtu)
                            .and_then(|()| attach_port(eal, &v, &pc, &pool, &cmd_tx, &mut ports)),
                    };
                    r.map(|name| {
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
                    detach(eal, VifId(vif), &cmd_tx, &mut ports, &mut hosts)
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
            rx: report.counters.rx - w.counters.rx,
            tx: report.counters.tx - w.counters.tx,
            flows_created: report.counters.flows_created - w.counters.flows_created,
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
    pool: &Arc<Mempool>,
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
    let pc = PortConfig {
        mtu: v.mtu,
        ..pc.clone()
    };
    let mut port = Port::configure(eal, id, &pc, pool).map_err(|e| e.to_string())?;
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

/// Takes a vif's queues or ring back from every lcore (waiting for each to let go), then
/// closes the port and unplugs a virtual device, or closes the host interface's ring.
fn detach(
    eal: &Eal,
    vif: VifId,
    cmds: &[std::sync::mpsc::Sender<LcoreCmd>],
    ports: &mut Vec<(VifId, String, Port)>,
    hosts: &mut Hosts,
) -> Result<(), String> {
    let port = ports.iter().position(|(v, _, _)| *v == vif);
    let host = hosts.served.iter().position(|h| h.vif == vif.0);
    if port.is_none() && host.is_none() {
        return Err(format!("{vif} has no port"));
    }
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
    if let Some(i) = host {
        hosts.served.swap_remove(i);
        return Ok(());
    }
    let Some(i) = port else { return Ok(()) };
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

/// The interface name of a host interface device (`packet:<ifname>`), which the vrouter
/// serves itself (see the module doc); `None` for DPDK devices.
pub fn host_iface(device: &str) -> Option<&str> {
    device.strip_prefix(HOST_PREFIX)
}

/// How a host interface device starts.
pub const HOST_PREFIX: &str = "packet:";

/// Whether `name` can be a Linux interface name (1 to 15 bytes, no `/`, `:`, `,`, blank or
/// control character).
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b','))
}

/// Refuses a vif added while running whose MTU one mbuf of the pool cannot hold (the pool
/// is sized at start for the largest MTU configured then).
fn fits_pool(v: &crate::config::VifCfg, pool_mtu: u16) -> Result<(), String> {
    if v.mtu > pool_mtu {
        return Err(format!(
            "vif {} ({}): mtu {} exceeds the {pool_mtu} the packet buffers hold \
             (give a vif of that MTU in the start-up configuration)",
            v.id, v.name, v.mtu
        ));
    }
    Ok(())
}

/// One host interface the vrouter serves.
#[derive(Debug)]
struct HostIf {
    vif: u32,
    ifindex: u32,
    /// The lcore polling its ring.
    lcore: usize,
}

/// The host interfaces being served, and where a new one goes.
#[derive(Debug)]
struct Hosts {
    served: Vec<HostIf>,
    lcores: usize,
    ring_frames: u32,
    /// The largest MTU the packet buffers hold.
    pool_mtu: u16,
    /// The lcores have their send sockets.
    socks_made: bool,
}

impl Hosts {
    fn new(lcores: usize, ring_frames: u32, pool_mtu: u16) -> Hosts {
        Hosts {
            served: Vec::new(),
            lcores,
            ring_frames,
            pool_mtu,
            socks_made: false,
        }
    }

    /// Opens a ring on `ifname` for `vif`, with frames for `mtu`, on the lcore serving the
    /// fewest; returns its index, the ring, the lcore and, the first time, a send socket
    /// per lcore.
    fn open(
        &mut self,
        vif: u32,
        ifname: &str,
        mtu: u16,
    ) -> Result<(u32, RxRing, usize, Vec<TxSocket>), String> {
        if !valid_ifname(ifname) {
            return Err(format!("{ifname:?} is not an interface name"));
        }
        if mtu > self.pool_mtu {
            return Err(format!(
                "mtu {mtu} exceeds the {} the packet buffers hold (give a vif of that MTU \
                 in the start-up configuration)",
                self.pool_mtu
            ));
        }
        if self.served.iter().any(|h| h.vif == vif) {
            return Err(format!("vif {vif} already has a port"));
        }
        let ifindex = rawsock::ifindex(ifname).map_err(|e| format!("interface {ifname}: {e}"))?;
        if let Some(h) = self.served.iter().find(|h| h.ifindex == ifindex) {
            return Err(format!("interface {ifname} already serves vif {}", h.vif));
        }
        let socks = if self.socks_made {
            Vec::new()
        } else {
            (0..self.lcores)
                .map(|_| TxSocket::new())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("packet socket (CAP_NET_RAW needed): {e}"))?
        };
        let ring = RxRing::open(ifindex, self.ring_frames, mtu)
            .map_err(|e| format!("receive ring on {ifname}: {e}"))?;
        let lcore = (0..self.lcores)
            .min_by_key(|l| self.served.iter().filter(|h| h.lcore == *l).count())
            .unwrap_or(0);
        self.socks_made = true;
        self.served.push(HostIf {
            vif,
            ifindex,
            lcore,
        });
        Ok((ifindex, ring, lcore, socks))
    }
}

/// Serves a host interface added while running: its ring goes to one lcore, every lcore
/// sends to it.
fn attach_host(
    v: &crate::config::VifCfg,
    ifname: &str,
    hosts: &mut Hosts,
    cmds: &[std::sync::mpsc::Sender<LcoreCmd>],
) -> Result<String, String> {
    let (ifindex, ring, lcore, socks) = hosts.open(v.id, ifname, v.mtu)?;
    let mut ring = Some(ring);
    let mut socks = socks.into_iter();
    for (q, c) in cmds.iter().enumerate() {
        c.send(LcoreCmd::AttachHost {
            vif: VifId(v.id),
            ifindex,
            ring: if q == lcore { ring.take() } else { None },
            sock: socks.next(),
        })
        .map_err(|_| "a forwarding lcore has stopped")?;
    }
    Ok(v.name.clone())
}

/// Port counters, for callers that keep ports (not used by `run`, which closes them).
pub fn port_stats(p: &Port) -> Result<PortStats> {
    Ok(p.stats()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_devices_are_told_from_dpdk_ones() {
        assert_eq!(host_iface("packet:vl1234"), Some("vl1234"));
        assert_eq!(host_iface("net_af_packet0,iface=veth0"), None);
        assert_eq!(host_iface("0000:01:00.0"), None);
    }

    #[test]
    fn interface_names_are_checked_before_any_system_call() {
        for ok in ["veth0", "vl1234", "a", "eth0.100", "abcdefghijklmno"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../../etc",
            "veth0,iface=eth0",
            "a:b",
            "a b",
            "a\nb",
            "abcdefghijklmnop",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        let mut h = Hosts::new(2, 16, 1500);
        let e = h.open(5, "../../etc", 1500).unwrap_err();
        assert!(e.contains("not an interface name"), "{e}");
        let e = h.open(5, "vrnosuchif0", 1500).unwrap_err();
        assert!(e.contains("interface vrnosuchif0"), "{e}");
        let e = h.open(5, "lo", 9000).unwrap_err();
        assert!(e.contains("mtu 9000 exceeds the 1500"), "{e}");
        assert!(
            h.served.is_empty(),
            "nothing recorded for a refused interface"
        );
    }
}
