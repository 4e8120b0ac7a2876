//! Anti-spoofing with real pods: three network namespaces plugged by the agent on a
//! 2-lcore vrouter. Pod a sends UDP to pod b from pod c's address (as in the report that
//! b received it "from c"), from another MAC, and an ARP request claiming c's address;
//! b gets only what a may send (its own address, and the allowed address pair the API
//! gave its interface), and the vrouter counts each refusal under its own reason.

use std::time::Duration;

use vr_tests::{PodLab, in_ns, python};

/// The vrouter's drop counter `reason` (0 when it never dropped for it).
fn dropped(lab: &PodLab, reason: &str) -> u64 {
    vr_tests::vrctl_json(&lab.socket(), &["stats"])["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Sends `n` UDP datagrams saying `what` from `src` (bound, so the kernel uses it) to
/// `dst`:7000, from pod namespace `ns`.
fn send_udp(ns: &str, src: &str, dst: &str, what: &str, n: usize) {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{src}', 0))\n\
         for _ in range({n}):\n    s.sendto(b'{what}', ('{dst}', 7000))"
    );
    let o = in_ns(ns, &["python3", "-c", &code]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Sends one raw Ethernet frame built by `body` (Python that sets `f` from `gw_mac`, the
/// MAC the pod's ARP cache holds for `neigh`, which the vrouter answered with its own, and
/// `me`, the pod's MAC) out of eth0.
fn send_raw(ns: &str, neigh: &str, body: &str) {
    let code = format!(
        "import socket, struct\n\
         gw_mac = next(bytes.fromhex(l.split()[3].replace(':', '')) for l in open('/proc/net/arp') if l.split()[0] == '{neigh}')\n\
         me = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))\n\
         def csum(b):\n    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n    s = (s >> 16) + (s & 0xffff); s += s >> 16\n    return ~s & 0xffff\n\
         {body}\n\
         r = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\nr.bind(('eth0', 0))\nr.send(f)"
    );
    let o = in_ns(ns, &["python3", "-c", &code]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_pod_sends_only_from_its_own_addresses_and_mac() {
    let lab = PodLab::start_lcores("spf", 3, 2);
    let target = lab.target();
    let pair = "10.44.0.200";
    let aap = format!("{pair}/32");
    let mut args = vec!["--aap0", aap.as_str(), target.as_str()];
    args.extend(lab.host_if.iter().map(String::as_str));
    let out = python("agent_pods.py", &args);
    let ports = vr_tests::json_lines(&out);
    assert_eq!(ports.len(), 3, "{out}");
    for (i, p) in ports.iter().enumerate() {
        lab.plug(i, p);
    }
    let ip = |i: usize| vr_tests::address_of(&ports[i]["ip"]);
    let (ip_a, ip_b, ip_c) = (ip(0), ip(1), ip(2));
    let gw = ports[0]["gateway"].as_str().unwrap().to_string();
    let a = lab.ns[0].as_str();

    // b reports the source and text of every datagram.
    let server = "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind(('0.0.0.0', 7000)); print('ready')\n\
                  while True:\n    d, (h, _) = s.recvfrom(100)\n    print(h, d.decode())";
    let mut b = vr_tests::serve(&lab.ns[1], server, &[]);
    let mut heard = Vec::new();
    let mut hear_until = |b: &mut vr_tests::Served, want: &str| loop {
        let l = b
            .line()
            .unwrap_or_else(|| panic!("b never heard {want:?}: {heard:?}"));
        let done = l == want;
        heard.push(l);
        if done {
            return heard.clone();
        }
    };

    // a's own address first: the gateway's MAC is in a's ARP cache from then on, so what
    // follows leaves a without a new ARP request.
    let own = format!("{ip_a} own");
    vr_tests::wait_until("a reaches b", Duration::from_secs(30), || {
        send_udp(a, &ip_a, &ip_b, "own", 1);
        b.line_within(Duration::from_millis(500)).as_ref() == Some(&own)
    });
    let before = dropped(&lab, "invalid_source");

    // c's address, added to a's interface so a's kernel sends from it.
    let c32 = format!("{ip_c}/32");
    let p32 = format!("{pair}/32");
    for addr in [&c32, &p32] {
        let o = in_ns(a, &["ip", "addr", "add", addr, "dev", "eth0"]);
        assert!(o.status.success());
    }
    send_udp(a, &ip_c, &ip_b, "spoofed", 5);
    vr_tests::wait_until(
        "the spoofed datagrams are counted",
        Duration::from_secs(30),
        || dropped(&lab, "invalid_source") >= before + 5,
    );
    // The allowed pair's address passes, and a's own again.
    send_udp(a, pair, &ip_b, "pair", 1);
    send_udp(a, &ip_a, &ip_b, "again", 1);
    let heard = hear_until(&mut b, &format!("{ip_a} again"));
    assert!(
        heard.contains(&format!("{pair} pair")),
        "the allowed pair's address reaches b: {heard:?}"
    );
    assert!(
        !heard.iter().any(|l| l.contains("spoofed")),
        "b heard nothing from c's address: {heard:?}"
    );

    // A frame from another MAC with a's own address.
    let mac_before = dropped(&lab, "invalid_source_mac");
    let (a_oct, b_oct): (Vec<u8>, Vec<u8>) = (
        ip_a.split('.').map(|x| x.parse().unwrap()).collect(),
        ip_b.split('.').map(|x| x.parse().unwrap()).collect(),
    );
    let udp_frame = format!(
        "ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + 8 + 5, 1, 0, 64, 17, 0, bytes({a_oct:?}), bytes({b_oct:?}))\n\
         ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]\n\
         f = gw_mac + bytes.fromhex('02aabbccddee') + b'\\x08\\x00' + ip + struct.pack('!HHHH', 4000, 7000, 13, 0) + b'other'"
    );
    send_raw(a, &ip_b, &udp_frame);
    vr_tests::wait_until(
        "the frame from another MAC is counted",
        Duration::from_secs(30),
        || dropped(&lab, "invalid_source_mac") > mac_before,
    );

    // An ARP request for the gateway claiming c's address: not answered.
    let arp_before = vr_tests::vrctl_json(&lab.socket(), &["stats"])["arp_replies"]
        .as_u64()
        .unwrap();
    let spoof_before = dropped(&lab, "invalid_source");
    let c_oct: Vec<u8> = ip_c.split('.').map(|x| x.parse().unwrap()).collect();
    let g_oct: Vec<u8> = gw.split('.').map(|x| x.parse().unwrap()).collect();
    let arp = format!(
        "f = b'\\xff' * 6 + me + b'\\x08\\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + me + bytes({c_oct:?}) + b'\\x00' * 6 + bytes({g_oct:?})"
    );
    send_raw(a, &ip_b, &arp);
    vr_tests::wait_until(
        "the spoofed ARP request is counted",
        Duration::from_secs(30),
        || dropped(&lab, "invalid_source") > spoof_before,
    );
    let s = vr_tests::vrctl_json(&lab.socket(), &["stats"]);
    assert_eq!(s["arp_replies"].as_u64().unwrap(), arp_before, "{s}");
    assert_eq!(s["lcores"], 2, "{s}");
    vr_tests::assert_each_packet_counted_once(&s);

    // And a's own traffic still flows.
    send_udp(a, &ip_a, &ip_b, "last", 1);
    let heard = hear_until(&mut b, &format!("{ip_a} last"));
    assert!(!heard.iter().any(|l| l.contains("other")), "{heard:?}");
}
