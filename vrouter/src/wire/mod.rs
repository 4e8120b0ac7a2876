//! Zero-copy views over packet headers, in the style of smoltcp's `wire`.
//!
//! Each header is a `Packet<T: AsRef<[u8]>>` view. `new_checked` validates the length once
//! (for bytes from outside); after it succeeds no accessor can panic. `new_unchecked` is for
//! buffers we size ourselves (writing headers). A `Repr` is the parsed, owned form: `parse`
//! reads it from a view, `emit` writes it into one. Views never allocate and never copy.

/// Declares a header view: a struct over any `T: AsRef<[u8]>` with `new_unchecked` (for
/// buffers we size ourselves) and `into_inner`; each module adds `new_checked` and the
/// accessors of its header.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buf: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps without checking; accessors may panic on short buffers.
            pub fn new_unchecked(buf: T) -> Self {
                $name { buf }
            }

            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buf
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

use std::fmt;

pub use ethernet::{EtherType, MacAddr};

/// Why bytes could not be read as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or its stated length) needs.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the protocol forbids (version, header length, ...).
    #[error("malformed")]
    Malformed,
    /// The checksum does not match.
    #[error("bad checksum")]
    Checksum,
}

/// Result of wire parsing.
pub type Result<T> = std::result::Result<T, WireError>;

/// IP protocol numbers we name (IANA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 1
    Icmp,
    /// 6
    Tcp,
    /// 17
    Udp,
    /// 47
    Gre,
    /// 58
    Icmpv6,
    /// 132
    Sctp,
    /// Any other value.
    Other(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            47 => IpProtocol::Gre,
            58 => IpProtocol::Icmpv6,
            132 => IpProtocol::Sctp,
            o => IpProtocol::Other(o),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Gre => 47,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Sctp => 132,
            IpProtocol::Other(o) => o,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Gre => f.write_str("gre"),
            IpProtocol::Icmpv6 => f.write_str("icmpv6"),
            IpProtocol::Sctp => f.write_str("sctp"),
            IpProtocol::Other(o) => write!(f, "proto-{o}"),
        }
    }
}

/// Reads a big-endian u16 at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at` (callers have checked the length).
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian u16 at `at`.
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `at`.
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Checks that `buf` has at least `need` bytes.
#[inline(always)]
pub(crate) fn need(buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::Truncated)
    } else {
        Ok(())
    }
}
