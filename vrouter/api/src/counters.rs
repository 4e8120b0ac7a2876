//! The vrouter's packet counters, declared once: each forwarding lcore counts into its
//! own [`Counters`] (plain integers on the fast path), the runtime sums them, and the
//! control socket's `stats`, `vrctl stats`, the vrouter's `--stats-json` and the agent's
//! Prometheus metrics report every one of them, zeros included, under the names here.
//!
//! Every packet received ends in exactly one place: sent, dropped under one
//! [`DropReason`](crate::drops::DropReason), or held (a fragment that came before its
//! first one, which is sent or dropped later). Cutting a packet into fragments adds
//! packets. So, on a forwarding lcore at any moment it publishes:
//!
//! ```text
//! rx + (fragments_made - fragmented) = tx + drops + held
//! ```
//!
//! and with no fragment held, `rx + fragments_made - fragmented = tx + drops`
//! ([`Counters::unaccounted`] is the difference).

use serde::Serialize;

use crate::drops::DropStats;

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)*) => {
        /// Per-lcore packet counters, with the drops by reason beside them.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct Counters {
            $($(#[doc = $doc])+ pub $name: u64,)*
            /// Drops by reason.
            pub drops: DropStats,
        }

        impl Counters {
            /// Every counter but the drops: its name and what it counts, in order.
            pub const ALL: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), concat!($($doc),+)),)*];

            /// Adds another lcore's counters.
            pub fn add(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
                self.drops.add(&o.drops);
            }

            /// Every counter but the drops, with its name, in [`Counters::ALL`]'s order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name),)*].into_iter()
            }
        }
    };
}

counters! {
    /// Packets received (from ports, host interfaces and rings).
    rx,
    /// Packets sent: taken by an interface's TX queue or host socket.
    tx,
    /// Packets the pipeline gave an output (sent, flooded or queued); the runtime then
    /// sends them or counts them dropped (`interface_tx_discard`, `flood_unsupported`).
    forwarded,
    /// Flow table hits.
    flow_hits,
    /// Flow table misses (a new flow, or one whose entry went).
    flow_misses,
    /// Flow pairs set up.
    flows_created,
    /// Flows whose nexthop was resolved again after a route change.
    flows_reresolved,
    /// Flows decided again because policy changed since they were.
    flows_reevaluated,
    /// ARP requests answered.
    arp_replies,
    /// Neighbour solicitations answered.
    nd_replies,
    /// Tunnel packets decapsulated.
    decap,
    /// Packets encapsulated.
    encap,
    /// TCP SYNs whose MSS was lowered to fit the tunnel.
    mss_clamped,
    /// ICMP errors sent (fragmentation needed, time exceeded).
    icmp_errors,
    /// Fragments that went on with their datagram's flow (first ones included).
    fragments,
    /// Fragments held because they came before their first one.
    frag_held,
    /// Held fragments sent on once their first one came.
    frag_released,
    /// IPv4 packets (DF clear) cut into fragments to fit their path.
    fragmented,
    /// Fragments made of them (each cut packet is one of them).
    fragments_made,
}

impl Counters {
    /// How far the counters are from packet conservation (see the module): zero when
    /// no fragment is held; positive by the number held.
    pub fn unaccounted(&self) -> i128 {
        let added = i128::from(self.fragments_made) - i128::from(self.fragmented);
        i128::from(self.rx) + added - i128::from(self.tx) - i128::from(self.drops.total())
    }

    /// The help text of a counter, without its leading space.
    pub fn help(name: &str) -> Option<&'static str> {
        Counters::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| h.trim_start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::DropReason;

    #[test]
    fn every_counter_is_reported_with_its_zero_and_the_drops_by_name() {
        let mut c = Counters {
            rx: 3,
            ..Default::default()
        };
        c.drops.count(DropReason::PolicyDeny);
        let v = serde_json::to_value(&c).unwrap();
        for (name, help) in Counters::ALL {
            assert!(v[name].is_u64(), "{name} reported");
            assert!(!help.trim().is_empty(), "{name} documented");
        }
        assert_eq!(v["rx"], 3);
        let drops = v["drops"].as_object().unwrap();
        assert_eq!(
            drops.len(),
            DropReason::ALL.len(),
            "every reason, zeros included"
        );
        assert_eq!(drops["policy_deny"], 1);
        assert_eq!(drops["invalid_packet"], 0);
        assert_eq!(c.unaccounted(), 2);
    }

    #[test]
    fn adding_adds_every_counter_and_every_reason() {
        let mut a = Counters::default();
        let mut b = Counters {
            fragments_made: 4,
            fragmented: 1,
            tx: 4,
            rx: 1,
            ..Default::default()
        };
        b.drops.count(DropReason::TxFull);
        a.add(&b);
        a.add(&b);
        assert_eq!((a.rx, a.tx, a.fragments_made), (2, 8, 8));
        assert_eq!(a.drops.get(DropReason::TxFull), 2);
        assert_eq!(a.unaccounted(), -2, "one more out than in, per copy");
        assert_eq!(
            Counters::help("tx").map(|h| h.starts_with("Packets sent")),
            Some(true)
        );
    }
}
