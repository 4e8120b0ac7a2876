//! Stage 2: the flow table. A hit applies the cached decision (re-resolving the route
//! first if the VRF's routes changed since, keeping the ECMP member while it exists). A
//! miss sets the flow up right here on the lcore: route lookup, ECMP member choice,
//! policy of the sending and the receiving interface, SNAT port, then both entries of the
//! pair. Nothing is punted to the agent.

use std::net::IpAddr;

use super::{Ctx, Disposition, DropReason, Meta};
use crate::flow::{FlowAction, FlowHit, FlowKey, FlowVerdict, Hairpin, NatRewrite};
use crate::packet::PacketBuf;
use crate::policy::{self, Action, FlowMatch, addr_bits};
use crate::tables::{Nexthop, NhId, RouteEntry, Snapshot, Vif, VifKind, Vrf};

pub(super) fn run<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, pkts: &mut [B], metas: &mut [Meta]) {
    // Bulk lookup in three passes, so the cache misses of the whole burst overlap instead
    // of stalling packet by packet: bucket signatures, then matching entries, then lookups.
    for m in metas.iter().filter(|m| m.pending()) {
        ctx.flows.prefetch_buckets(m.hash);
    }
    for m in metas.iter().filter(|m| m.pending()) {
        ctx.flows.prefetch_entry(m.hash);
    }
    for (p, m) in pkts.iter().zip(metas.iter_mut()) {
        if !m.pending() {
            continue;
        }
        let Some(vrf) = ctx.snap.vrfs.get(m.vrf.0) else {
            m.done = Some(Disposition::Drop(DropReason::InvalidVrf));
            continue;
        };
        let len = p.len() as u64;
        let mut found = ctx.flows.lookup(&m.key, m.hash);
        // Policy changed since this flow was decided: its first direction is decided
        // again, as a new flow (its reply entry follows, being replaced with it). NATed
        // flows keep their translation.
        if let Some(hit) = found.filter(|h| {
            h.forward
                && !m.icmp_error
                && h.action.policy_gen != ctx.snap.policy_gen
                && h.action.nat.is_none()
        }) {
            ctx.flows.delete_pair(hit.idx);
            ctx.stats.flows_reevaluated += 1;
            found = None;
        }
        // A destination that became a service (a new VIP or node port) since: the flow is
        // set up again, translated, as the routes changed under it.
        if let Some(hit) = found.filter(|h| {
            h.forward
                && !m.icmp_error
                && h.action.route_gen != vrf.generation
                && h.action.nat.is_none()
                && m.label_nh.is_none()
                && service_at(ctx.snap, vrf, &m.key).is_some()
        }) {
            ctx.flows.delete_pair(hit.idx);
            ctx.stats.flows_reevaluated += 1;
            found = None;
        }
        // A tunnel packet may hit only a flow its sending node takes part in: the one that
        // sent the flow's first packet, or the one its replies come back from.
        if let (Some(hit), Some(node)) = (found, decapsulated(m)) {
            if hit.action.verdict == FlowVerdict::Forward && hit.action.from_node != u32::from(node)
            {
                m.done = Some(Disposition::Drop(DropReason::TunnelSourceMismatch));
                continue;
            }
        }
        match found {
            Some(hit) => {
                ctx.stats.flow_hits += 1;
                let action = refresh(ctx, vrf, m, &hit);
                ctx.flows.touch(hit.idx, len, ctx.now, m.tcp_flags);
                m.flow = Some(hit.idx);
                apply(m, action);
            }
            // Fabric traffic to the node that no flow claims is the host's, unless it is
            // for a node port.
            None if m.lookup_only
                && service_at(ctx.snap, vrf, &m.key) != Some(ServiceAt::NodePort) =>
            {
                m.done = Some(
                    ctx.snap
                        .global
                        .host_vif
                        .map_or(Disposition::Drop(DropReason::InvalidVif), Disposition::Tx),
                );
            }
            // Errors follow flows; they never set one up.
            None if m.icmp_error => {
                m.done = Some(Disposition::Drop(DropReason::IcmpErrorNoFlow));
            }
            None => {
                ctx.stats.flow_misses += 1;
                match setup(ctx, vrf, vif, m) {
                    Ok((fwd, rev_key, rev)) => {
                        match ctx.flows.insert_pair(
                            (&m.key, &fwd),
                            (&rev_key, &rev),
                            ctx.now,
                            ctx.aging,
                        ) {
                            Ok((fi, _)) => {
                                ctx.stats.flows_created += 1;
                                ctx.flows.touch(fi, len, ctx.now, m.tcp_flags);
                                m.flow = Some(fi);
                                apply(m, fwd);
                            }
                            Err(_) => {
                                if let Some(n) = fwd.nat.filter(|n| n.pooled) {
                                    ctx.snat.for_proto(m.key.proto).free(n.port);
                                }
                                m.done = Some(Disposition::Drop(DropReason::FlowTableFull));
                            }
                        }
                    }
                    Err(r) => m.done = Some(Disposition::Drop(r)),
                }
            }
        }
    }
}

fn apply(m: &mut Meta, a: FlowAction) {
    match a.verdict {
        FlowVerdict::Forward => m.action = Some(a),
        FlowVerdict::Drop(r) => m.done = Some(Disposition::Drop(r)),
    }
}

/// Resolves a route entry to the nexthop and label to use: the member of a composite
/// chosen by the flow hash, or the entry itself.
fn resolve(snap: &Snapshot, r: &RouteEntry, hash: u64) -> Result<(NhId, u32), DropReason> {
    let nh = snap
        .nexthops
        .get(r.nh.0)
        .ok_or(DropReason::InvalidNexthop)?;
    Ok(match &**nh {
        Nexthop::Composite(e) => {
            let m = e.select(hash as u32);
            (m.nh, m.label)
        }
        // The node's address, as an answer's way back or as a destination: the host.
        Nexthop::NodePorts(n) => (n.host, 0),
        _ => (r.nh, r.label),
    })
}

/// How a flow key's destination is a service, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServiceAt {
    /// A service address.
    Address,
    /// A node port of the node's address.
    NodePort,
}

fn service_at(snap: &Snapshot, vrf: &Vrf, k: &FlowKey) -> Option<ServiceAt> {
    let r = vrf.lookup(k.dst)?;
    match &**snap.nexthops.get(r.nh.0)? {
        Nexthop::Service(_) => Some(ServiceAt::Address),
        Nexthop::NodePorts(np) => np.find(k.proto, k.dport).map(|_| ServiceAt::NodePort),
        _ => None,
    }
}

/// The cached action, re-resolved if the VRF's routes changed since it was set up.
fn refresh(ctx: &mut Ctx<'_>, vrf: &Vrf, m: &Meta, hit: &FlowHit) -> FlowAction {
    let a = hit.action;
    let stale = a.route_gen != vrf.generation
        && a.verdict == FlowVerdict::Forward
        && a.nat.is_none()
        && m.label_nh.is_none();
    if !stale {
        return a;
    }
    let mut new = FlowAction {
        route_gen: vrf.generation,
        ..a
    };
    match vrf.lookup(m.key.dst) {
        None => {
            new = FlowAction {
                route_gen: vrf.generation,
                ..FlowAction::drop(DropReason::NoRoute)
            }
        }
        Some(r) => {
            let keep = match ctx.snap.nexthops.get(r.nh.0).map(|n| &**n) {
                Some(Nexthop::Composite(e)) => e
                    .members()
                    .iter()
                    .any(|x| x.nh == a.nh && x.label == a.label),
                _ => false,
            };
            if !keep {
                match resolve(ctx.snap, &r, m.hash) {
                    Ok((nh, label)) => (new.nh, new.label) = (nh, label),
                    Err(reason) => {
                        new = FlowAction {
                            route_gen: vrf.generation,
                            ..FlowAction::drop(reason)
                        }
                    }
                }
            }
        }
    }
    ctx.flows.update_action(hit, &new);
    ctx.stats.flows_reresolved += 1;
    new
}

type Setup = (FlowAction, FlowKey, FlowAction);

/// The node that sent a decapsulated packet (`None` for anything else).
fn decapsulated(m: &Meta) -> Option<std::net::Ipv4Addr> {
    m.tunnel_src.filter(|_| !m.lookup_only)
}

/// A decapsulated packet is decided with the attributes of its source's route, so the
/// source must be one the sending node may speak for: not one of this node's interfaces,
/// nor an address routed to another node. Sources routed elsewhere (ECMP, a service, the
/// SNAT default, nowhere) are clients the sending node translated or shares.
fn check_tunnel_source(
    snap: &Snapshot,
    src_route: Option<&RouteEntry>,
    node: std::net::Ipv4Addr,
) -> Result<(), DropReason> {
    let Some(r) = src_route else {
        return Ok(());
    };
    match snap.nexthops.get(r.nh.0).map(|n| &**n) {
        Some(Nexthop::Tunnel(t)) if t.dst != node => Err(DropReason::TunnelSourceMismatch),
        Some(Nexthop::Encap { vif, .. })
            if snap
                .vifs
                .get(vif.0)
                .is_some_and(|v| v.kind == VifKind::Virtual) =>
        {
            Err(DropReason::TunnelSourceMismatch)
        }
        _ => Ok(()),
    }
}

fn setup(ctx: &mut Ctx<'_>, vrf: &Vrf, vif: &Vif, m: &Meta) -> Result<Setup, DropReason> {
    let snap = ctx.snap;
    let k = &m.key;
    // Destination: the label's nexthop for decapsulated packets, else the route.
    let route = match m.label_nh {
        Some(nh) => RouteEntry {
            nh,
            label: 0,
            attr: 0,
        },
        None => vrf.lookup(k.dst).ok_or(DropReason::NoRoute)?,
    };
    // A node port of the node's address stands for its service's port.
    let (service_nh, service_port) = match snap.nexthops.get(route.nh.0).map(|n| &**n) {
        Some(Nexthop::NodePorts(np)) => np.find(k.proto, k.dport).unwrap_or((np.host, k.dport)),
        _ => (route.nh, k.dport),
    };
    // A service address: a backend by hash, the destination translated to it.
    let mut dnat: Option<(IpAddr, u16)> = None;
    let (nh_id, label) = match snap.nexthops.get(service_nh.0).map(|n| &**n) {
        Some(Nexthop::Service(s)) => {
            let target = s
                .target(k.proto, service_port)
                .ok_or(DropReason::NoServicePort)?;
            let (member, addr) = s.pick(m.hash as u32, k.src);
            dnat = Some((addr, target));
            (member.nh, member.label)
        }
        _ => resolve(
            snap,
            &RouteEntry {
                nh: service_nh,
                ..route
            },
            m.hash,
        )?,
    };
    let nh = snap
        .nexthops
        .get(nh_id.0)
        .ok_or(DropReason::InvalidNexthop)?;
    let src_route = vrf.lookup(k.src);
    if let Some(node) = decapsulated(m) {
        check_tunnel_source(snap, src_route.as_ref(), node)?;
    }

    // Who is talking to whom, for policy.
    let from_vm = vif.kind == VifKind::Virtual;
    let src_attr = if from_vm {
        snap.attr(vif.attr)
    } else {
        snap.attr(src_route.map_or(0, |r| r.attr))
    };
    // A local VM; an encap nexthop out of the fabric (a network forwarded in the
    // underlay, the gateway) is a remote destination, known by its route.
    let dst_vif = match &**nh {
        Nexthop::Encap { vif, .. } => snap.vifs.get(vif.0).filter(|v| v.kind == VifKind::Virtual),
        _ => None,
    };
    // A remote backend is known by its own route (the VIP's says the service's network).
    let dst_attr = match (dst_vif, dnat) {
        (Some(v), _) => snap.attr(v.attr),
        (None, Some((addr, _))) => snap.attr(vrf.lookup(addr).map_or(0, |r| r.attr)),
        (None, None) => snap.attr(route.attr),
    };
    // Policy sees a service flow as it reaches the backend.
    let (dst, dport) = dnat.unwrap_or((k.dst, k.dport));
    let fm = FlowMatch {
        proto: k.proto,
        src: addr_bits(k.src),
        dst: addr_bits(dst),
        sport: k.sport,
        dport,
        src_attr,
        dst_attr,
    };
    // The client's network policies see a service flow as sent: to the service, in the
    // service's network (the VIP route's attributes).
    let sent = dnat.map(|_| FlowMatch {
        dst: addr_bits(k.dst),
        dport: k.dport,
        dst_attr: snap.attr(route.attr),
        ..fm
    });
    let denied = (from_vm
        && vif.policy.as_ref().is_some_and(|p| {
            let d = match &sent {
                Some(sent) => policy::evaluate_service(&p.egress, &fm, sent),
                None => policy::evaluate(&p.egress, &fm),
            };
            d.action == Action::Deny
        }))
        || dst_vif
            .and_then(|v| v.policy.as_ref())
            .is_some_and(|p| policy::evaluate(&p.ingress, &fm).action == Action::Deny);
    if denied {
        // A drop pair: later packets of the flow (both ways) are dropped at the hit.
        let d = FlowAction {
            route_gen: vrf.generation,
            policy_gen: snap.policy_gen,
            ..FlowAction::drop(DropReason::PolicyDeny)
        };
        return Ok((d, k.reversed(), d));
    }

    let mut fwd = FlowAction {
        verdict: FlowVerdict::Forward,
        nh: nh_id,
        label,
        nat: None,
        hairpin: Hairpin::No,
        route_gen: vrf.generation,
        policy_gen: snap.policy_gen,
        mirror: false,
        from_node: decapsulated(m).map_or(0, u32::from),
    };
    // A source sent by another node through a tunnel that this VRF routes nowhere, only
    // out of the node (the SNAT default), or to this node's own host: a client outside
    // the overlay whose connection that node translated (an external IP or node port
    // there). Replies go back to that node, which holds the other half of the
    // translation.
    let back = m
        .tunnel_src
        .filter(|_| {
            src_route.is_none_or(|r| {
                matches!(
                    snap.nexthops.get(r.nh.0).map(|n| &**n),
                    Some(Nexthop::Snat { .. } | Nexthop::Receive { .. } | Nexthop::NodePorts(_))
                )
            })
        })
        .and_then(|n| snap.node_route(n));
    let mut rev = match back {
        Some(nh) => FlowAction {
            nh,
            label: 0,
            ..fwd
        },
        None => match src_route.map(|r| resolve(snap, &r, k.reversed().hash())) {
            Some(Ok((nh, label))) => FlowAction { nh, label, ..fwd },
            Some(Err(reason)) => FlowAction {
                route_gen: vrf.generation,
                ..FlowAction::drop(reason)
            },
            None => FlowAction {
                route_gen: vrf.generation,
                ..FlowAction::drop(DropReason::NoRoute)
            },
        },
    };
    // Replies through a tunnel come from the node it leads to, and only from it.
    rev.from_node = match snap.nexthops.get(fwd.nh.0).map(|n| &**n) {
        Some(Nexthop::Tunnel(t)) => u32::from(t.dst),
        _ => 0,
    };
    // Replies come from the destination's side: a local interface in another VRF (a VN
    // reached through a network policy) sends them in its own VRF.
    // Packets delivered to the host answer from the host vif, in its VRF.
    let mut rev_key = k.reversed();
    let reply_vif = match &**nh {
        Nexthop::Receive { vif } => snap.vifs.get(vif.0),
        _ => dst_vif,
    };
    if let Some(v) = reply_vif {
        rev_key.vrf = v.vrf;
    }
    if let Some((addr, target)) = dnat {
        // To the backend; its replies come back from it and leave as the service.
        fwd.nat = Some(NatRewrite {
            source: false,
            addr,
            port: target,
            pooled: false,
        });
        rev_key.src = addr;
        rev_key.sport = target;
        rev.nat = Some(NatRewrite {
            source: true,
            addr: k.dst,
            port: k.dport,
            pooled: false,
        });
        // A client that lands on itself (hairpin) would get its own address back as the
        // source, which its kernel drops: the source becomes the service's address too,
        // so that it answers the service, and its answers are translated both ways.
        if addr == k.src {
            fwd.hairpin = Hairpin::Source;
            rev_key.dst = k.dst;
            rev.hairpin = Hairpin::Destination;
        }
    }

    if let Nexthop::Snat {
        vif: fabric, ip, ..
    } = &**nh
    {
        let IpAddr::V4(_) = k.src else {
            return Err(DropReason::InvalidProtocol);
        };
        let port = if matches!(k.proto, 6 | 17 | 1) {
            ctx.snat
                .for_proto(k.proto)
                .alloc()
                .ok_or(DropReason::NatNoPort)?
        } else {
            return Err(DropReason::InvalidProtocol);
        };
        let fabric_vrf = snap
            .vifs
            .get(fabric.0)
            .map(|v| v.vrf)
            .ok_or(DropReason::InvalidVif)?;
        fwd.nat = Some(NatRewrite {
            source: true,
            addr: IpAddr::V4(*ip),
            port,
            pooled: true,
        });
        let icmp = k.proto == 1;
        rev_key = FlowKey {
            vrf: fabric_vrf,
            proto: k.proto,
            src: k.dst,
            dst: IpAddr::V4(*ip),
            sport: if icmp { port } else { k.dport },
            dport: if icmp { 0 } else { port },
        };
        rev.nat = Some(NatRewrite {
            source: false,
            addr: k.src,
            port: k.sport,
            pooled: false,
        });
    }
    Ok((fwd, rev_key, rev))
}
