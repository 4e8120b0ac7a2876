//! The control protocol's handler on the testbed tables: changes, all-or-nothing
//! batches, error codes, paging, and frames that are not requests.

use std::sync::{Arc, Mutex};

use vrouter::config::{LabelCfg, RouteCfg};
use vrouter::control::{ControlState, Op, PAGE, Reply, Request, VERSION, handle, handle_frame};
use vrouter::flow::FlowTable;
use vrouter::testbed;

fn state() -> ControlState {
    ControlState {
        devices: Mutex::new(vec![(2, "net_tap0,iface=vm1".into())]),
        ..ControlState::detached(testbed::writer(), Arc::new(FlowTable::new(1024)))
    }
}

fn call(s: &ControlState, op: Op) -> Reply {
    handle(
        s,
        &Request {
            version: VERSION,
            id: 7,
            request: op,
        },
    )
}

fn routes(s: &ControlState, vrf: u32) -> usize {
    call(s, Op::DumpRoutes { vrf, cursor: 0 }).data.unwrap()["items"]
        .as_array()
        .unwrap()
        .len()
}

fn route(prefix: &str, nh: u32) -> RouteCfg {
    RouteCfg {
        vrf: 1,
        prefix: prefix.into(),
        nh,
        label: 0,
        attr: 0,
    }
}

#[test]
fn changes_are_published_and_refusals_name_the_object() {
    let s = state();
    let r = call(&s, Op::Hello);
    assert!(r.ok && r.id == 7);
    let before = routes(&s, 1);
    let r = call(&s, Op::AddRoute(route("10.7.0.0/16", 2)));
    assert!(r.ok, "{r:?}");
    assert!(r.data.unwrap()["tables_version"].as_u64().unwrap() >= 2);
    assert_eq!(routes(&s, 1), before + 1);
    let r = call(&s, Op::AddRoute(route("10.8.0.0/16", 999)));
    let e = r.error.unwrap();
    assert_eq!(e.code, "not-found");
    assert!(
        e.message.contains("route 10.8.0.0/16 in vrf 1") && e.message.contains("nh 999"),
        "{}",
        e.message
    );
    let r = call(&s, Op::AddRoute(route("10.8.0.0/40", 2)));
    assert_eq!(r.error.unwrap().code, "invalid-argument");
    let r = call(&s, Op::DelNexthop { id: 1 });
    assert_eq!(
        r.error.unwrap().code,
        "in-use",
        "vm1's nexthop is in the VIP composite"
    );
    assert_eq!(routes(&s, 1), before + 1);
}

#[test]
fn a_batch_is_all_or_nothing() {
    let s = state();
    let before = routes(&s, 1);
    let bad = Op::Batch {
        ops: vec![
            Op::AddRoute(route("10.20.0.0/16", 2)),
            Op::SetLabel(LabelCfg { label: 30, nh: 2 }),
            Op::DelRoute {
                vrf: 1,
                prefix: "10.1.1.3/32".into(),
            },
            Op::AddRoute(route("10.21.0.0/16", 555)),
        ],
    };
    let r = call(&s, bad);
    let e = r.error.unwrap();
    assert!(e.message.starts_with("batch item 3"), "{}", e.message);
    assert_eq!(routes(&s, 1), before, "nothing of the batch stayed");
    let labels = call(&s, Op::DumpLabels { cursor: 0 }).data.unwrap();
    assert!(
        !labels["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == 30)
    );
    let good = Op::Batch {
        ops: vec![
            Op::AddRoute(route("10.20.0.0/16", 2)),
            Op::SetLabel(LabelCfg { label: 30, nh: 2 }),
        ],
    };
    assert!(call(&s, good).ok);
    assert_eq!(routes(&s, 1), before + 1);
}

#[test]
fn dumps_are_paged() {
    let s = state();
    let ops = (0..600u32)
        .map(|i| Op::AddRoute(route(&format!("10.{}.{}.0/24", 100 + i / 256, i % 256), 2)))
        .collect();
    assert!(call(&s, Op::Batch { ops }).ok);
    let total = 600 + 5;
    let first = call(&s, Op::DumpRoutes { vrf: 1, cursor: 0 }).data.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), PAGE);
    let mut seen = first["items"].as_array().unwrap().len();
    let mut cursor = first["next"].as_u64();
    while let Some(c) = cursor {
        let p = call(
            &s,
            Op::DumpRoutes {
                vrf: 1,
                cursor: c as u32,
            },
        )
        .data
        .unwrap();
        seen += p["items"].as_array().unwrap().len();
        cursor = p["next"].as_u64();
    }
    assert_eq!(seen, total);
    let vifs = call(&s, Op::DumpVifs { cursor: 0 }).data.unwrap();
    let vm1 = vifs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "vm1")
        .unwrap()
        .clone();
    assert_eq!(vm1["device"], "net_tap0,iface=vm1");
    let nhs = call(&s, Op::DumpNexthops { cursor: 0 }).data.unwrap();
    let vip = nhs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "composite")
        .unwrap()
        .clone();
    assert_eq!(vip["members"].as_array().unwrap().len(), 3);
    assert_eq!(
        call(&s, Op::DumpRoutes { vrf: 9, cursor: 0 })
            .error
            .unwrap()
            .code,
        "not-found"
    );
}

#[test]
fn frames_that_are_not_requests_get_an_error_reply() {
    let s = state();
    let r = handle_frame(&s, b"not json at all");
    assert_eq!(r.error.unwrap().code, "bad-request");
    let r = handle_frame(&s, br#"{"version":1,"id":42,"request":{"op":"explode"}}"#);
    assert_eq!((r.id, r.error.unwrap().code.as_str()), (42, "bad-request"));
    let r = handle_frame(&s, br#"{"version":9,"id":3,"request":{"op":"hello"}}"#);
    assert_eq!(r.error.unwrap().code, "unsupported-version");
    let r = handle_frame(
        &s,
        br#"{"version":1,"id":4,"request":{"op":"add-route","args":{"vrf":1}}}"#,
    );
    assert_eq!(r.error.unwrap().code, "bad-request");
    let r = handle_frame(&s, br#"{"version":1,"id":5,"request":{"op":"add-route","args":{"vrf":1,"prefix":"10.9.0.0/16","nh":2,"label":0}}}"#);
    assert!(r.ok, "{r:?}");
}

fn policy(name: &str, dport: u16) -> vrouter::config::PolicyCfg {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "rules": [{"proto": 6, "dport": [dport, dport], "action": "pass"}],
        "default": "deny",
    }))
    .unwrap()
}

fn vm2_rules(s: &ControlState) -> Vec<(u16, u16)> {
    let w = s.writer.lock().unwrap();
    let v = w.tables().vifs.get(3).unwrap().clone();
    v.policy
        .as_ref()
        .map(|p| {
            p.ingress
                .iter()
                .flat_map(|r| r.rules().iter().map(|r| r.dport))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn named_policies_are_set_recompiled_into_their_vifs_and_refused_while_used() {
    let s = state();
    let mut vm2: vrouter::config::VifCfg = serde_json::from_value(
        call(&s, Op::DumpVifs { cursor: 0 }).data.unwrap()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "vm2")
            .unwrap()
            .clone(),
    )
    .unwrap();
    vm2.device = None;
    vm2.ingress = vec!["sg-web".into()];
    let r = call(&s, Op::AddVif(vm2.clone()));
    assert_eq!(
        r.error.unwrap().code,
        "invalid-argument",
        "undefined policy"
    );

    assert!(call(&s, Op::SetPolicy(policy("sg-web", 80))).ok);
    assert!(call(&s, Op::AddVif(vm2.clone())).ok);
    assert_eq!(vm2_rules(&s), vec![(80, 80)]);
    // A second interface naming the set shares its compiled rules (one copy per set,
    // not per interface).
    let mut vm9 = vm2.clone();
    (vm9.id, vm9.name) = (9, "vm9".into());
    assert!(call(&s, Op::AddVif(vm9)).ok);
    let shared = |s: &ControlState| {
        let w = s.writer.lock().unwrap();
        let set = |id| {
            w.tables()
                .vifs
                .get(id)
                .unwrap()
                .policy
                .clone()
                .unwrap()
                .ingress[0]
                .clone()
        };
        set(3).shares_rules_with(&set(9))
    };
    assert!(shared(&s));
    // Replacing the rule set recompiles the interfaces that use it, still shared.
    assert!(call(&s, Op::SetPolicy(policy("sg-web", 443))).ok);
    assert_eq!(vm2_rules(&s), vec![(443, 443)]);
    assert!(shared(&s));
    assert!(call(&s, Op::DelVif { id: 9 }).ok);
    let r = call(
        &s,
        Op::DelPolicy {
            name: "sg-web".into(),
        },
    );
    assert_eq!(r.error.unwrap().code, "in-use");

    // A failed batch leaves the rule sets as they were.
    let r = call(
        &s,
        Op::Batch {
            ops: vec![
                Op::SetPolicy(policy("sg-web", 22)),
                Op::DelRoute {
                    vrf: 1,
                    prefix: "10.99.0.0/16".into(),
                },
            ],
        },
    );
    assert!(!r.ok);
    assert_eq!(vm2_rules(&s), vec![(443, 443)]);
    let pols = call(&s, Op::DumpPolicies).data.unwrap();
    assert_eq!(pols[0]["rules"][0]["dport"], serde_json::json!([443, 443]));

    // Endpoint attributes: set, dumped, record 0 refused, deleted.
    let a: vrouter::config::AttrCfg =
        serde_json::from_value(serde_json::json!({"id": 4, "vn": 7, "tags": [9, 3]})).unwrap();
    assert!(call(&s, Op::SetAttr(a)).ok);
    let attrs = call(&s, Op::DumpAttrs).data.unwrap();
    assert_eq!(
        attrs,
        serde_json::json!([{"id": 4, "vn": 7, "tags": [3, 9]}])
    );
    let zero: vrouter::config::AttrCfg =
        serde_json::from_value(serde_json::json!({"id": 0})).unwrap();
    assert_eq!(
        call(&s, Op::SetAttr(zero)).error.unwrap().code,
        "invalid-argument"
    );
    assert!(call(&s, Op::DelAttr { id: 4 }).ok);
    assert_eq!(call(&s, Op::DumpAttrs).data.unwrap(), serde_json::json!([]));

    // A rule set above the cap is refused and the one in use stays.
    let mut big = policy("sg-web", 1);
    big.rules = vec![big.rules[0].clone(); vrouter::config::MAX_RULES + 1];
    let r = call(&s, Op::SetPolicy(big.clone()));
    let e = r.error.unwrap();
    assert_eq!(e.code, "invalid-argument");
    assert!(e.message.contains("more than 65536"), "{}", e.message);
    assert_eq!(vm2_rules(&s), vec![(443, 443)]);
    big.rules.pop();
    assert!(call(&s, Op::SetPolicy(big)).ok);
    assert_eq!(vm2_rules(&s).len(), vrouter::config::MAX_RULES);
}

/// A stream handed out `piece` bytes at a time, a timed-out read before each piece.
struct Slow {
    data: Vec<u8>,
    piece: usize,
    timed_out: bool,
}

impl std::io::Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.timed_out && !self.data.is_empty() {
            self.timed_out = true;
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.timed_out = false;
        let n = self.piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data.drain(..n);
        Ok(n)
    }
}

/// Polls until the reader fails; the error (a frame or a clean end first is a failure).
fn poll_err(r: &mut vrouter::control::FrameReader, s: &mut Slow) -> std::io::Error {
    loop {
        match r.poll(s) {
            Ok(vrouter::control::Polled::Pending) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    }
}

fn framed(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        vrouter::control::write_frame(&mut out, b).unwrap();
    }
    out
}

#[test]
fn frames_that_arrive_a_byte_at_a_time_across_timeouts_are_read_whole_and_in_order() {
    use vrouter::control::{FrameReader, Polled};
    let stream = framed(&[b"{\"first\":1}", b"", b"{\"third\":3}"]);
    for piece in [1, 2, 3, 5, 7, 64] {
        let mut slow = Slow {
            data: stream.clone(),
            piece,
            timed_out: false,
        };
        let mut r = FrameReader::default();
        let (mut frames, mut pending) = (Vec::new(), 0);
        loop {
            match r.poll(&mut slow).unwrap() {
                Polled::Frame(f) => frames.push(f),
                Polled::Pending => pending += 1,
                Polled::Closed => break,
            }
        }
        assert_eq!(
            frames,
            [b"{\"first\":1}".to_vec(), vec![], b"{\"third\":3}".to_vec()],
            "pieces of {piece}"
        );
        assert!(pending > 0, "the reads timed out in between");
    }
    // Cut inside a frame or its length: an error, the same as a whole read says.
    for cut in [2, 6] {
        let mut slow = Slow {
            data: stream[..cut].to_vec(),
            piece: 1,
            timed_out: false,
        };
        let e = poll_err(&mut FrameReader::default(), &mut slow);
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let whole = vrouter::control::read_frame(&mut &stream[..cut]).unwrap_err();
        assert_eq!(whole.kind(), std::io::ErrorKind::UnexpectedEof);
    }
    // A length over the limit is refused before any of the body is read.
    let mut slow = Slow {
        data: u32::MAX.to_be_bytes().to_vec(),
        piece: 4,
        timed_out: false,
    };
    let e = poll_err(&mut FrameReader::default(), &mut slow);
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn the_socket_is_private_from_the_start_answers_slow_writers_and_caps_its_clients() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir().join(format!("vrctl-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vr.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let server = vrouter::control::serve(&path, Arc::new(state()), Arc::clone(&stop)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Nothing but the socket is left in its directory.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["vr.sock"]);

    // A request written a byte at a time, with pauses longer than the server's 200 ms read
    // timeout inside the length and inside the body, gets its reply, and the connection
    // serves the next one.
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let req = serde_json::to_vec(&Request {
        version: VERSION,
        id: 11,
        request: Op::Hello,
    })
    .unwrap();
    let frame = framed(&[&req]);
    for (i, b) in frame.iter().enumerate() {
        c.write_all(&[*b]).unwrap();
        if i == 1 || i == frame.len() / 2 {
            std::thread::sleep(std::time::Duration::from_millis(450));
        }
    }
    let reply: Reply =
        serde_json::from_slice(&vrouter::control::read_frame(&mut c).unwrap().unwrap()).unwrap();
    assert!(reply.ok && reply.id == 11, "{reply:?}");
    let mut again = vrouter::control::Client::connect(&path).unwrap();
    assert!(again.call(Op::Hello).unwrap().ok);
    drop(again);

    // Clients past the cap are told so and closed; the ones in are still served.
    let extra = 8;
    let mut streams: Vec<UnixStream> = (0..vrouter::control::MAX_CLIENTS + extra)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    for s in &streams {
        s.set_nonblocking(true).unwrap();
    }
    let mut told = vec![false; streams.len()];
    let t = std::time::Instant::now();
    while told.iter().filter(|b| **b).count() < extra {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "no client was told busy"
        );
        for (s, told) in streams.iter_mut().zip(told.iter_mut()) {
            let mut b = [0u8; 256];
            if let Ok(n) = s.read(&mut b)
                && n > 4
            {
                assert!(String::from_utf8_lossy(&b[4..n]).contains("\"busy\""));
                *told = true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The first connection (still open) is served all along.

    vrouter::control::write_frame(&mut c, &req).unwrap();
    let reply: Reply =
        serde_json::from_slice(&vrouter::control::read_frame(&mut c).unwrap().unwrap()).unwrap();
    assert!(reply.ok, "{reply:?}");
    // Places free up as clients leave.
    drop(streams);
    let t = std::time::Instant::now();
    while !vrouter::control::Client::connect(&path)
        .and_then(|mut c| c.call(Op::Hello))
        .is_ok_and(|r| r.ok)
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "no place freed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vif's MTU is checked where it enters: 0, below IPv4's 68 and above the jumbo limit
/// are refused, naming the vif and the value; a jumbo MTU inside the limit is taken.
#[test]
fn a_vif_mtu_outside_68_to_9198_is_refused() {
    let s = state();
    let vif = |mtu: u16| {
        let mut v: vrouter::config::VifCfg = toml::from_str(
            "id = 40\nname = \"m\"\nkind = \"virtual\"\nmac = \"02:00:00:00:00:40\"\nvrf = 1",
        )
        .unwrap();
        v.mtu = mtu;
        v
    };
    for bad in [0, 67, 9199, u16::MAX] {
        let r = call(&s, Op::AddVif(vif(bad)));
        let e = r.error.expect("refused");
        assert_eq!(e.code, "invalid-argument", "{bad}");
        assert!(
            e.message.contains("vif 40 (m)") && e.message.contains(&format!("mtu {bad}")),
            "{}",
            e.message
        );
    }
    assert!(call(&s, Op::AddVif(vif(9000))).ok);
}

/// The start-up configuration compiles each named rule set once: every vif naming it holds
/// that compiled set, and it is what `apply` gives back for the control socket to keep.
#[test]
fn start_up_vifs_share_the_rule_sets_apply_gives_back() {
    let mut cfg = testbed::config(|_| None);
    cfg.policies.push(policy("sg-web", 80));
    for v in cfg.vifs.iter_mut().filter(|v| v.id == 2 || v.id == 3) {
        v.ingress = vec!["sg-web".into()];
    }
    let mut w = vrouter::tables::TablesWriter::new(vrouter::tables::TableSizes::default());
    let compiled = cfg.apply(&mut w).unwrap();
    assert_eq!(compiled.keys().collect::<Vec<_>>(), ["sg-web"]);
    let set = |id| {
        w.tables()
            .vifs
            .get(id)
            .unwrap()
            .policy
            .clone()
            .unwrap()
            .ingress[0]
            .clone()
    };
    assert!(set(2).shares_rules_with(&compiled["sg-web"]));
    assert!(set(3).shares_rules_with(&compiled["sg-web"]));
}
