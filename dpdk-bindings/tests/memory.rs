//! Hugepage-backed arrays and memzones (plain memory under --no-huge).

mod common;

use dpdk_bindings::{HugeSlice, Memzone, SocketId};

#[test]
fn huge_slice_is_initialised_aligned_and_writable() {
    let eal = common::eal("hugeslice", "0", &[]);
    let mut s = HugeSlice::new_with(&eal, 1 << 20, SocketId::ANY, |i| (i as u64) * 2).unwrap();
    assert_eq!(s.len(), 1 << 20);
    assert_eq!(s.as_ptr() as usize % 64, 0, "cache-line aligned");
    assert!(s.iter().enumerate().all(|(i, v)| *v == i as u64 * 2));
    s[12345] = 7;
    assert_eq!(s[12345], 7);

    // Elements with destructors are dropped with the slice.
    let counter = std::sync::Arc::new(());
    let with_drop =
        HugeSlice::new_with(&eal, 10, SocketId::ANY, |_| std::sync::Arc::clone(&counter)).unwrap();
    assert_eq!(std::sync::Arc::strong_count(&counter), 11);
    drop(with_drop);
    assert_eq!(std::sync::Arc::strong_count(&counter), 1);
}

#[test]
fn memzone_is_zeroed_named_and_unique() {
    let eal = common::eal("memzone", "0", &[]);
    let mut mz = Memzone::reserve(&eal, "vr_test_zone", 4096, SocketId::ANY).unwrap();
    assert_eq!(mz.name(), "vr_test_zone");
    assert!(mz.bytes().len() >= 4096);
    assert!(mz.bytes().iter().all(|b| *b == 0));
    mz.bytes_mut()[..5].copy_from_slice(b"hello");
    assert_eq!(&mz.bytes()[..5], b"hello");

    let dup = Memzone::reserve(&eal, "vr_test_zone", 64, SocketId::ANY).unwrap_err();
    assert!(
        dup.errno().is_some(),
        "duplicate name refused by DPDK: {dup}"
    );
    drop(mz);
    Memzone::reserve(&eal, "vr_test_zone", 64, SocketId::ANY).expect("name free again");
}
