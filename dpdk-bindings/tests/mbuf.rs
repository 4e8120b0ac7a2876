//! Mbufs, bursts and pools on a real EAL.

mod common;

use dpdk_bindings::{Burst, EalBuilder, Error, MAX_BURST};

#[test]
fn prepend_adj_append_trim_move_the_data_window() {
    let eal = common::eal("mbufops", "0", &[]);
    let pool = common::pool(&eal, "ops_pool", 63);
    let mut m = pool.alloc().unwrap();
    assert!(m.is_empty() && m.is_contiguous());
    let head = m.headroom();
    assert!(head >= 64, "standard headroom");

    assert!(m.extend_from_slice(b"payload!"));
    m.prepend(4).unwrap().copy_from_slice(b"HDR:");
    assert_eq!(m.data(), b"HDR:payload!");
    assert_eq!(m.headroom(), head - 4);
    assert_eq!(m.pkt_len(), 12);

    assert!(
        m.prepend(head).is_none(),
        "more than the headroom is refused"
    );
    assert_eq!(
        m.data(),
        b"HDR:payload!",
        "a refused prepend changes nothing"
    );

    assert!(m.adj(4));
    assert_eq!(m.data(), b"payload!");
    assert!(!m.adj(100), "cannot strip more than the data");
    assert!(m.trim(1));
    assert_eq!(m.data(), b"payload");
    m.data_mut()[0] = b'P';
    assert_eq!(m.data(), b"Payload");

    let tail = m.tailroom();
    assert!(m.append(tail + 1).is_none());
    assert_eq!(m.len(), 7);
}

#[test]
fn pool_exhaustion_is_reported_and_bulk_alloc_is_all_or_nothing() {
    let eal = common::eal("mpexh", "0", &[]);
    let pool = common::pool(&eal, "small_pool", 40);
    let mut held = Vec::new();
    while let Some(m) = pool.alloc() {
        held.push(m);
        assert!(held.len() <= 40);
    }
    assert_eq!(held.len(), 40);
    assert_eq!(pool.in_use_count(), 40);
    assert_eq!(pool.avail_count(), 0);

    held.truncate(10);
    let mut burst = Burst::new();
    assert!(
        !pool.alloc_bulk(&mut burst, 31),
        "30 free, 31 asked: nothing allocated"
    );
    assert!(burst.is_empty());
    assert!(pool.alloc_bulk(&mut burst, 30));
    assert_eq!(burst.len(), 30);
    drop(held);
    drop(burst);
    assert_eq!(pool.in_use_count(), 0);

    // The EAL refuses a second initialisation in the same process.
    let again = EalBuilder::new("again").no_huge(64).init().unwrap_err();
    assert!(matches!(again, Error::AlreadyInitialised));
}

#[test]
fn burst_holds_at_most_max_and_split_keeps_order() {
    let eal = common::eal("burstops", "0", &[]);
    let pool = common::pool(&eal, "burst_pool", 255);
    let mut burst = Burst::new();
    for i in 0..MAX_BURST {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&[i as u8]));
        burst.push(m).unwrap();
    }
    let extra = pool.alloc().unwrap();
    let extra = burst
        .push(extra)
        .expect_err("a full burst gives the mbuf back");
    drop(extra);

    let mut odd = Burst::new();
    burst.split_off_where(&mut odd, |m| m.data()[0] % 2 == 0);
    assert_eq!(burst.len(), MAX_BURST / 2);
    assert_eq!(odd.len(), MAX_BURST / 2);
    assert!(
        burst
            .as_slice()
            .windows(2)
            .all(|w| w[0].data()[0] < w[1].data()[0])
    );
    assert!(odd.as_slice().iter().all(|m| m.data()[0] % 2 == 1));
    let last = burst.pop().unwrap();
    assert_eq!(last.data(), &[(MAX_BURST - 2) as u8]);
    drop((last, burst, odd));
    assert_eq!(pool.in_use_count(), 0, "dropping bursts frees every mbuf");
}

#[test]
fn drain_yields_in_order_and_frees_what_it_does_not_yield() {
    let eal = common::eal("drain", "0", &[]);
    let pool = common::pool(&eal, "drain_pool", 127);
    let mut burst = Burst::new();
    for i in 0..10u8 {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&[i]));
        burst.push(m).unwrap();
    }
    let firsts: Vec<u8> = burst.drain().take(4).map(|m| m.data()[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3]);
    assert!(burst.is_empty(), "the burst gave up all ten");
    assert_eq!(
        pool.in_use_count(),
        0,
        "the six not taken were freed with the drain"
    );
    // The burst is usable again.
    burst.push(pool.alloc().unwrap()).unwrap();
    assert_eq!(burst.len(), 1);
}
