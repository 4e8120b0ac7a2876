//! Per-packet cost of the full pipeline on 60-byte frames (64 on the wire) in bursts of 32,
//! without DPDK (VecBuf): flow hit + VXLAN encap, flow hit + MPLSoUDP encap, decap + local
//! delivery, each with 1K, 64K and 1M established connections cycled in order; and flow
//! miss + policy (100 rules, and a hostile 10,000) + pair setup. Criterion reports time per burst and packets/s.
//!
//! Restoring each frame into its buffer (a 60-byte copy) is inside the measured loop, as
//! the NIC's DMA would be outside it: the figures are slightly pessimistic.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vrouter::flow::AgingConfig;
use vrouter::packet::VecBuf;
use vrouter::pipeline::Disposition;
use vrouter::policy::{Action, Policy, Rule, RuleSet};
use vrouter::tables::{TunnelKind, VifId};
use vrouter::testbed::*;

const BURST: usize = 32;
const PAYLOAD: &[u8] = &[0x5a; 18]; // 14 + 20 + 8 + 18 = 60 bytes

struct Run {
    tb: Testbed,
    frames: Vec<Vec<u8>>,
    bufs: Vec<VecBuf>,
    out: Vec<Disposition>,
    vif: VifId,
    next: usize,
}

impl Run {
    fn new(tb: Testbed, vif: VifId, frames: Vec<Vec<u8>>) -> Run {
        let bufs = (0..BURST).map(|_| VecBuf::new(&frames[0])).collect();
        Run {
            tb,
            frames,
            bufs,
            out: vec![Disposition::Tx(VifId(0)); BURST],
            vif,
            next: 0,
        }
    }

    /// One burst of the next 32 frames (wrapping around the flow set).
    fn burst(&mut self, now: u64) {
        for b in self.bufs.iter_mut() {
            b.reset(&self.frames[self.next]);
            self.next = (self.next + 1) % self.frames.len();
        }
        let snap = Arc::clone(self.tb.reader.load());
        self.tb
            .pipeline
            .process(&snap, self.vif, &mut self.bufs, &mut self.out, now);
    }

    /// Sends every frame once so each flow is set up.
    fn warm(&mut self) {
        for _ in 0..self.frames.len().div_ceil(BURST) {
            self.burst(0);
        }
        self.next = 0;
    }
}

fn table_for(connections: usize) -> u32 {
    // Two entries per connection, at most half full.
    (connections * 4).next_power_of_two() as u32
}

fn remote_flow(i: usize) -> Vec<u8> {
    let dst = Ipv4Addr::new(10, 1, 2, 1 + (i % 250) as u8);
    vm1_udp(dst, 1024 + (i / 250) as u16, 7, PAYLOAD)
}

/// A testbed whose VMs may hold the whole table (one VM sends every flow of a run).
fn testbed(flows: u32) -> Testbed {
    let mut tb = Testbed::new(flows);
    let mut g = tb.writer.tables().global.as_ref().clone();
    g.vif_max_flows = Some(u32::MAX);
    tb.writer.set_global(g).expect("global");
    tb.writer.publish();
    tb
}

fn encap_run(connections: usize, kind: TunnelKind) -> Run {
    let mut tb = testbed(table_for(connections));
    let mut g = tb.writer.tables().global.as_ref().clone();
    g.encap_priority.retain(|k| *k != kind);
    g.encap_priority.insert(0, kind);
    tb.writer.set_global(g).expect("global");
    tb.writer.publish();
    let frames = (0..connections).map(remote_flow).collect();
    let mut r = Run::new(tb, VM1, frames);
    r.warm();
    r
}

fn decap_run(connections: usize) -> Run {
    let tb = testbed(table_for(connections));
    let frames = (0..connections)
        .map(|i| {
            let src = Ipv4Addr::new(10, 1, 2, 1 + (i % 250) as u8);
            let inner = ipv4_frame(
                VM1_MAC,
                VM1_MAC,
                src,
                VM1_IP,
                17,
                1024 + (i / 250) as u16,
                7,
                0,
                PAYLOAD,
            );
            from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..])
        })
        .collect();
    let mut r = Run::new(tb, FABRIC, frames);
    r.warm();
    r
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_hit");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for &n in &[1_000usize, 65_536, 1_000_000] {
        for (name, kind) in [
            ("vxlan_encap", TunnelKind::Vxlan),
            ("mpls_udp_encap", TunnelKind::MplsUdp),
        ] {
            let mut r = encap_run(n, kind);
            assert!(
                r.out.iter().all(|d| *d == Disposition::Tx(FABRIC)),
                "{name}: {:?}",
                r.out[0]
            );
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| b.iter(|| r.burst(1)));
        }
        let mut r = decap_run(n);
        assert!(
            r.out.iter().all(|d| *d == Disposition::Tx(VM1)),
            "decap: {:?}",
            r.out[0]
        );
        g.bench_with_input(BenchmarkId::new("mpls_udp_decap_local", n), &n, |b, _| {
            b.iter(|| r.burst(1))
        });
    }
    g.finish();
}

/// vm2's ingress policy: 99 rules that do not match UDP, then the one that passes it.
fn hundred_rules() -> Policy {
    let mut rules: Vec<Rule> = (0..99)
        .map(|j| Rule {
            proto: Some(6),
            dport: (1000 + j, 1000 + j),
            ..Rule::any(Action::Pass)
        })
        .collect();
    rules.push(Rule {
        proto: Some(17),
        ..Rule::any(Action::Pass)
    });
    Policy {
        ingress: vec![RuleSet::new("sg-100", rules, Action::Deny, false)],
        egress: vec![],
    }
}

/// A hostile policy of 10,000 rules: 5,000 /32 exceptions (an ipBlock's `except` list:
/// denied sources that are not vm1), 4,999 TCP ports, then the rule that passes vm1's UDP.
/// A scan in order would compare every flow with all of them.
fn ten_thousand_rules() -> Policy {
    let mut rules: Vec<Rule> = (0..5000u32)
        .map(|j| Rule {
            src: vrouter::policy::EndpointMatch::prefix(
                std::net::IpAddr::V4(Ipv4Addr::from(0xac10_0000 + j)),
                32,
            ),
            ..Rule::any(Action::Deny)
        })
        .collect();
    rules.extend((0..4999u16).map(|j| Rule {
        proto: Some(6),
        dport: (1000 + j, 1000 + j),
        ..Rule::any(Action::Pass)
    }));
    rules.push(Rule {
        proto: Some(17),
        ..Rule::any(Action::Pass)
    });
    Policy {
        ingress: vec![RuleSet::new("netpol-10k", rules, Action::Deny, false)],
        egress: vec![],
    }
}

fn setup_rate(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_setup");
    g.throughput(Throughput::Elements(BURST as u64));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, policy) in [
        ("miss_policy100_setup", hundred_rules()),
        ("miss_policy10k_setup", ten_thousand_rules()),
    ] {
        let mut tb = testbed(1 << 20);
        let mut vm2 = tb
            .writer
            .tables()
            .vifs
            .get(VM2.0)
            .expect("vm2")
            .as_ref()
            .clone();
        vm2.policy = Some(Arc::new(policy));
        tb.writer.add_vif(vm2).expect("policy");
        tb.writer.publish();
        // Frames are generated ahead of each burst (outside the timed part); every one is
        // a new flow. The table is emptied (untimed) before it is half full.
        let mut r = Run::new(tb, VM1, vec![vm1_udp(VM2_IP, 1, 1, PAYLOAD); BURST]);
        let mut i: u32 = 0;
        let aging = AgingConfig {
            other: 0,
            ..AgingConfig::millis()
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for f in r.frames.iter_mut() {
                        *f = vm1_udp(VM2_IP, i as u16, 1 + (i >> 16) as u16, PAYLOAD);
                        i = i.wrapping_add(1);
                    }
                    r.next = 0;
                    let t = Instant::now();
                    r.burst(1);
                    total += t.elapsed();
                    assert!(
                        r.out.iter().all(|d| *d == Disposition::Tx(VM2)),
                        "setup: {:?}",
                        r.out[0]
                    );
                    if r.tb.pipeline.flows().stats().active > (1 << 19) {
                        r.tb.pipeline.flows().age(u64::MAX, &aging);
                    }
                }
                total
            })
        });
    }
    g.finish();
}

/// LPM: lookups in a VRF of 100K IPv4 routes (lengths 8..=32), and route updates
/// (insert + remove of a /24 and a /32 on the writer, publish not included).
fn lpm(c: &mut Criterion) {
    use vrouter::tables::lpm::LpmWriter;
    use vrouter::tables::{NhId, RouteEntry};
    let mut g = c.benchmark_group("lpm");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut w = LpmWriter::<4>::default();
    for i in 0..100_000u32 {
        let r = rnd();
        let len = 8 + (r % 25) as u8;
        let e = RouteEntry {
            nh: NhId(i % 1000),
            label: 0,
            attr: 0,
        };
        w.insert(((r >> 8) as u32).to_be_bytes(), len, e)
            .expect("route");
    }
    let lpm = w.snapshot();
    let addrs: Vec<[u8; 4]> = (0..1024).map(|_| (rnd() as u32).to_be_bytes()).collect();
    g.throughput(Throughput::Elements(addrs.len() as u64));
    g.bench_function("lookup_100k_routes", |b| {
        b.iter(|| addrs.iter().filter_map(|a| lpm.lookup(a)).count())
    });
    g.throughput(Throughput::Elements(2));
    let e = RouteEntry {
        nh: NhId(1),
        label: 0,
        attr: 0,
    };
    let keep = w.snapshot(); // a published snapshot shares nodes: updates copy paths
    g.bench_function("update_24_and_32", |b| {
        b.iter(|| {
            let a = (rnd() as u32).to_be_bytes();
            w.insert(a, 24, e).expect("insert");
            w.insert(a, 32, e).expect("insert");
            w.remove(a, 32);
            w.remove(a, 24);
        })
    });
    drop(keep);
    g.finish();
}

criterion_group!(benches, established, setup_rate, lpm);
criterion_main!(benches);
