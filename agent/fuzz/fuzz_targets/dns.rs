//! Arbitrary bytes as a DNS query to the cluster DNS and as its records file: answered,
//! refused or ignored, never a panic; every answer is a message with the query's ID.
#![no_main]

use agent::dns::Records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
    let mut r = Records::new("cluster.local");
    r.add("web.default.svc.cluster.local", std::net::Ipv4Addr::new(10, 96, 0, 10));
    if let Some(reply) = r.answer(b) {
        assert!(reply.len() >= 12, "a reply has a header");
        assert_eq!(reply[..2], b[..2], "a reply carries the query's ID");
    }
    if let Ok(text) = std::str::from_utf8(b) {
        let _ = Records::parse("cluster.local", text);
    }
});
