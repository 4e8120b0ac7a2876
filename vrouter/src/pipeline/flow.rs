//! Stage 2: the flow table. A hit applies the cached decision (re-resolving the route
//! first if the VRF's routes changed since, keeping the ECMP member while it exists). A
//! miss sets the flow up right here on the lcore: route lookup, ECMP member choice,
//! policy of the sending and the receiving interface, SNAT port, then both entries of the
//! pair. Nothing is punted to the agent.

use std::net::IpAddr;

use super::{Ctx, Disposition, DropReason, Meta};
use crate::flow::table::Quota;
use crate::flow::{FlowAction, FlowHit, FlowKey, FlowVerdict, Hairpin, InsertError, NatRewrite};
use crate::nat::SnatRefusal;
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
        // Policy changed since this flow was decided: decided again, whichever half of
        // the pair the packet hit (NAT'd flows and replies too).
        if let Some(hit) =
            found.filter(|h| !m.icmp_error && h.action.policy_gen != ctx.snap.policy_gen)
        {
            ctx.stats.flows_reevaluated += 1;
            found = redecide(ctx, vif, m, &hit);
            if found.is_none() {
                ctx.flows.delete_pair(hit.idx);
            }
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
                    Ok(Setup {
                        fwd,
                        rev_key,
                        rev,
                        quota,
                    }) => {
                        match ctx.flows.insert_pair_within(
                            (&m.key, &fwd),
                            (&rev_key, &rev),
                            ctx.now,
                            ctx.aging,
                            quota,
                        ) {
                            Ok((fi, _)) => {
                                ctx.stats.flows_created += 1;
                                ctx.flows.touch(fi, len, ctx.now, m.tcp_flags);
                                m.flow = Some(fi);
                                apply(m, fwd);
                            }
                            Err(e) => {
                                if let Some(n) = fwd.nat.filter(|n| n.pooled) {
                                    let owner = quota.map(|q| u64::from(q.vif));
                                    ctx.snat.free_for(m.key.proto, n.port, owner);
                                }
                                m.done = Some(Disposition::Drop(match e {
                                    InsertError::Full => DropReason::FlowTableFull,
                                    InsertError::Quota => DropReason::VifFlowLimit,
                                }));
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

/// Whether a route change resolves an entry's nexthop again: a forwarded entry, or one
/// dropped for want of a route (it heals when the route comes), that nothing translates
/// (a translated half's destination is looked up in the VRF of the other half's key,
/// which the packet does not carry) and whose nexthop the route chose.
fn reresolvable(a: &FlowAction, m: &Meta) -> bool {
    let verdict = matches!(
        a.verdict,
        FlowVerdict::Forward | FlowVerdict::Drop(DropReason::NoRoute | DropReason::InvalidNexthop)
    );
    verdict && a.nat.is_none() && !a.pinned && m.label_nh.is_none()
}

/// The cached action, re-resolved if the VRF's routes changed since it was set up.
fn refresh(ctx: &mut Ctx<'_>, vrf: &Vrf, m: &Meta, hit: &FlowHit) -> FlowAction {
    let a = hit.action;
    if a.route_gen == vrf.generation || !reresolvable(&a, m) {
        return a;
    }
    let dropped = |reason| FlowAction {
        verdict: FlowVerdict::Drop(reason),
        route_gen: vrf.generation,
        ..a
    };
    let new = match vrf.lookup(m.key.dst) {
        None => dropped(DropReason::NoRoute),
        Some(r) => {
            let keep = a.verdict == FlowVerdict::Forward
                && match ctx.snap.nexthops.get(r.nh.0).map(|n| &**n) {
                    Some(Nexthop::Composite(e)) => e
                        .members()
                        .iter()
                        .any(|x| x.nh == a.nh && x.label == a.label),
                    _ => false,
                };
            if keep {
                FlowAction {
                    route_gen: vrf.generation,
                    ..a
                }
            } else {
                match resolve(ctx.snap, &r, m.hash) {
                    Ok((nh, label)) => FlowAction {
                        verdict: FlowVerdict::Forward,
                        nh,
                        label,
                        route_gen: vrf.generation,
                        ..a
                    },
                    Err(reason) => dropped(reason),
                }
            }
        }
    };
    ctx.flows.update_action(hit, &new);
    ctx.stats.flows_reresolved += 1;
    // The other half now hears from where this one sends: the node of the new tunnel.
    // A half that lost its route leaves the other as it was: that node still speaks for
    // the flow, and its packets are what draws the answer that heals this half when the
    // route is back (set to no node, they would be refused and the flow never heal).
    if new.verdict == FlowVerdict::Forward && (new.nh != a.nh || new.verdict != a.verdict) {
        let node = match (new.verdict, ctx.snap.nexthops.get(new.nh.0).map(|n| &**n)) {
            (FlowVerdict::Forward, Some(Nexthop::Tunnel(t))) => u32::from(t.dst),
            _ => 0,
        };
        if let Some(r) = ctx.flows.hit_at(hit.rflow, hit.idx) {
            if r.action.from_node != node {
                ctx.flows.update_action(
                    &r,
                    &FlowAction {
                        from_node: node,
                        ..r.action
                    },
                );
            }
        }
    }
    new
}

/// A flow decided under another policy generation, decided again by today's policy. A
/// flow that was refused is set up anew from this packet (`None`: the caller deletes the
/// pair). A forwarded one keeps its entries (translation, nexthop, TCP state) and is
/// confirmed or turned into a drop pair, both halves at once, whichever half was hit.
fn redecide(ctx: &mut Ctx<'_>, vif: &Vif, m: &Meta, hit: &FlowHit) -> Option<FlowHit> {
    let snap = ctx.snap;
    let partner = ctx.flows.hit_at(hit.rflow, hit.idx);
    let (fwd_key, fwd) = if hit.forward {
        (m.key, *hit)
    } else {
        let p = partner.filter(|p| p.forward)?;
        (ctx.flows.get(p.idx)?.key, p)
    };
    if fwd.action.verdict != FlowVerdict::Forward {
        return None;
    }
    let vrf = snap.vrfs.get(fwd_key.vrf.0)?;
    let src_route = vrf.lookup(fwd_key.src);
    // The sender as at setup: the interface the first packet came in on.
    let sender = if hit.forward {
        Some(vif).filter(|v| v.kind == VifKind::Virtual)
    } else {
        src_route.and_then(|r| local_vm(snap, r.nh))
    };
    let parties = Parties {
        sender,
        src_route,
        dst_vif: local_vm(snap, fwd.action.nh),
        dnat: fwd
            .action
            .nat
            .filter(|n| !n.source)
            .map(|n| (n.addr, n.port)),
        route_attr: vrf.lookup(fwd_key.dst).map_or(0, |r| r.attr),
    };
    let deny = denied(snap, vrf, &fwd_key, &parties);
    let generation = snap.policy_gen;
    let decided = |a: FlowAction| FlowAction {
        verdict: if deny {
            FlowVerdict::Drop(DropReason::PolicyDeny)
        } else {
            a.verdict
        },
        policy_gen: generation,
        ..a
    };
    for h in [Some(*hit), partner].into_iter().flatten() {
        ctx.flows.update_action(&h, &decided(h.action));
    }
    Some(FlowHit {
        action: decided(hit.action),
        ..*hit
    })
}

/// The local VM interface a nexthop delivers to, if it is one.
fn local_vm(snap: &Snapshot, nh: NhId) -> Option<&Vif> {
    match snap.nexthops.get(nh.0).map(|n| &**n) {
        Some(Nexthop::Encap { vif, .. }) => snap
            .vifs
            .get(vif.0)
            .map(|v| &**v)
            .filter(|v| v.kind == VifKind::Virtual),
        _ => None,
    }
}

/// A flow's two ends as policy sees them.
struct Parties<'s> {
    /// The VM that sent the first packet; `None`: it came from the fabric or the host,
    /// and its source's route says who it is.
    sender: Option<&'s Vif>,
    /// The route of the first packet's source.
    src_route: Option<RouteEntry>,
    /// The local VM it goes to, if it does.
    dst_vif: Option<&'s Vif>,
    /// The backend a service address was translated to.
    dnat: Option<(IpAddr, u16)>,
    /// Attributes of the destination's route (for a service: the service's network).
    route_attr: u32,
}

/// Whether the sender's egress or the receiver's ingress policy refuses a flow.
fn denied(snap: &Snapshot, vrf: &Vrf, k: &FlowKey, p: &Parties<'_>) -> bool {
    let src_attr = match p.sender {
        Some(v) => snap.attr(v.attr),
        None => snap.attr(p.src_route.map_or(0, |r| r.attr)),
    };
    // A remote backend is known by its own route (the VIP's says the service's network).
    let dst_attr = match (p.dst_vif, p.dnat) {
        (Some(v), _) => snap.attr(v.attr),
        (None, Some((addr, _))) => snap.attr(vrf.lookup(addr).map_or(0, |r| r.attr)),
        (None, None) => snap.attr(p.route_attr),
    };
    // Policy sees a service flow as it reaches the backend.
    let (dst, dport) = p.dnat.unwrap_or((k.dst, k.dport));
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
    let sent = p.dnat.map(|_| FlowMatch {
        dst: addr_bits(k.dst),
        dport: k.dport,
        dst_attr: snap.attr(p.route_attr),
        ..fm
    });
    p.sender.and_then(|v| v.policy.as_ref()).is_some_and(|pol| {
        let d = match &sent {
            Some(sent) => policy::evaluate_service(&pol.egress, &fm, sent),
            None => policy::evaluate(&pol.egress, &fm),
        };
        d.action == Action::Deny
    }) || p
        .dst_vif
        .and_then(|v| v.policy.as_ref())
        .is_some_and(|pol| policy::evaluate(&pol.ingress, &fm).action == Action::Deny)
}

/// A flow set up, ready to insert.
struct Setup {
    /// The forward half's decision.
    fwd: FlowAction,
    /// The reply half's key.
    rev_key: FlowKey,
    /// Its decision.
    rev: FlowAction,
    /// The local VM the pair counts against.
    quota: Option<Quota>,
}

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

    // Who is talking to whom, for policy. A local VM; an encap nexthop out of the
    // fabric (a network forwarded in the underlay, the gateway) is a remote destination,
    // known by its route.
    let dst_vif = local_vm(snap, nh_id);
    let sender = Some(vif).filter(|v| v.kind == VifKind::Virtual);
    let parties = Parties {
        sender,
        src_route,
        dst_vif,
        dnat,
        route_attr: route.attr,
    };
    // The local VM the flow belongs to (the one sending it, else the one it is for)
    // holds at most its quota of the table, refused flows included.
    let quota = sender.or(dst_vif).map(|v| Quota {
        vif: v.id.0,
        max: snap
            .global
            .vif_max_flows
            .unwrap_or_else(|| ctx.flows.default_quota()),
    });
    if denied(snap, vrf, k, &parties) {
        // A drop pair: later packets of the flow (both ways) are dropped at the hit.
        let d = FlowAction {
            route_gen: vrf.generation,
            policy_gen: snap.policy_gen,
            ..FlowAction::drop(DropReason::PolicyDeny)
        };
        return Ok(Setup {
            fwd: d,
            rev_key: k.reversed(),
            rev: d,
            quota,
        });
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
        pinned: false,
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
    // A reply half without a way back drops, but keeps the rest of its decision, so
    // that it heals (is resolved again) when the route arrives.
    let unroutable = |reason| FlowAction {
        verdict: FlowVerdict::Drop(reason),
        ..fwd
    };
    let mut rev = match back {
        Some(nh) => FlowAction {
            nh,
            label: 0,
            pinned: true,
            ..fwd
        },
        None => match src_route.map(|r| resolve(snap, &r, k.reversed().hash())) {
            Some(Ok((nh, label))) => FlowAction { nh, label, ..fwd },
            Some(Err(reason)) => unroutable(reason),
            None => unroutable(DropReason::NoRoute),
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
        Nexthop::Receive { vif } => snap.vifs.get(vif.0).map(|v| &**v),
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
            // The sender's share of the pools, counted like its flows.
            let share = snap
                .global
                .vif_max_snat_ports
                .unwrap_or_else(|| ctx.snat.default_share());
            let owner = quota.filter(|_| sender.is_some()).map(|q| (q.vif, share));
            ctx.snat.follow(snap.global.snat_ports);
            ctx.snat.alloc_for(k.proto, owner).map_err(|e| match e {
                SnatRefusal::Exhausted => DropReason::NatNoPort,
                SnatRefusal::Share => DropReason::VifSnatLimit,
            })?
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
    Ok(Setup {
        fwd,
        rev_key,
        rev,
        quota,
    })
}
