//! The cluster DNS's answers, on real DNS messages (built and read with hickory-proto):
//! A records of known names, no data for other types, NXDOMAIN in the cluster domain,
//! REFUSED outside it, FORMERR or silence for what is not a query; the records file's
//! errors; arbitrary bytes never panic.

use std::net::Ipv4Addr;

use agent::dns::Records;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

fn records() -> Records {
    Records::parse(
        "cluster.local",
        "# services\nweb.default.svc.cluster.local A 10.96.0.10\n\
         WEB.default.svc.cluster.local. A 10.96.0.11\ndb.prod.svc.cluster.local A 10.96.0.20\n",
    )
    .unwrap()
}

fn ask(r: &Records, name: &str, ty: RecordType) -> Message {
    let mut q = Message::new(4242, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    // On the wire every name is fully qualified.
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    q.add_query(Query::query(Name::from_ascii(fqdn).unwrap(), ty));
    let reply = r.answer(&q.to_vec().unwrap()).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 4242);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.queries, q.queries, "the question is echoed");
    m
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn known_names_get_their_addresses_case_insensitively() {
    let r = records();
    let m = ask(&r, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(
        addresses(&m),
        vec![Ipv4Addr::new(10, 96, 0, 10), Ipv4Addr::new(10, 96, 0, 11)]
    );
    assert!(m.answers.iter().all(|a| a.ttl == agent::dns::TTL));
    let m = ask(&r, "DB.Prod.SVC.cluster.local", RecordType::A);
    assert_eq!(addresses(&m), vec![Ipv4Addr::new(10, 96, 0, 20)]);
    // Another type of a known name: no data, not an error (resolvers ask A and AAAA).
    let m = ask(&r, "db.prod.svc.cluster.local", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn unknown_names_are_nxdomain_in_the_domain_and_refused_outside() {
    let r = records();
    let m = ask(&r, "nope.default.svc.cluster.local", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    let m = ask(&r, "example.org", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // A name that only ends like the domain is outside it.
    let m = ask(&r, "notcluster.local", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn what_is_not_a_query_gets_formerr_or_nothing() {
    let r = records();
    // Too short for a header: nothing.
    assert_eq!(r.answer(&[1, 2, 3]), None);
    // A header claiming a question that is not there: FORMERR with its ID.
    let bad = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let m = Message::from_vec(&r.answer(&bad).unwrap()).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    // A response is never answered; another opcode is not implemented.
    let mut resp = Message::new(7, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(
        Name::from_ascii("web.default.svc.cluster.local").unwrap(),
        RecordType::A,
    ));
    assert_eq!(r.answer(&resp.to_vec().unwrap()), None);
    let mut status = Message::new(8, MessageType::Query, OpCode::Status);
    status.add_query(resp.queries[0].clone());
    let m = Message::from_vec(&r.answer(&status.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // Two questions: FORMERR.
    let mut two = Message::new(9, MessageType::Query, OpCode::Query);
    two.add_query(resp.queries[0].clone());
    two.add_query(resp.queries[0].clone());
    let m = Message::from_vec(&r.answer(&two.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn the_records_file_is_checked_line_by_line() {
    for (bad, why) in [
        ("web A\n", "line 1: expected NAME A ADDRESS"),
        ("web AAAA ::1\n", "only A records"),
        ("# ok\nweb A 10.0.0.300\n", "line 2"),
    ] {
        let e = format!("{:#}", Records::parse("cluster.local", bad).unwrap_err());
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    let r = records();
    assert_eq!(Records::parse("cluster.local", &r.to_text()).unwrap(), r);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = records().answer(&bytes);
    }
}
