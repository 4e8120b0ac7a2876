//! Per-packet latency through the vrouter at a given offered rate.
//!
//! Runs in this process: the EAL, two ring-backed ports (`net_ring_vrperf_in`,
//! `net_ring_vrperf_out`) and the vrouter's own runtime on one forwarding lcore. A
//! generator thread on the control CPU offers the scenario's frames at the asked rate,
//! each stamped with the TSC in its last 16 bytes (a magic word and the time), and reads
//! what the vrouter sent back from the output ring: the latency of a packet is the TSC
//! when it is read minus its stamp. Encapsulation and decapsulation leave the end of
//! the frame where it was, so the stamp is found at the end whatever the scenario does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dpdk_bindings::{Burst, DEFAULT_DATA_ROOM, EalBuilder, Mempool, Ring, RingSync, SocketId};
use serde::{Deserialize, Serialize};
use vrouter::runtime;

use crate::frames::{FCS, Size};
use crate::scenario::{self, Kind, Scenario};

/// Marks a stamped frame.
pub const MAGIC: u64 = 0x5652_5045_5246_5453; // "VRPERFTS"
/// Bytes of the stamp at the end of each frame.
pub const STAMP: usize = 16;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario (a forwarding one).
    pub scenario: &'static dyn Scenario,
    /// Frame size.
    pub size: Size,
    /// Distinct flows.
    pub flows: u32,
    /// Offered rate, packets per second.
    pub rate_pps: f64,
    /// Seconds measured.
    pub duration: f64,
    /// Seconds offered before measuring.
    pub warmup: f64,
    /// Use hugepages.
    pub hugepages: bool,
}

/// Latency figures of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Scenario.
    pub scenario: String,
    /// Frame size.
    pub size: String,
    /// Flows.
    pub flows: u32,
    /// Offered Mpps.
    pub offered_mpps: f64,
    /// Packets offered while measuring.
    pub sent: u64,
    /// Of those, received back.
    pub received: u64,
    /// Due at the offered rate but not taken (the vrouter fell behind: its input ring
    /// full, or every mbuf in flight).
    pub not_offered: u64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Smallest.
    pub min_us: f64,
}

/// Writes the stamp into the last [`STAMP`] bytes of `frame`.
pub fn stamp(frame: &mut [u8], tsc: u64) {
    let n = frame.len();
    frame[n - STAMP..n - 8].copy_from_slice(&MAGIC.to_be_bytes());
    frame[n - 8..].copy_from_slice(&tsc.to_be_bytes());
}

/// The stamp at the end of `frame`, if it carries one.
pub fn read_stamp(frame: &[u8]) -> Option<u64> {
    let n = frame.len();
    if n < STAMP || frame[n - STAMP..n - 8] != MAGIC.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(frame[n - 8..].try_into().ok()?))
}

/// The value below which a fraction `q` of the sorted samples lie.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct GenResult {
    sent: u64,
    not_offered: u64,
    samples: Vec<u64>,
}

/// Runs the measurement (initialises the EAL: once per process).
pub fn run(o: &Options) -> Result<Latency> {
    let s = o.scenario;
    if s.kind() != Kind::Forward {
        bail!("{}: latency is measured on forwarding scenarios", s.name());
    }
    if o.rate_pps.is_nan() || o.rate_pps <= 0.0 {
        bail!("the offered rate must be positive");
    }
    let size = o.size.at_least(s.min_size());
    let pattern = size.pattern();
    let n = o.flows.max(1) as usize;
    let frames: Vec<Vec<u8>> = (0..n.max(pattern.len()))
        .map(|i| s.frame((i % n) as u32, pattern[i % pattern.len()] - FCS))
        .collect();
    let mem = if o.hugepages {
        vec!["--huge-unlink", "-m", "768"]
    } else {
        vec!["--no-huge", "-m", "768"]
    };
    let eal = EalBuilder::new("vrperf")
        .args(mem)
        .no_pci()
        .args(["--lcores", "0@0,1@1"])
        .file_prefix(format!("vrlat{}", std::process::id()))
        .log_level("lib.eal:error")
        .init()
        .context("starting the DPDK EAL")?;
    let ring = |name: &str| {
        Ring::new(&eal, name, 8192, RingSync::MultiMulti)
            .map(Arc::new)
            .with_context(|| format!("ring {name}"))
    };
    let (in_rx, in_tx, out_rx, out_tx) = (
        ring("lat_in_rx")?,
        ring("lat_in_tx")?,
        ring("lat_out_rx")?,
        ring("lat_out_tx")?,
    );
    eal.port_from_rings("vrperf_in", &[Arc::clone(&in_rx)], &[Arc::clone(&in_tx)])?;
    eal.port_from_rings("vrperf_out", &[Arc::clone(&out_rx)], &[Arc::clone(&out_tx)])?;
    let cfg = scenario::config(s, "net_ring_vrperf_in", "net_ring_vrperf_out");
    let pool = Arc::new(
        Mempool::new(&eal, "lat_gen", 32_767, 0, DEFAULT_DATA_ROOM, SocketId::ANY)
            .context("generator pool")?,
    );
    let hz = eal.tsc_hz() as f64;
    // The generator shares CPU 0 with the main lcore (asleep in the control loop); the
    // forwarding lcore has CPU 1 to itself (the --lcores list above).
    let cpus = vec![0usize];
    let (rate, warm, total) = (o.rate_pps, o.warmup, o.warmup + o.duration);

    let gen_stop = Arc::new(AtomicBool::new(false));
    // The vrouter runs until the generator has every packet back (or gave up waiting).
    let stop = Arc::new(AtomicBool::new(false));
    // Set by the runtime once its lcore polls the ports: the generator's clock starts
    // then, so the set-up of tables, pools and ports (seconds on a loaded machine) is
    // neither measured as latency nor long enough to end the run before it forwards.
    let ready = Arc::new(AtomicBool::new(false));
    let generator = {
        let (pool, in_rx, out_tx, gen_stop, stop, ready) = (
            Arc::clone(&pool),
            Arc::clone(&in_rx),
            Arc::clone(&out_tx),
            Arc::clone(&gen_stop),
            Arc::clone(&stop),
            Arc::clone(&ready),
        );
        std::thread::Builder::new()
            .name("vrperf-gen".into())
            .spawn(move || -> Result<GenResult> {
                let _ = dpdk_bindings::pin_current_thread(&cpus);
                let r = wait_ready(&ready, &gen_stop).map(|()| {
                    generate(
                        &frames, &pool, &in_rx, &out_tx, rate, hz, warm, total, &gen_stop,
                    )
                });
                stop.store(true, Ordering::Relaxed);
                r
            })?
    };
    let opts = runtime::Options {
        // A bound for a generator that never ends (the drain has its own), counted from
        // the lcores' launch (the set-up before it is not in it).
        duration: Some(Duration::from_secs_f64(total + DRAIN_S + 1.0)),
        mbufs: 16_383,
        flows: 1 << 19,
        ready: Some(Arc::clone(&ready)),
        ..runtime::Options::default()
    };
    let report = runtime::run(&eal, &cfg, &opts, stop);
    gen_stop.store(true, Ordering::Relaxed);
    let g = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    let report = report?;
    let g = g?;
    if g.samples.is_empty() {
        bail!(
            "nothing came back through the vrouter: {} offered, {} not taken \
             (vrouter rx {} tx {}, drops {:?})",
            g.sent,
            g.not_offered,
            report.counters.rx,
            report.counters.tx,
            report.counters.drops.nonzero().collect::<Vec<_>>()
        );
    }
    let mut v = g.samples;
    v.sort_unstable();
    let us = |c: u64| c as f64 / hz * 1e6;
    Ok(Latency {
        scenario: s.name().into(),
        size: size.to_string(),
        flows: o.flows,
        offered_mpps: rate / 1e6,
        sent: g.sent,
        received: v.len() as u64,
        not_offered: g.not_offered,
        p50_us: us(percentile(&v, 0.5)),
        p99_us: us(percentile(&v, 0.99)),
        p999_us: us(percentile(&v, 0.999)),
        max_us: us(*v.last().unwrap_or(&0)),
        min_us: us(v[0]),
    })
}

/// How long the generator waits for the vrouter's lcore to poll its ports.
const READY_S: f64 = 60.0;

/// Waits until the runtime says its lcores poll (`ready`), or fails with the reason.
fn wait_ready(ready: &AtomicBool, stop: &AtomicBool) -> Result<()> {
    let t = std::time::Instant::now();
    while !ready.load(Ordering::Acquire) {
        if stop.load(Ordering::Relaxed) {
            bail!("the vrouter stopped before its forwarding lcore started polling");
        }
        if t.elapsed().as_secs_f64() > READY_S {
            bail!(
                "the vrouter's forwarding lcore did not start polling within {READY_S} s \
                 (is CPU 1 available to it?)"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// At most this many latencies are kept (400 MB of samples).
const MAX_SAMPLES: usize = 50_000_000;

/// After the last packet is offered, how long the generator waits for those still in
/// flight (on a loaded machine the forwarding lcore may not run for a while).
const DRAIN_S: f64 = 2.0;

/// The generator: offers `frames` round robin at `rate` packets/s for `total` seconds,
/// reads the output ring all along, and keeps the latencies of packets sent after
/// `warm` seconds; then waits (up to [`DRAIN_S`]) until every one of those is back.
#[allow(clippy::too_many_arguments)]
fn generate(
    frames: &[Vec<u8>],
    pool: &Mempool,
    input: &Ring,
    output: &Ring,
    rate: f64,
    hz: f64,
    warm: f64,
    total: f64,
    stop: &AtomicBool,
) -> GenResult {
    let start = dpdk_bindings::rdtsc();
    let warm_at = start + (warm * hz) as u64;
    let end_at = start + (total * hz) as u64;
    let mut r = GenResult {
        sent: 0,
        not_offered: 0,
        samples: Vec::with_capacity(((rate * (total - warm)) as usize).min(MAX_SAMPLES)),
    };
    let mut offered: u64 = 0;
    let mut next = 0usize;
    let mut out = Burst::new();
    let mut b = Burst::new();
    let mut drain_until = None;
    loop {
        let now = dpdk_bindings::rdtsc();
        if now < end_at {
            // Packets due by now at the offered rate, at most a burst at a time.
            let due = ((now - start) as f64 * rate / hz) as u64;
            let want = due.saturating_sub(offered).min(32) as usize;
            for _ in 0..want {
                let Some(mut m) = pool.alloc() else { break };
                let f = &frames[next % frames.len()];
                next += 1;
                if !m.extend_from_slice(f) {
                    break;
                }
                stamp(m.data_mut(), dpdk_bindings::rdtsc());
                let _ = b.push(m);
            }
            offered += want as u64;
            let took = input.enqueue_burst_shared(&mut b).unwrap_or(0) as u64;
            if now >= warm_at {
                // Due but not taken: the input ring full, or no mbuf left.
                r.sent += took;
                r.not_offered += want as u64 - took;
            }
            b.clear();
        } else if drain_until.is_none() {
            drain_until = Some(now + (DRAIN_S * hz) as u64);
        }
        if output.dequeue_burst_shared(&mut out).unwrap_or(0) > 0 {
            let t = dpdk_bindings::rdtsc();
            for m in out.as_slice() {
                if let Some(ts) = read_stamp(m.data()) {
                    // The capacity is the rate's share of the run; a generator that
                    // fell behind catches up after the warm-up and sends more.
                    if ts >= warm_at && r.samples.len() < MAX_SAMPLES {
                        r.samples.push(t.saturating_sub(ts));
                    }
                }
            }
            out.clear();
        }
        let all_back = r.samples.len() as u64 >= r.sent.min(MAX_SAMPLES as u64);
        if drain_until.is_some_and(|d| now >= d || all_back) || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_frames_have_none() {
        let mut f = vec![0u8; 60];
        stamp(&mut f, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&f), Some(0x0102_0304_0506_0708));
        // An encapsulated copy keeps the end of the frame.
        let mut outer = vec![0xee; 50];
        outer.extend_from_slice(&f);
        assert_eq!(read_stamp(&outer), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&[0u8; 60]), None);
        assert_eq!(read_stamp(&[0u8; 8]), None);
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
    }
}
