//! `cluster-dns`: the cluster's DNS server, run as a pod behind a Service. Answers for
//! the Services of the cluster domain from a records file (`NAME A ADDRESS` lines) that
//! whoever follows the cluster rewrites; the file is read again when it changes (a
//! file that does not read keeps the previous records, reported on stderr).

#![forbid(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use agent::dns::Records;
use anyhow::{Context, Result};
use clap::Parser;

/// The cluster's DNS server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address and UDP port to answer on.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// The records file.
    #[arg(long)]
    records: PathBuf,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    domain: String,
}

/// The records, read again when the file's modification time changes (looked at no
/// more than every 200 ms).
struct Source {
    path: PathBuf,
    domain: String,
    records: Records,
    seen: Option<SystemTime>,
    checked: Instant,
}

impl Source {
    fn refresh(&mut self, force: bool) {
        if !force && self.checked.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
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

fn main() -> Result<()> {
    let a = Args::parse();
    let sock =
        UdpSocket::bind(a.listen).with_context(|| format!("listening on {} (UDP)", a.listen))?;
    let mut src = Source {
        path: a.records,
        records: Records::new(&a.domain),
        domain: a.domain,
        seen: None,
        checked: Instant::now(),
    };
    src.refresh(true);
    println!("listening on {}", a.listen);
    let (mut answered, mut dropped) = (0u64, 0u64);
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("cluster-dns: receive: {e}");
                continue;
            }
        };
        src.refresh(false);
        match src.records.answer(&buf[..n]) {
            Some(reply) => {
                if let Err(e) = sock.send_to(&reply, from) {
                    eprintln!("cluster-dns: answering {from}: {e}");
                }
                answered += 1;
            }
            None => {
                dropped += 1;
                eprintln!(
                    "cluster-dns: not a query from {from} ({dropped} so far, {answered} answered)"
                );
            }
        }
    }
}
