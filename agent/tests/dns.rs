//! The cluster DNS's answers, on real DNS messages (built and read with hickory-proto):
//! A records of known names, no data for other types, NXDOMAIN in the cluster domain,
//! REFUSED outside it, FORMERR or silence for what is not a query; the records file's
//! errors; arbitrary bytes never panic; the server binary over UDP and TCP.

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

/// Starts the real server on a free loopback port with a records file naming web's
/// address, in a scratch directory named after `tag`; returns once it listens.
fn server(tag: &str) -> (std::process::Child, String, std::path::PathBuf) {
    use std::io::Read;
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("records");
    std::fs::write(&file, "web.default.svc.cluster.local A 10.96.0.10\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-dns"))
        .args(["--listen", &listen, "--records"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = [0u8; 64];
    let n = child.stdout.as_mut().unwrap().read(&mut line).unwrap();
    assert!(String::from_utf8_lossy(&line[..n]).contains("listening"));
    (child, listen, dir)
}

/// The server itself on loopback: the same answers over UDP and over TCP (several
/// length-prefixed queries on one connection), and a records file rewritten is read again.
#[test]
fn the_server_answers_over_udp_and_tcp_and_follows_its_records_file() {
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};

    let (mut child, listen, dir) = server("cluster-dns");
    let file = dir.join("records");

    let query = |id: u16, name: &str| {
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        q.to_vec().unwrap()
    };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    udp.send_to(&query(1, "web.default.svc.cluster.local."), &listen)
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(addresses(&m), vec![Ipv4Addr::new(10, 96, 0, 10)]);

    let mut tcp = TcpStream::connect(&listen).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut ask_tcp = |id: u16, name: &str| -> Message {
        let q = query(id, name);
        let mut out = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        tcp.write_all(&out).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut reply).unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, id);
        m
    };
    assert_eq!(
        addresses(&ask_tcp(2, "web.default.svc.cluster.local.")),
        vec![Ipv4Addr::new(10, 96, 0, 10)]
    );
    let m = ask_tcp(3, "nope.default.svc.cluster.local.");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // A new address for web, in a file put in the old one's place (as a writer that
    // never shows a half-written file does): the server reads it again.
    let next = dir.join("records.next");
    std::fs::write(&next, "web.default.svc.cluster.local A 10.96.0.99\n").unwrap();
    std::fs::rename(&next, &file).unwrap();
    let t = std::time::Instant::now();
    let mut id = 4;
    while addresses(&ask_tcp(id, "web.default.svc.cluster.local."))
        != [Ipv4Addr::new(10, 96, 0, 99)]
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "the new records were not read"
        );
        id += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connections that send nothing (slowloris) take at most the server's cap: the next one
/// is closed at once, UDP is answered all along, and a place frees when one leaves.
#[test]
fn idle_tcp_connections_are_capped_and_udp_is_served_all_along() {
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};

    let (mut child, listen, dir) = server("cluster-dns-cap");

    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&listen).unwrap())
        .collect();
    // Past the cap: closed without an answer (a read ends at once, well before the
    // server's 10 s idle timeout).
    let t = std::time::Instant::now();
    let closed = loop {
        let mut extra = TcpStream::connect(&listen).unwrap();
        extra
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(extra.read(&mut b), Ok(0)) {
            break true;
        }
        if t.elapsed() > std::time::Duration::from_secs(20) {
            break false;
        }
    };
    assert!(closed, "a connection past the cap is closed");
    let mut q = Message::new(9, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(
        Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let q = q.to_vec().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    udp.send_to(&q, &listen).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(
        addresses(&Message::from_vec(&buf[..n]).unwrap()),
        vec![Ipv4Addr::new(10, 96, 0, 10)]
    );
    // One idle client leaves: a new connection is served.
    drop(idle.pop());
    let t = std::time::Instant::now();
    loop {
        let mut c = TcpStream::connect(&listen).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut out = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        c.write_all(&out).unwrap();
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_ok() {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "no place freed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
