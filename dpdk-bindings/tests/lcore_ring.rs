//! Lcore launch and rings between lcores.

mod common;

use std::sync::Arc;

use dpdk_bindings::{Burst, LcoreId, Ring, RingSync};

#[test]
fn worker_lcore_runs_closure_and_returns_value() {
    let eal = common::eal("launch", "0-1", &[]);
    assert_eq!(eal.lcore_count(), 2);
    let workers = eal.worker_lcores();
    assert_eq!(workers, vec![LcoreId(1)]);
    assert_eq!(LcoreId::current(), Some(eal.main_lcore()));

    let job = eal
        .launch(workers[0], || (LcoreId::current(), 6 * 7))
        .unwrap();
    assert_eq!(job.join().unwrap(), (Some(LcoreId(1)), 42));

    let job = eal
        .launch(workers[0], || -> u32 { panic!("boom") })
        .unwrap();
    assert!(
        job.join().is_err(),
        "a panic on the lcore is reported to the joiner"
    );

    // The lcore is free again after a join.
    let job = eal.launch(workers[0], || 1).unwrap();
    assert_eq!(job.join().unwrap(), 1);
}

#[test]
fn ring_carries_mbufs_from_a_worker_lcore_in_order() {
    let eal = common::eal("ringxfer", "0-1", &[]);
    let pool = common::pool(&eal, "xfer_pool", 1023);
    let ring = Arc::new(Ring::new(&eal, "xfer_ring", 256, RingSync::MultiMulti).unwrap());
    const N: u16 = 2000;

    let (p, r) = (Arc::clone(&pool), Arc::clone(&ring));
    let producer = eal
        .launch(LcoreId(1), move || {
            let mut seq = 0u16;
            let mut burst = Burst::new();
            while seq < N || !burst.is_empty() {
                while seq < N && burst.spare() > 0 {
                    let Some(mut m) = p.alloc() else { break };
                    assert!(m.extend_from_slice(&common::frame(seq)));
                    burst.push(m).unwrap();
                    seq += 1;
                }
                r.enqueue_burst_shared(&mut burst)
                    .expect("multi-producer ring");
            }
            seq
        })
        .unwrap();

    let mut expect = 0u16;
    let mut burst = Burst::new();
    while expect < N {
        ring.dequeue_burst_shared(&mut burst).unwrap();
        for m in burst.as_slice() {
            assert_eq!(m.data(), common::frame(expect).as_slice(), "frame {expect}");
            expect += 1;
        }
        burst.clear();
    }
    assert_eq!(producer.join().unwrap(), N);
    assert_eq!(ring.count(), 0);
    assert_eq!(pool.in_use_count(), 0);

    let err = Ring::new(&eal, "bad_ring", 100, RingSync::SingleSingle).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
}
