//! The ports source NAT hands out belong to the node's address, which the host's own
//! connections use too: they are reserved in the host's kernel
//! (`net.ipv4.ip_local_reserved_ports`, which also covers IPv6), so that no local
//! connection picks one as its ephemeral port. What else is reserved there stays.

use std::io;
use std::path::Path;

use vrouter_api::config::SnatPortsCfg;

/// The kernel's list, in the network namespace the agent runs in (the host's).
pub const PROC_PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// A set of ports, one bit each: the kernel's list is a set, and merges adjacent ranges
/// when it prints them, so ranges are added and taken away port by port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet(Vec<u64>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(vec![0; 1024])
    }
}

impl PortSet {
    /// Parses the kernel's format: comma-separated ports and `first-last` ranges.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let port = |x: &str| {
                x.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("{part:?} is not a port or a range of ports"))
            };
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("{part:?}: the range ends before it starts"));
            }
            set.insert(a, b);
        }
        Ok(set)
    }

    /// Adds `first..=last`.
    pub fn insert(&mut self, first: u16, last: u16) {
        for p in first..=last {
            self.0[usize::from(p) / 64] |= 1 << (p % 64);
        }
    }

    /// Takes `first..=last` away.
    pub fn remove(&mut self, first: u16, last: u16) {
        for p in first..=last {
            self.0[usize::from(p) / 64] &= !(1 << (p % 64));
        }
    }

    fn has(&self, p: u32) -> bool {
        p < 65536 && self.0[p as usize / 64] & (1 << (p % 64)) != 0
    }

    /// The kernel's format, ranges merged.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let mut p = 0u32;
        while p < 65536 {
            if !self.has(p) {
                p += 1;
                continue;
            }
            let first = p;
            while self.has(p + 1) {
                p += 1;
            }
            out.push(if first == p {
                first.to_string()
            } else {
                format!("{first}-{p}")
            });
            p += 1;
        }
        out.join(",")
    }
}

fn ranges(p: &SnatPortsCfg) -> [[u16; 2]; 2] {
    [p.tcp, p.udp]
}

/// Reserves `now`'s ranges in the list at `path`, taking away `before`'s (the ranges
/// this agent reserved last) and keeping everything else there.
pub fn reserve(path: &Path, before: Option<&SnatPortsCfg>, now: &SnatPortsCfg) -> io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut set =
        PortSet::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    for [a, b] in before.map(ranges).into_iter().flatten() {
        set.remove(a, b);
    }
    for [a, b] in ranges(now) {
        set.insert(a, b);
    }
    let mut line = set.render();
    line.push('\n');
    std::fs::write(path, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_format_round_trips_with_ranges_merged() {
        let s = PortSet::parse("8080, 56000-57023,57024-58047\n").unwrap();
        assert_eq!(s.render(), "8080,56000-58047");
        assert_eq!(PortSet::parse("").unwrap().render(), "");
        assert!(PortSet::parse("80-70").is_err());
        assert!(PortSet::parse("70000").is_err());
        assert!(PortSet::parse("1;rm -rf /").is_err());
    }

    #[test]
    fn new_ranges_replace_the_agents_old_ones_and_the_rest_stays() {
        let dir = std::env::temp_dir().join(format!("reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ports");
        std::fs::write(&f, "22,9000-9010\n").unwrap();
        let old = SnatPortsCfg::default();
        reserve(&f, None, &old).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "22,9000-9010,56000-58047\n"
        );
        let new = SnatPortsCfg {
            tcp: [61000, 61099],
            udp: [62000, 62099],
        };
        reserve(&f, Some(&old), &new).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "22,9000-9010,61000-61099,62000-62099\n"
        );
        std::fs::write(&f, "not ports").unwrap();
        assert!(
            reserve(&f, None, &new).is_err(),
            "a list it cannot read is left alone"
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "not ports");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
