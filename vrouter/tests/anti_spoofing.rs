//! The classify stage's checks on what a VM sends: its own MAC and addresses (or an
//! allowed address pair's), ARP only as itself, no group source MAC from anyone, no
//! IPv4-mapped IPv6 address. Each refusal has its own drop reason; the legitimate packet
//! beside it still passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vrouter::pipeline::{Disposition, DropReason};
use vrouter::tables::{AllowedSource, GlobalConfig};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr};

fn gw() -> MacAddr {
    GlobalConfig::default().vrouter_mac
}

/// vm1 with its own MAC set (and `allowed` pairs).
fn guarded(allowed: Vec<AllowedSource>) -> Testbed {
    let mut tb = Testbed::new(1024);
    let mut vm1 = tb.writer.tables().vifs.get(VM1.0).unwrap().as_ref().clone();
    vm1.vm_mac = Some(VM1_MAC);
    vm1.allowed = allowed;
    tb.writer.add_vif(vm1).unwrap();
    tb.writer.publish();
    tb
}

fn drops(tb: &Testbed, r: DropReason) -> u64 {
    tb.pipeline.stats.drops.get(r)
}

fn udp_from(smac: MacAddr, src: Ipv4Addr) -> Vec<u8> {
    ipv4_frame(smac, gw(), src, VM2_IP, 17, 4000, 53, 0, b"q")
}

#[test]
fn a_vm_sends_only_from_its_own_address_and_mac() {
    let mut tb = guarded(vec![]);
    // Its own address and MAC: forwarded.
    let (d, _) = tb.run_one(VM1, udp_from(VM1_MAC, VM1_IP), 1);
    assert_eq!(d, Disposition::Tx(VM2));
    // vm2's address (the "a sends to b as c"), and an address from nowhere.
    for src in [VM2_IP, Ipv4Addr::new(10, 1, 1, 99), Ipv4Addr::UNSPECIFIED] {
        let (d, _) = tb.run_one(VM1, udp_from(VM1_MAC, src), 2);
        assert_eq!(d, Disposition::Drop(DropReason::InvalidSource), "{src}");
    }
    assert_eq!(drops(&tb, DropReason::InvalidSource), 3);
    // Another MAC, even with its own address.
    let other = MacAddr([0x02, 0, 0, 0, 0x01, 0x99]);
    let (d, _) = tb.run_one(VM1, udp_from(other, VM1_IP), 3);
    assert_eq!(d, Disposition::Drop(DropReason::InvalidSourceMac));
    assert_eq!(drops(&tb, DropReason::InvalidSourceMac), 1);
    // Nothing was set up for the refused packets: one flow, the legitimate one.
    assert_eq!(tb.pipeline.stats.flows_created, 1);
}

#[test]
fn allowed_address_pairs_admit_their_prefix_with_their_mac() {
    let vrrp = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x07]);
    let mut tb = guarded(vec![
        AllowedSource {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 1, 50)),
            len: 32,
            mac: Some(vrrp),
        },
        AllowedSource {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 9, 0)),
            len: 24,
            mac: None,
        },
    ]);
    let vip = Ipv4Addr::new(10, 1, 1, 50);
    // The VRRP address with the VRRP MAC.
    assert_eq!(
        tb.run_one(VM1, udp_from(vrrp, vip), 1).0,
        Disposition::Tx(VM2)
    );
    // The VRRP address with the VM's own MAC: not what the pair allows.
    assert_eq!(
        tb.run_one(VM1, udp_from(VM1_MAC, vip), 2).0,
        Disposition::Drop(DropReason::InvalidSource)
    );
    // The pair's MAC with the VM's own address: the MAC is allowed, the address with it
    // is not.
    assert_eq!(
        tb.run_one(VM1, udp_from(vrrp, VM1_IP), 3).0,
        Disposition::Drop(DropReason::InvalidSource)
    );
    // A routed prefix behind the VM, with its own MAC.
    assert_eq!(
        tb.run_one(VM1, udp_from(VM1_MAC, Ipv4Addr::new(10, 1, 9, 77)), 4)
            .0,
        Disposition::Tx(VM2)
    );
    assert_eq!(
        tb.run_one(VM1, udp_from(VM1_MAC, Ipv4Addr::new(10, 1, 10, 1)), 5)
            .0,
        Disposition::Drop(DropReason::InvalidSource)
    );
}

#[test]
fn arp_is_answered_only_for_a_vm_asking_as_itself() {
    let mut tb = guarded(vec![]);
    let (d, _) = tb.run_one(VM1, arp_request(VM2_IP), 1);
    assert_eq!(d, Disposition::Tx(VM1), "its own question is answered");
    // The same question claiming vm2's address as the sender: not answered.
    let mut spoofed = arp_request(VM2_IP);
    let sender = VM2_IP.octets();
    spoofed[28..32].copy_from_slice(&sender);
    let (d, _) = tb.run_one(VM1, spoofed, 2);
    assert_eq!(d, Disposition::Drop(DropReason::InvalidSource));
    // With vm2's MAC as the sender hardware address (the frame's source still vm1's).
    let mut spoofed = arp_request(VM2_IP);
    spoofed[22..28].copy_from_slice(&VM2_MAC.0);
    let (d, _) = tb.run_one(VM1, spoofed, 3);
    assert_eq!(d, Disposition::Drop(DropReason::InvalidSource));
    assert_eq!(tb.pipeline.stats.arp_replies, 1);
}

#[test]
fn a_group_source_mac_is_refused_on_every_interface() {
    let mut tb = Testbed::new(1024);
    for (vif, mac) in [
        (VM1, MacAddr([0xff; 6])),
        (VM1, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])),
        (FABRIC, MacAddr([0x33, 0x33, 0, 0, 0, 1])),
        (HOST, MacAddr([0x01, 0x80, 0xc2, 0, 0, 0])),
    ] {
        let (d, _) = tb.run_one(vif, udp_from(mac, VM1_IP), 1);
        assert_eq!(
            d,
            Disposition::Drop(DropReason::InvalidSourceMac),
            "{vif:?}"
        );
    }
    assert_eq!(drops(&tb, DropReason::InvalidSourceMac), 4);
}

/// An Ethernet + IPv6 + UDP frame from vm1.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 8];
    wire::ethernet::Repr {
        src: VM1_MAC,
        dst: gw(),
        ethertype: wire::EtherType::Ipv6,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    wire::ipv6::Repr {
        src,
        dst,
        protocol: wire::IpProtocol::Udp,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
        upper_offset: 40,
        upper_len: 8,
        fragment: wire::ipv6::Fragment::None,
    }
    .emit(&mut f[14..54], 8)
    .unwrap();
    f[54..56].copy_from_slice(&4000u16.to_be_bytes());
    f[56..58].copy_from_slice(&53u16.to_be_bytes());
    f[58..60].copy_from_slice(&8u16.to_be_bytes());
    f
}

#[test]
fn ipv4_mapped_ipv6_addresses_never_alias_an_ipv4_flow() {
    let mut tb = Testbed::new(1024);
    let mapped = VM2_IP.to_ipv6_mapped();
    let own: Ipv6Addr = "fd00:1::3".parse().unwrap();
    let mut vm1 = tb.writer.tables().vifs.get(VM1.0).unwrap().as_ref().clone();
    vm1.ip6 = Some(own);
    tb.writer.add_vif(vm1).unwrap();
    tb.writer.publish();
    // An IPv4 flow vm1 -> vm2 exists.
    assert_eq!(
        tb.run_one(VM1, udp_from(VM1_MAC, VM1_IP), 1).0,
        Disposition::Tx(VM2)
    );
    // An IPv6 packet to vm2's IPv4-mapped address must not hit it.
    let (d, _) = tb.run_one(VM1, udp6(own, mapped), 2);
    assert_eq!(d, Disposition::Drop(DropReason::MappedAddress));
    // Nor from a mapped source.
    let (d, _) = tb.run_one(VM1, udp6(VM1_IP.to_ipv6_mapped(), own), 3);
    assert_eq!(d, Disposition::Drop(DropReason::MappedAddress));
    assert_eq!(tb.pipeline.stats.flow_hits, 0);
}
