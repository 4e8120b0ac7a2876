//! Shared EAL set-up for the integration tests. Each test runs in its own process (nextest),
//! because the EAL can be initialised once per process.
#![allow(dead_code)]

use std::sync::Arc;

use dpdk_bindings::{DEFAULT_DATA_ROOM, Eal, EalBuilder, Mempool, SocketId};

/// Boots a real EAL without hugepages or PCI, with the given vdevs and lcore list.
pub fn eal(tag: &str, lcores: &str, vdevs: &[&str]) -> Eal {
    let mut b = EalBuilder::new("dpdk-bindings-test")
        .no_huge(256)
        .no_pci()
        .lcores(lcores)
        .file_prefix(format!("{tag}{}", std::process::id()))
        .log_level("lib.eal:error");
    for v in vdevs {
        b = b.vdev(*v);
    }
    b.init()
        .expect("EAL init (tests run one per process under `cargo nextest`)")
}

pub fn pool(eal: &Eal, name: &str, count: u32) -> Arc<Mempool> {
    Arc::new(Mempool::new(eal, name, count, 0, DEFAULT_DATA_ROOM, SocketId::ANY).expect("mempool"))
}

/// A 60-byte Ethernet frame whose bytes encode `seq`, so frames can be told apart.
pub fn frame(seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    f[14..16].copy_from_slice(&seq.to_be_bytes());
    f
}
