//! The cluster's DNS: answers for the Services of the cluster domain
//! (`<service>.<namespace>.svc.cluster.local`), from a records file that follows the
//! cluster. Authoritative for the cluster domain only: other names are refused (no
//! recursion), unknown names in it are NXDOMAIN, a known name asked for another type
//! than A has no data. Messages are read and written with hickory-proto; whatever does
//! not parse as a query gets no answer (FORMERR when at least its ID could be read).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

/// How long resolvers may keep an answer: short, Services come and go.
pub const TTL: u32 = 5;

/// The A records of a cluster domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// The domain served, lower case, with the final dot (`cluster.local.`).
    domain: String,
    /// Names (lower case, final dot) and their addresses.
    a: BTreeMap<String, Vec<Ipv4Addr>>,
}

fn canonical(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

impl Records {
    /// No records yet, for `domain`.
    pub fn new(domain: &str) -> Records {
        Records {
            domain: canonical(domain),
            a: BTreeMap::new(),
        }
    }

    /// Adds an address to a name.
    pub fn add(&mut self, name: &str, addr: Ipv4Addr) {
        let v = self.a.entry(canonical(name)).or_default();
        if !v.contains(&addr) {
            v.push(addr);
        }
    }

    /// The records file: `NAME A ADDRESS` per line, `#` comments; a bad line is an
    /// error naming it (the server keeps its previous records then).
    pub fn parse(domain: &str, text: &str) -> Result<Records> {
        let mut r = Records::new(domain);
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let [name, ty, addr] = f[..] else {
                bail!("line {}: expected NAME A ADDRESS: {line:?}", i + 1);
            };
            if !ty.eq_ignore_ascii_case("A") {
                bail!("line {}: only A records: {line:?}", i + 1);
            }
            let Ok(addr) = addr.parse::<Ipv4Addr>() else {
                bail!("line {}: {addr:?} is not an IPv4 address", i + 1);
            };
            if Name::from_ascii(name).is_err() {
                bail!("line {}: {name:?} is not a domain name", i + 1);
            }
            r.add(name, addr);
        }
        Ok(r)
    }

    /// The records as the file holds them.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (name, addrs) in &self.a {
            for a in addrs {
                s.push_str(&format!("{name} A {a}\n"));
            }
        }
        s
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.a.len()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    fn in_domain(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// The answer to a query message, or none for bytes that are not one.
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let q = match Message::from_vec(query) {
            Ok(q) => q,
            Err(_) if query.len() >= 12 => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
            Err(_) => return None,
        };
        let md = &q.metadata;
        if md.message_type != MessageType::Query {
            return None;
        }
        let mut r = Message::response(md.id, md.op_code);
        r.metadata.recursion_desired = md.recursion_desired;
        if md.op_code != OpCode::Query {
            r.metadata.response_code = ResponseCode::NotImp;
            return r.to_vec().ok();
        }
        let [question] = &q.queries[..] else {
            r.metadata.response_code = ResponseCode::FormErr;
            return r.to_vec().ok();
        };
        r.add_query(question.clone());
        let name = canonical(&question.name().to_ascii());
        if !self.in_domain(&name) {
            r.metadata.response_code = ResponseCode::Refused;
            return r.to_vec().ok();
        }
        r.metadata.authoritative = true;
        match self.a.get(&name) {
            None => r.metadata.response_code = ResponseCode::NXDomain,
            Some(addrs) => {
                if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
                    for a in addrs {
                        r.add_answer(Record::from_rdata(
                            question.name().clone(),
                            TTL,
                            RData::A(A(*a)),
                        ));
                    }
                }
            }
        }
        r.to_vec().ok()
    }
}
