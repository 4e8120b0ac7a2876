//! Which devices a port plugged through the API may use.
//!
//! `AddPort.device` becomes a DPDK vdev that the vrouter (root) hot-plugs, and a vdev's
//! arguments can name files (`net_pcap,tx_pcap=/etc/shadow`), host NICs
//! (`net_af_packet,iface=eth0`) or kernel devices. So a device is an allow-list match, never
//! passed through: a driver of [`Driver`], only the arguments that driver is listed with,
//! and an interface that is the kind the CNI and the HAProxy manager create (the host end
//! of a veth for af_packet; a new tap, which the driver creates, for net_tap).
//!
//! `packet:<veth>` is no vdev: the vrouter serves the interface itself (an AF_PACKET ring,
//! no ethdev, so not bounded by DPDK's 32 ports). It takes no arguments; the interface
//! must be the host end of a veth as for af_packet. It is what the CNI, the lab and the
//! HAProxy manager plug.

use std::fmt;
use std::str::FromStr;

/// A driver a plugged port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `packet:<veth>`: the host end of a pod's veth pair, served by the vrouter itself.
    Packet,
    /// `net_af_packet…,iface=<veth>`: the host end of a pod's veth pair.
    AfPacket,
    /// `net_tap…,iface=<new name>`: a tap device the driver creates.
    Tap,
}

impl Driver {
    /// The vdev name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Driver::Packet => "packet:",
            Driver::AfPacket => "net_af_packet",
            Driver::Tap => "net_tap",
        }
    }

    /// Arguments the driver may be given besides `iface` (numbers only).
    fn numeric_args(self) -> &'static [(&'static str, u64, u64)] {
        match self {
            Driver::AfPacket => &[
                ("qpairs", 1, 16),
                ("blocksz", 4096, 1 << 20),
                ("framesz", 2048, 1 << 16),
                ("framecnt", 64, 1 << 16),
                ("qdisc_bypass", 0, 1),
            ],
            Driver::Tap | Driver::Packet => &[],
        }
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "packet" => Ok(Driver::Packet),
            "af_packet" | "af-packet" => Ok(Driver::AfPacket),
            "tap" => Ok(Driver::Tap),
            _ => Err(format!("no port driver {s:?} (packet, af_packet, tap)")),
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Packet => "packet",
            Driver::AfPacket => "af_packet",
            Driver::Tap => "tap",
        })
    }
}

/// What the host's links are, as far as the check needs to know.
pub trait Links {
    /// The kind of link `name` (`veth`, `bridge`, `tun`, ...; `""` for a NIC or the
    /// loopback), or `None` if there is no such link.
    fn kind(&self, name: &str) -> Option<String>;
}

/// The links of this host, read with `ip -details link`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLinks;

impl Links for HostLinks {
    fn kind(&self, name: &str) -> Option<String> {
        let out =
            crate::cmd::run(&["ip", "-details", "-json", "link", "show", "dev", name]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let link = v.as_array()?.first()?;
        Some(
            link["linkinfo"]["info_kind"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

/// The allow-list.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    /// Drivers a port may use.
    pub drivers: Vec<Driver>,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            drivers: vec![Driver::Packet, Driver::AfPacket, Driver::Tap],
        }
    }
}

/// Longest device spec taken.
const MAX_SPEC: usize = 256;

/// Whether `name` is a Linux interface name (what `dev_valid_name` takes), in the
/// characters our own tools use.
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl DevicePolicy {
    /// Checks a device spec; the error says what is wrong, for the caller's status.
    pub fn check(&self, spec: &str, links: &dyn Links) -> Result<(), String> {
        if spec.len() > MAX_SPEC {
            return Err(format!("longer than {MAX_SPEC} bytes"));
        }
        if !spec.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("only printable ASCII without spaces".into());
        }
        if let Some(iface) = spec.strip_prefix(Driver::Packet.prefix()) {
            if !self.drivers.contains(&Driver::Packet) {
                return Err("packet:<ifname> ports are not allowed here".into());
            }
            if !valid_ifname(iface) {
                return Err(format!("{iface:?} is not an interface name"));
            }
            return veth_host_end(iface, links);
        }
        let mut parts = spec.split(',');
        let vdev = parts.next().unwrap_or_default();
        // The longest prefix first: net_tap must not take net_tapfoo's place, and a driver
        // off the list is refused by name.
        let driver = self
            .drivers
            .iter()
            .copied()
            .filter(|d| *d != Driver::Packet)
            .find(|d| vdev.strip_prefix(d.prefix()).is_some_and(valid_suffix))
            .ok_or_else(|| {
                let allowed: Vec<String> = self
                    .drivers
                    .iter()
                    .map(|d| format!("{}<id>", d.prefix()))
                    .collect();
                format!(
                    "{vdev:?} is not an allowed device (allowed: {})",
                    allowed.join(", ")
                )
            })?;
        let mut iface = None;
        let mut seen: Vec<&str> = Vec::new();
        for arg in parts {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| format!("argument {arg:?} is not key=value"))?;
            if seen.contains(&k) {
                return Err(format!("argument {k:?} given twice"));
            }
            seen.push(k);
            if k == "iface" {
                if !valid_ifname(v) {
                    return Err(format!("iface {v:?} is not an interface name"));
                }
                iface = Some(v);
                continue;
            }
            let Some(&(_, lo, hi)) = driver.numeric_args().iter().find(|(n, _, _)| *n == k) else {
                return Err(format!("argument {k:?} is not allowed for {driver} ports"));
            };
            let n: u64 = v
                .parse()
                .map_err(|_| format!("{k}={v:?} is not a number"))?;
            if !(lo..=hi).contains(&n) {
                return Err(format!("{k}={n} is outside {lo}..={hi}"));
            }
        }
        let iface = iface.ok_or_else(|| format!("{driver} ports need iface=<name>"))?;
        match (driver, links.kind(iface)) {
            (Driver::Packet | Driver::AfPacket, _) => veth_host_end(iface, links),
            (Driver::Tap, None) => Ok(()),
            (Driver::Tap, Some(_)) => Err(format!(
                "iface {iface:?} exists: a tap port makes a new interface, it does not take one"
            )),
        }
    }
}

/// Whether `iface` is a veth (a pod's or an HAProxy instance's host end).
fn veth_host_end(iface: &str, links: &dyn Links) -> Result<(), String> {
    match links.kind(iface) {
        Some(k) if k == "veth" => Ok(()),
        Some(k) => Err(format!(
            "iface {iface:?} is not the host end of a veth pair (it is {})",
            if k.is_empty() {
                "a NIC or loopback"
            } else {
                k.as_str()
            }
        )),
        None => Err(format!("iface {iface:?} does not exist")),
    }
}

/// A vdev id after the driver's prefix: DPDK takes the name whole, keep it short and plain.
fn valid_suffix(s: &str) -> bool {
    s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Links for Fake {
        fn kind(&self, name: &str) -> Option<String> {
            match name {
                "veth0" | "vl1234" => Some("veth".into()),
                "eth0" | "lo" => Some(String::new()),
                "br0" => Some("bridge".into()),
                "vx0" => Some("vxlan".into()),
                _ => None,
            }
        }
    }

    fn check(spec: &str) -> Result<(), String> {
        DevicePolicy::default().check(spec, &Fake)
    }

    #[test]
    fn the_interfaces_the_cni_and_haproxy_manager_make_pass() {
        for ok in [
            "packet:veth0",
            "packet:vl1234",
            "net_af_packet0,iface=veth0",
            "net_af_packet_0123456789ab,iface=vl1234",
            "net_af_packet_lb1x2,iface=veth0,qpairs=2",
            "net_af_packet7,iface=veth0,qdisc_bypass=1,framecnt=512",
            "net_tap3,iface=tapnew",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn files_host_nics_and_other_drivers_are_refused() {
        for (bad, says) in [
            (
                "net_pcap77,rx_pcap=/tmp/in.pcap,tx_pcap=/tmp/pwned.pcap",
                "not an allowed device",
            ),
            ("net_af_packet0,iface=eth0", "not the host end of a veth"),
            ("net_af_packet0,iface=lo", "not the host end of a veth"),
            ("net_af_packet0,iface=br0", "it is bridge"),
            ("net_af_packet0,iface=vx0", "it is vxlan"),
            ("net_af_packet0,iface=nosuch", "does not exist"),
            ("net_tap0,iface=eth0", "exists"),
            (
                "net_tap0,iface=tapx,remote=eth0",
                "\"remote\" is not allowed",
            ),
            ("net_af_packet0,iface=veth0,iface=eth0", "given twice"),
            ("net_af_packet0", "need iface"),
            ("net_af_packet0,iface=../x", "not an interface name"),
            (
                "net_af_packet0,iface=averyveryverylongname",
                "not an interface name",
            ),
            ("net_af_packet0,iface=veth0,qpairs=99", "outside"),
            ("net_af_packet0,iface=veth0,qpairs=x", "not a number"),
            ("net_af_packet0,iface=veth0,blocksz", "not key=value"),
            ("net_af_packet0 ,iface=veth0", "printable ASCII"),
            ("net_af_packet0,iface=veth0\n", "printable ASCII"),
            ("net_af_packet-0,iface=veth0", "not an allowed device"),
            ("net_vhost0,iface=/tmp/x.sock", "not an allowed device"),
            ("eth_af_packet0,iface=veth0", "not an allowed device"),
            ("packet:eth0", "not the host end of a veth"),
            ("packet:lo", "not the host end of a veth"),
            ("packet:br0", "it is bridge"),
            ("packet:nosuch", "does not exist"),
            ("packet:", "not an interface name"),
            ("packet:veth0,iface=eth0", "not an interface name"),
            ("packet:../../x", "not an interface name"),
            ("packet:averyveryverylongname", "not an interface name"),
            ("packet:veth0 ", "printable ASCII"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("net_af_packet0,iface=veth0{}", ",qpairs=1".repeat(40));
        assert!(check(&long).unwrap_err().contains("longer than"));
    }

    #[test]
    fn a_policy_without_tap_refuses_tap() {
        let p = DevicePolicy {
            drivers: vec![Driver::AfPacket],
        };
        assert!(p.check("net_tap0,iface=tapnew", &Fake).is_err());
        assert!(
            p.check("packet:veth0", &Fake)
                .unwrap_err()
                .contains("not allowed")
        );
        assert_eq!("packet".parse::<Driver>(), Ok(Driver::Packet));
        assert_eq!("af_packet".parse::<Driver>(), Ok(Driver::AfPacket));
        assert!("pcap".parse::<Driver>().is_err());
    }
}
