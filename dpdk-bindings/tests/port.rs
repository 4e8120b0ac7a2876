//! Ports on real vdevs: net_ring loops frames back, net_null makes and sinks them.

mod common;

use dpdk_bindings::{Burst, Error, Port, PortConfig, port_info};

#[test]
fn ring_port_returns_every_frame_byte_for_byte_and_counts_them() {
    let eal = common::eal("ringport", "0", &["net_ring0"]);
    let pool = common::pool(&eal, "rp_pool", 1023);
    let id = eal.port_by_name("net_ring0").expect("net_ring0 exists");
    let info = port_info(&eal, id).unwrap();
    assert_eq!(info.driver, "net_ring");
    assert_eq!(info.name, "net_ring0");

    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
    let (mut rx, mut tx) = port.take_queues().unwrap();
    assert!(port.take_queues().is_none(), "queues are handed out once");

    let mut burst = Burst::new();
    for seq in 0..32u16 {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&common::frame(seq)));
        burst.push(m).unwrap();
    }
    assert_eq!(tx[0].tx_burst(&mut burst), 32);
    assert!(burst.is_empty(), "sent mbufs leave the burst");

    let mut got = Burst::new();
    while got.len() < 32 {
        assert!(
            rx[0].rx_burst(&mut got) > 0,
            "net_ring must return what was sent"
        );
    }
    for (seq, m) in got.as_slice().iter().enumerate() {
        assert_eq!(
            m.data(),
            common::frame(seq as u16).as_slice(),
            "frame {seq}"
        );
    }
    let stats = port.stats().unwrap();
    assert_eq!((stats.opackets, stats.ipackets), (32, 32));
    // net_ring and net_null count packets only; their byte counters stay 0 in DPDK 22.11.
    drop(got);
    assert_eq!(pool.in_use_count(), 0, "every mbuf went back to the pool");
}

#[test]
fn null_port_generates_64_byte_frames_and_sinks_tx() {
    let eal = common::eal("nullport", "0", &["net_null0"]);
    let pool = common::pool(&eal, "np_pool", 1023);
    let id = eal.port_by_name("net_null0").unwrap();
    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
    let (mut rx, mut tx) = port.take_queues().unwrap();

    let mut burst = Burst::new();
    let n = rx[0].rx_burst(&mut burst);
    assert!(n > 0);
    assert!(burst.as_slice().iter().all(|m| m.len() == 64));

    let sent = tx[0].tx_burst(&mut burst);
    assert_eq!(sent, n, "net_null accepts every frame");
    let stats = port.stats().unwrap();
    assert_eq!(stats.opackets, n as u64);
    port.reset_stats().unwrap();
    assert_eq!(port.stats().unwrap().opackets, 0);
}

#[test]
fn rss_spreads_null_port_over_several_queues() {
    let eal = common::eal("rssport", "0", &["net_null0"]);
    let pool = common::pool(&eal, "rss_pool", 4095);
    let id = eal.port_by_name("net_null0").unwrap();
    let cfg = PortConfig {
        rx_queues: 4,
        tx_queues: 4,
        rx_desc: 256,
        tx_desc: 256,
        ..PortConfig::default()
    };
    let mut port = Port::configure(&eal, id, &cfg, &pool).unwrap();
    let (mut rx, tx) = port.take_queues().unwrap();
    assert_eq!((rx.len(), tx.len()), (4, 4));
    for (q, queue) in rx.iter_mut().enumerate() {
        let mut b = Burst::new();
        assert!(queue.rx_burst(&mut b) > 0, "queue {q} receives");
        assert_eq!(queue.queue().raw() as usize, q);
    }
}

#[test]
fn bad_port_configuration_is_refused_with_a_reason() {
    let eal = common::eal("badport", "0", &["net_ring0"]);
    let pool = common::pool(&eal, "bp_pool", 511);
    let id = eal.port_by_name("net_ring0").unwrap();
    let max = port_info(&eal, id).unwrap().max_rx_queues;
    let cfg = PortConfig {
        rx_queues: max + 1,
        ..PortConfig::default()
    };
    let err = Port::configure(&eal, id, &cfg, &pool).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("rx_queues"), "{err}");

    let err = eal.port_by_name("net_nosuch0").unwrap_err();
    assert!(err.errno().is_some(), "a DPDK error with errno: {err}");

    // The refused configuration left the port usable.
    Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
}

#[test]
fn a_vdev_plugged_in_while_running_forwards_and_unplugs() {
    let eal = common::eal("hotplug", "0", &[]);
    let pool = common::pool(&eal, "hp_pool", 1023);
    assert!(eal.ports().is_empty());
    let id = eal.hotplug_vdev("net_ring7").expect("plug net_ring7");
    assert_eq!(port_info(&eal, id).unwrap().name, "net_ring7");
    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
    let (mut rx, mut tx) = port.take_queues().unwrap();
    let mut b = Burst::new();
    let mut m = pool.alloc().unwrap();
    assert!(m.extend_from_slice(&common::frame(1)));
    b.push(m).unwrap();
    assert_eq!(tx[0].tx_burst(&mut b), 1);
    assert_eq!(rx[0].rx_burst(&mut b), 1);
    drop((b, rx, tx, port));
    eal.unplug_vdev("net_ring7").expect("unplug");
    assert!(eal.ports().is_empty(), "the port is gone");
    assert!(
        eal.unplug_vdev("net_ring7").is_err(),
        "unplugging twice is an error"
    );
    assert!(eal.hotplug_vdev("net_nosuchdriver0").is_err());
}

#[test]
fn port_from_rings_reads_and_writes_the_callers_rings() {
    use dpdk_bindings::{Ring, RingSync};
    use std::sync::Arc;
    let eal = common::eal("fromrings", "0", &[]);
    let pool = common::pool(&eal, "fr_pool", 1023);
    let inq = Arc::new(Ring::new(&eal, "fr_in", 256, RingSync::MultiMulti).unwrap());
    let outq = Arc::new(Ring::new(&eal, "fr_out", 256, RingSync::MultiMulti).unwrap());
    let single = Arc::new(Ring::new(&eal, "fr_single", 256, RingSync::SingleSingle).unwrap());
    assert!(
        eal.port_from_rings("fr_bad", &[Arc::clone(&single)], &[Arc::clone(&outq)])
            .is_err(),
        "single-producer rings are refused"
    );
    let id = eal
        .port_from_rings("fr_port", &[Arc::clone(&inq)], &[Arc::clone(&outq)])
        .unwrap();
    assert_eq!(eal.port_by_name("net_ring_fr_port").unwrap(), id);
    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
    let (mut rx, mut tx) = port.take_queues().unwrap();

    // What the caller enqueues arrives on the port's RX queue, in order.
    let mut b = Burst::new();
    for seq in 0..10u16 {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&common::frame(seq)));
        b.push(m).unwrap();
    }
    assert_eq!(inq.enqueue_burst_shared(&mut b), Some(10));
    let mut got = Burst::new();
    assert_eq!(
        rx[0].rx_burst_max(&mut got, 4),
        4,
        "at most the asked burst"
    );
    assert_eq!(rx[0].rx_burst(&mut got), 6);
    for (seq, m) in got.as_slice().iter().enumerate() {
        assert_eq!(m.data(), common::frame(seq as u16).as_slice());
    }
    // What the port sends lands in the caller's TX ring.
    assert_eq!(tx[0].tx_burst(&mut got), 10);
    let mut back = Burst::new();
    assert_eq!(outq.dequeue_burst_shared(&mut back), Some(10));
    assert_eq!(back.as_slice()[9].data(), common::frame(9).as_slice());
    drop(back);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn the_port_keeps_its_pool_and_cannot_stop_while_a_queue_handle_is_out() {
    let eal = common::eal("lifetimes", "0", &["net_ring0"]);
    let pool = common::pool(&eal, "lt_pool", 1023);
    let id = eal.port_by_name("net_ring0").unwrap();
    let mut port = Port::configure(&eal, id, &PortConfig::default(), &pool).unwrap();
    assert_eq!(
        std::sync::Arc::strong_count(&pool),
        2,
        "the port holds the pool"
    );
    let (mut rx, mut tx) = port.take_queues().unwrap();

    // The caller lets go of the pool: the port's RX rings still fill from it.
    let mut b = Burst::new();
    let mut m = pool.alloc().unwrap();
    assert!(m.extend_from_slice(&common::frame(7)));
    b.push(m).unwrap();
    let weak = std::sync::Arc::downgrade(&pool);
    drop(pool);
    assert!(weak.upgrade().is_some(), "alive while the port is");
    assert_eq!(tx[0].tx_burst(&mut b), 1);
    assert_eq!(rx[0].rx_burst(&mut b), 1);
    assert_eq!(b.as_slice()[0].data(), common::frame(7).as_slice());
    drop(b);

    // No stop while a queue can be polled.
    let e = port.stop().unwrap_err();
    assert!(
        e.to_string().contains("2 queue handles are still out"),
        "{e}"
    );
    assert!(port.is_started());
    drop(rx);
    assert!(port.stop().is_err(), "the TX handle is still out");
    drop(tx);
    port.stop().unwrap();
    assert!(!port.is_started());
    assert!(port.take_queues().is_none(), "no handles on a stopped port");
    port.start().unwrap();
    let (mut rx, mut tx) = port.take_queues().expect("handles again once started");
    let mut b = Burst::new();
    let mut m = weak.upgrade().unwrap().alloc().unwrap();
    assert!(m.extend_from_slice(&common::frame(8)));
    b.push(m).unwrap();
    assert_eq!(tx[0].tx_burst(&mut b), 1);
    assert_eq!(rx[0].rx_burst(&mut b), 1);
    drop((b, rx, tx, port));
    assert!(weak.upgrade().is_none(), "the pool goes with the port");
}

/// A jumbo MTU is set on a driver that takes it, and a 9,000-byte frame goes through in
/// one segment of a pool sized for it; a driver whose frames stop at 1522 bytes (net_tap)
/// refuses MTU 9000 at configuration, naming its limit, and still takes 1500.
#[test]
fn a_jumbo_mtu_is_set_where_the_driver_takes_it_and_refused_where_not() {
    let tap = format!("vrmtu{}", std::process::id() % 100_000);
    let eal = common::eal(
        "jumbo",
        "0",
        &["net_ring0", &format!("net_tap0,iface={tap}")],
    );
    let pool = std::sync::Arc::new(
        dpdk_bindings::Mempool::new(
            &eal,
            "jumbo_pool",
            511,
            0,
            dpdk_bindings::data_room_for(9018),
            dpdk_bindings::SocketId::ANY,
        )
        .unwrap(),
    );
    let jumbo = PortConfig {
        mtu: 9000,
        ..PortConfig::default()
    };
    let ring = eal.port_by_name("net_ring0").unwrap();
    assert!(port_info(&eal, ring).unwrap().max_mtu >= 9000);
    let mut port = Port::configure(&eal, ring, &jumbo, &pool).unwrap();
    assert_eq!(port.mtu().unwrap(), 9000);
    let (mut rx, mut tx) = port.take_queues().unwrap();
    let mut frame = common::frame(7);
    frame.resize(9014, 0xa5);
    let mut b = Burst::new();
    let mut m = pool.alloc().unwrap();
    assert!(m.extend_from_slice(&frame), "one segment holds the frame");
    b.push(m).unwrap();
    assert_eq!(tx[0].tx_burst(&mut b), 1);
    assert_eq!(rx[0].rx_burst(&mut b), 1);
    assert_eq!(b.as_slice()[0].data(), frame.as_slice());
    drop((b, rx, tx, port));

    let tapid = eal.port_by_name("net_tap0").unwrap();
    let limit = port_info(&eal, tapid).unwrap().max_mtu;
    assert!(limit < 9000, "net_tap's limit: {limit}");
    let err = Port::configure(&eal, tapid, &jumbo, &pool).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("mtu 9000") && err.to_string().contains(&limit.to_string()),
        "{err}"
    );
    let small = PortConfig {
        rx_desc: 128,
        tx_desc: 128,
        ..PortConfig::default()
    };
    let port = Port::configure(&eal, tapid, &small, &pool).unwrap();
    assert_eq!(port.mtu().unwrap(), 1500);
}
