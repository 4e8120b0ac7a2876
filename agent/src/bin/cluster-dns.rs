//! `cluster-dns`: the cluster's DNS server, run as a pod behind a Service. Answers for
//! the Services of the cluster domain from a records file (`NAME A ADDRESS` lines) that
//! whoever follows the cluster rewrites; the file is read again when it changes (a
//! file that does not read keeps the previous records, reported on stderr). Queries come
//! over UDP and over TCP (RFC 1035 4.2.2: each message behind its two-byte length, several
//! on one connection; an idle connection is closed after 10 s).

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agent::dns::Records;
use anyhow::{Context, Result};
use clap::Parser;

/// The cluster's DNS server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address and port to answer on (UDP and TCP).
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// The records file.
    #[arg(long)]
    records: PathBuf,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
}

/// What says a records file changed: a new file put in its place (a new inode), a new
/// length, or new modification and change times. Times alone miss a rewrite within the
/// file system's timestamp granularity.
type Stamp = (SystemTime, i64, i64, u64, u64);

/// The records, read again when the file changes (looked at no more than every 200 ms).
struct Source {
    path: PathBuf,
    domain: String,
    records: Records,
    seen: Option<Stamp>,
    checked: Instant,
}

impl Source {
    fn refresh(&mut self, force: bool) {
        if !force && self.checked.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.ctime(), m.ctime_nsec(), m.ino(), m.len())))
            .ok();
        if modified == self.seen && !force {
            return;
        }
        self.seen = modified;
        let read = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))
            .and_then(|t| Records::parse(&self.domain, &t));
        match read {
            Ok(r) => {
                eprintln!("cluster-dns: {} names", r.len());
                self.records = r;
            }
            Err(e) => eprintln!("cluster-dns: keeping the previous records: {e:#}"),
        }
    }
}

/// The answer to one message, the records read again first if they changed.
fn answer(src: &Mutex<Source>, msg: &[u8]) -> Option<Vec<u8>> {
    let mut s = src.lock().unwrap_or_else(|e| e.into_inner());
    s.refresh(false);
    s.records.answer(msg)
}

/// TCP connections served at once.
const MAX_TCP: usize = 64;

/// A log that says at most one line a second: what a client sends cannot fill the disk.
#[derive(Default)]
struct Quiet {
    last: Option<Instant>,
    held: u64,
}

impl Quiet {
    /// Logs `line(events since the last line)` unless a line went out in the last second.
    fn say(&mut self, line: impl FnOnce(u64) -> String) {
        self.held += 1;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        eprintln!("cluster-dns: {}", line(self.held));
        self.last = Some(Instant::now());
        self.held = 0;
    }
}

/// One TCP connection: length-prefixed queries until the client closes or goes quiet.
fn serve_tcp(mut c: TcpStream, src: &Mutex<Source>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let mut len = [0u8; 2];
        match c.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut msg)?;
        // Not a query: the connection is closed (there is no way to skip it).
        let Some(reply) = answer(src, &msg) else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        c.write_all(&out)?;
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let sock =
        UdpSocket::bind(a.listen).with_context(|| format!("listening on {} (UDP)", a.listen))?;
    let tcp =
        TcpListener::bind(a.listen).with_context(|| format!("listening on {} (TCP)", a.listen))?;
    let src = Arc::new(Mutex::new(Source {
        path: a.records,
        records: Records::new(&a.domain),
        domain: a.domain,
        seen: None,
        checked: Instant::now(),
    }));
    src.lock().unwrap_or_else(|e| e.into_inner()).refresh(true);
    {
        let src = Arc::clone(&src);
        std::thread::spawn(move || {
            // A bounded number of connections: a client that opens many and sends nothing
            // (slowloris) takes at most MAX_TCP threads, each for its read timeout, and
            // the next connection is closed at once; UDP is served all along.
            let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut log = Quiet::default();
            for c in tcp.incoming() {
                let Ok(c) = c else { continue };
                if open.load(std::sync::atomic::Ordering::Acquire) >= MAX_TCP {
                    log.say(|n| format!("{n} TCP connections refused: {MAX_TCP} are open"));
                    continue;
                }
                open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let (src, open) = (Arc::clone(&src), Arc::clone(&open));
                std::thread::spawn(move || {
                    let _ = serve_tcp(c, &src);
                    open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                });
            }
        });
    }
    println!("listening on {}", a.listen);
    let (mut answered, mut dropped) = (0u64, 0u64);
    let mut quiet = Quiet::default();
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("cluster-dns: receive: {e}");
                continue;
            }
        };
        match answer(&src, &buf[..n]) {
            Some(reply) => {
                if let Err(e) = sock.send_to(&reply, from) {
                    eprintln!("cluster-dns: answering {from}: {e}");
                }
                answered += 1;
            }
            None => {
                dropped += 1;
                quiet.say(|_| {
                    format!("not a query from {from} ({dropped} so far, {answered} answered)")
                });
            }
        }
    }
}
