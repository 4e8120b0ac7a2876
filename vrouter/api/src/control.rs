//! The control socket: how the agent and `vrctl` read and change the vrouter's tables.
//!
//! Wire format (version 1): each message is a frame of a 4-byte big-endian length followed
//! by that many bytes of JSON (at most [`MAX_FRAME`]). A request is
//! `{"version": 1, "id": N, "request": {"op": "<op>", "args": {...}}}`; the reply carries
//! the same id: `{"version": 1, "id": N, "ok": true, "data": ...}` or
//! `{"version": 1, "id": N, "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Codes: `bad-request` (not JSON, unknown op, wrong fields), `unsupported-version`,
//! `not-found`, `in-use`, `invalid-argument`, `too-large` (the connection is closed then).
//! Every change is validated; a refused request changes nothing, and a `batch` is applied
//! all or nothing. Changes are published to the lcores when the request succeeds.
//! Dumps are paged: `cursor` in, `next` out (absent at the end).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{
    AttrCfg, LabelCfg, NexthopCfg, PolicyCfg, RouteCfg, SnatPortsCfg, VifCfg, VniCfg,
};

/// Protocol version.
pub const VERSION: u32 = 1;
/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/vrouter/vrouter.sock";
/// Largest frame accepted.
pub const MAX_FRAME: usize = 16 << 20;
/// Items per dump page.
pub const PAGE: usize = 256;

/// An operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "kebab-case")]
pub enum Op {
    /// Version and uptime check.
    Hello,
    /// Create a VRF.
    AddVrf {
        /// Index.
        id: u32,
    },
    /// Delete a VRF.
    DelVrf {
        /// Index.
        id: u32,
    },
    /// Add or replace an interface. With a `device`, the vrouter plugs that port in for
    /// it (on its own, not in a batch), or swaps the vif's port for it in place; without
    /// one, only the table entry changes and a port the vif has stays (`DelVif` takes
    /// the port away with the vif).
    AddVif(VifCfg),
    /// Delete an interface.
    DelVif {
        /// Index.
        id: u32,
    },
    /// Add or replace a nexthop.
    SetNexthop(NexthopCfg),
    /// Delete a nexthop.
    DelNexthop {
        /// Index.
        id: u32,
    },
    /// Add or replace a route.
    AddRoute(RouteCfg),
    /// Delete a route.
    DelRoute {
        /// VRF.
        vrf: u32,
        /// Prefix.
        prefix: String,
    },
    /// Map a label.
    SetLabel(LabelCfg),
    /// Unmap a label.
    DelLabel {
        /// Label.
        label: u32,
    },
    /// Add or replace a named rule set; interfaces that use it are recompiled with it.
    SetPolicy(PolicyCfg),
    /// Delete a named rule set that no interface uses.
    DelPolicy {
        /// Name.
        name: String,
    },
    /// Set an endpoint attribute record (VN, tags).
    SetAttr(AttrCfg),
    /// Delete an endpoint attribute record.
    DelAttr {
        /// Record id.
        id: u32,
    },
    /// Map a VNI.
    SetVni(VniCfg),
    /// Unmap a VNI.
    DelVni {
        /// VNI.
        vni: u32,
    },
    /// Set the node's SNAT port ranges (the pools move there; ports in use stay).
    SetSnatPorts(SnatPortsCfg),
    /// The node's SNAT port ranges.
    DumpSnatPorts,
    /// Several changes, all or nothing.
    Batch {
        /// The changes, in order.
        ops: Vec<Op>,
    },
    /// VRFs.
    DumpVrfs,
    /// Interfaces, from `cursor`.
    DumpVifs {
        /// First index.
        #[serde(default)]
        cursor: u32,
    },
    /// Nexthops, from `cursor`.
    DumpNexthops {
        /// First index.
        #[serde(default)]
        cursor: u32,
    },
    /// Routes of a VRF, from position `cursor`.
    DumpRoutes {
        /// VRF.
        vrf: u32,
        /// Position.
        #[serde(default)]
        cursor: u32,
    },
    /// Labels, from `cursor`.
    DumpLabels {
        /// First label.
        #[serde(default)]
        cursor: u32,
    },
    /// VNIs.
    DumpVnis,
    /// Named rule sets.
    DumpPolicies,
    /// Endpoint attribute records.
    DumpAttrs,
    /// Flows, from entry `cursor`.
    DumpFlows {
        /// First entry index.
        #[serde(default)]
        cursor: u32,
    },
    /// Counters: per vif, drops by reason, flows.
    Stats,
    /// Capture up to `count` frames received or sent on `vif` into a pcap `file`,
    /// waiting at most `timeout_ms`.
    Capture {
        /// Interface.
        vif: u32,
        /// Frames wanted (at most 100000).
        count: u32,
        /// Output pcap path (written by the vrouter).
        file: String,
        /// How long to wait for the frames.
        #[serde(default = "default_capture_ms")]
        timeout_ms: u64,
    },
}

fn default_capture_ms() -> u64 {
    10_000
}

impl Op {
    /// Whether the operation changes the tables (dumps, stats and captures do not).
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            Op::Hello
                | Op::DumpVrfs
                | Op::DumpVifs { .. }
                | Op::DumpNexthops { .. }
                | Op::DumpRoutes { .. }
                | Op::DumpLabels { .. }
                | Op::DumpVnis
                | Op::DumpSnatPorts
                | Op::DumpPolicies
                | Op::DumpAttrs
                | Op::DumpFlows { .. }
                | Op::Stats
                | Op::Capture { .. }
        )
    }
}

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub version: u32,
    /// Echoed in the reply.
    #[serde(default)]
    pub id: u64,
    /// The operation.
    pub request: Op,
}

/// An error in a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// What was wrong, naming the object.
    pub message: String,
}

/// A reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version.
    pub version: u32,
    /// The request's id.
    pub id: u64,
    /// Success.
    pub ok: bool,
    /// Result data on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A success carrying `data`.
    pub fn ok(id: u64, data: Value) -> Reply {
        Reply {
            version: VERSION,
            id,
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    /// A failure with its code and message.
    pub fn err(id: u64, code: &str, message: impl Into<String>) -> Reply {
        Reply {
            version: VERSION,
            id,
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code: code.into(),
                message: message.into(),
            }),
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(s: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    // The end of the stream is clean only between frames: a length cut short is an error.
    loop {
        match s.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    s.read_exact(&mut len[1..])?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Writes one frame.
pub fn write_frame(s: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let n = u32::try_from(body.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    s.write_all(&n.to_be_bytes())?;
    s.write_all(body)?;
    s.flush()
}

/// What [`FrameReader::poll`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// A whole frame's body.
    Frame(Vec<u8>),
    /// Nothing whole yet (the read timed out); what came so far is kept.
    Pending,
    /// The peer closed the stream between frames.
    Closed,
}

/// Reads frames from a stream that has a read timeout, keeping the bytes a timed-out read
/// already got: a frame that arrives slowly (a byte at a time, across many timeouts) is
/// read whole, never cut into two and never desynchronises the stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads what the stream has until a frame is whole, the read times out or it ends.
    pub fn poll(&mut self, s: &mut impl Read) -> io::Result<Polled> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let need = if self.buf.len() < 4 {
                4
            } else {
                let n = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if n > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("frame of {n} bytes exceeds {MAX_FRAME}"),
                    ));
                }
                if self.buf.len() >= 4 + n {
                    let body = self.buf[4..4 + n].to_vec();
                    self.buf.drain(..4 + n);
                    return Ok(Polled::Frame(body));
                }
                4 + n
            };
            // Only up to the end of this frame: memory follows what was sent.
            let want = (need - self.buf.len()).min(chunk.len());
            match s.read(&mut chunk[..want]) {
                Ok(0) if self.buf.is_empty() => return Ok(Polled::Closed),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a frame",
                    ));
                }
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Polled::Pending);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A client connection.
#[derive(Debug)]
pub struct Client {
    s: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the socket.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { s, next_id: 1 })
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, op: Op) -> io::Result<Reply> {
        let req = Request {
            version: VERSION,
            id: self.next_id,
            request: op,
        };
        self.next_id += 1;
        write_frame(
            &mut self.s,
            &serde_json::to_vec(&req).map_err(io::Error::other)?,
        )?;
        let body = read_frame(&mut self.s)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the vrouter closed the connection",
            )
        })?;
        serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends raw bytes as a frame and reads the reply frame (for tests of bad input).
    pub fn raw(&mut self, body: &[u8]) -> io::Result<Option<Vec<u8>>> {
        write_frame(&mut self.s, body)?;
        read_frame(&mut self.s)
    }

    /// All pages of a dump, concatenated.
    pub fn dump_all(&mut self, mut op: impl FnMut(u32) -> Op) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let r = self.call(op(cursor))?;
            let data = r
                .data
                .ok_or_else(|| io::Error::other(r.error.map(|e| e.message).unwrap_or_default()))?;
            if let Some(items) = data["items"].as_array() {
                out.extend(items.iter().cloned());
            }
            match data["next"].as_u64() {
                Some(n) => cursor = n as u32,
                None => return Ok(out),
            }
        }
    }
}
